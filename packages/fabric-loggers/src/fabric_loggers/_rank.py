"""Which process of the job this is, found when a logger first writes rather than when it is built.

A logger is usually built before ``fabric.launch()`` (sometimes in a parent process that is not part
of the job at all), so its rank is only known later. Once ``torch.distributed`` is initialised its
answer is final; before that, the variables that launchers (torchrun, SLURM, LSF, MPI) set say it.
"""

from __future__ import annotations

import os
import sys

# Global-rank variables, most specific first. LOCAL_RANK comes last: on several nodes it is not global,
# but a process that has nothing else to go by is better off trusting it than writing from every node.
_RANK_VARIABLES = ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "LOCAL_RANK")


def distributed_rank() -> int | None:
    """The rank in the default process group, or ``None`` when there is none yet."""
    if "torch" not in sys.modules:
        return None  # nobody can have initialised a process group without importing torch
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    return None


def environment_rank() -> int | None:
    """The global rank a launcher announced through the environment, if any."""
    for variable in _RANK_VARIABLES:
        value = os.environ.get(variable, "").strip()
        if value.isdigit():
            return int(value)
    return None


def global_rank() -> tuple[int, bool]:
    """``(rank, final)``: ``final`` is true when the answer came from an initialised process group."""
    rank = distributed_rank()
    if rank is not None:
        return rank, True
    rank = environment_rank()
    return (rank if rank is not None else 0), False


class RankZeroOnly:
    """Mixin of the loggers: ``set_global_rank`` (Fabric's answer) and ``is_writer`` (global rank 0).

    Before Fabric or a process group says the rank, the launcher's environment does; that answer is kept
    per process (it is asked on every logged metric, and a process's environment does not change rank).
    """

    _rank: int | None = None  # Fabric's or the process group's answer: final
    _environment_rank: tuple[int, int] | None = None  # (pid, rank) read from the environment

    def set_global_rank(self, rank: int) -> None:
        """Fabric's answer once the job is set up; it wins over what the environment says."""
        self._rank = rank

    @property
    def is_writer(self) -> bool:
        """Whether this process writes: global rank 0, looked up when first needed in this process."""
        if self._rank is None:
            rank = distributed_rank()
            if rank is not None:
                self._rank = rank
            else:
                pid = os.getpid()
                cached = self._environment_rank
                if cached is None or cached[0] != pid:
                    found = environment_rank()
                    cached = self._environment_rank = (pid, 0 if found is None else found)
                return cached[1] == 0
        return self._rank == 0
