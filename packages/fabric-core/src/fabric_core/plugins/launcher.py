"""The Launcher interface: how the processes of a job come to exist."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any


class Launcher(ABC):
    """Starts the worker processes that run the user's function.

    Contract for backend authors:

    - ``launch(fn, *args, **kwargs)`` runs ``fn`` in every process of the job and returns what
      rank 0 returned, where the launcher can bring the result back; otherwise the calling process's
      own result.
    - A worker that fails must make ``launch`` raise in the parent (naming the rank and how it
      ended) and must not leave other workers running.
    - ``continues_in_caller`` is ``True`` when the calling process itself becomes rank 0 (re-running
      the script for the other ranks), which lets ``fabric.launch()`` be called without a function.
    - ``is_interactive_compatible`` says whether it can run in a notebook / interactive shell
      (forking can; re-running the script cannot).
    """

    @property
    @abstractmethod
    def is_interactive_compatible(self) -> bool:
        """Whether this launcher works when the main module is not a file (notebooks, REPL)."""

    @property
    def continues_in_caller(self) -> bool:
        """Whether the calling process goes on as rank 0 (so ``fabric.launch()`` needs no function)."""
        return False

    @abstractmethod
    def launch(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``function(*args, **kwargs)`` in all processes and return rank 0's result."""
