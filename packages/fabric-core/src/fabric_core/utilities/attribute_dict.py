"""``AttributeDict``: a dict whose keys read and write as attributes, for a script's saved state."""

from __future__ import annotations

from typing import Any


class AttributeDict(dict):
    """A plain ``dict`` (it saves and loads as one) that also allows ``state.step += 1``.

    Example:
        >>> state = AttributeDict(step=0)
        >>> state.step += 1
        >>> state["step"]
        1
    """

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as err:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{key}'") from err

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def __delattr__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        del self[key]

    def __repr__(self) -> str:
        if not self:
            return ""
        width = max(len(str(k)) for k in self) + 3
        return "\n".join(f"{f'{chr(34)}{k}{chr(34)}:':{width}s} {self[k]}" for k in sorted(self, key=str))
