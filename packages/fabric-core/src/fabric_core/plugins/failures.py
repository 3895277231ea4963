"""Naming the rank that failed first: the one attribution policy, for launchers that backends bring.

A backend's launcher describes how each rank ended as ``RankEnd`` records and lets ``first_failure``
choose whom to blame, so every launcher reports failures the same way. Part of the versioned backend contract.
"""

from __future__ import annotations

from fabric_core.launchers.failures import RankEnd, describe_exit, first_failure, is_lost_peer

__all__ = ["RankEnd", "describe_exit", "first_failure", "is_lost_peer"]
