"""Run as ``python -m fabric_cuda._probe WANT INDEX...``: try to allocate on each GPU, print JSON.

A separate process does the trying so that the caller never initialises CUDA and holds no context on
any GPU (a context held by the caller would itself block an exclusive-process GPU for its workers).
It stops once WANT devices worked. The last line of stdout is ``{"usable": [...], "errors": {...}}``.
"""

from __future__ import annotations

import json
import sys


def probe(indices: list[int], want: int) -> dict[str, object]:
    """Allocate a small tensor on each device in turn until ``want`` of them succeeded."""
    import torch

    usable: list[int] = []
    errors: dict[str, str] = {}
    for index in indices:
        if len(usable) >= want:
            break
        try:
            torch.ones(1, device=torch.device("cuda", index)).add_(1)
            torch.cuda.synchronize(index)
        except Exception as error:  # any failure means the device cannot be used: record why
            lines = str(error).strip().splitlines()
            errors[str(index)] = lines[0] if lines else type(error).__name__
        else:
            usable.append(index)
    return {"usable": usable, "errors": errors}


def main(argv: list[str]) -> int:
    want, *indices = (int(arg) for arg in argv)
    print(json.dumps(probe(indices, want)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
