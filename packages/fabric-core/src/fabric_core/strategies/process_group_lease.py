"""Fabric's share of torch's default process group: who created it, and how many Fabric objects use it.

torch keeps one default process group per process. Several Fabric objects (or the user's own code and a
Fabric) may use it at once, so none of them may simply destroy it when it is done:

- a group the user (or a torchrun-aware library) created before Fabric is used as is and never destroyed;
- a group Fabric created is destroyed by the last Fabric that releases it, or at interpreter exit;
- the per-process hooks (one exit hook, one failure-recording ``sys.excepthook``) are installed by the
  first user and removed by the last, however many Fabric objects come and go.

torch's ``ProcessGroup`` refuses new attributes (a pybind11 object), so the share is attached to the group
through a weak mapping: an entry lives exactly as long as the group object, and a group created later
(after a destroy) never sees an older group's count.
"""

from __future__ import annotations

import atexit
import sys
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch.distributed as dist

if TYPE_CHECKING:
    from fabric_core.launchers.failures import FailureRecorder

#: Each live default group's share, keyed weakly by the group object (see the module docstring).
_SHARES: weakref.WeakKeyDictionary[object, _GroupShare] = weakref.WeakKeyDictionary()


class _GroupShare:
    """What Fabric holds on one default group: whether it created it, its users, the hooks it installed."""

    def __init__(self, group: object, created_by_fabric: bool) -> None:
        self._group = weakref.ref(group)
        self.created_by_fabric = created_by_fabric
        self.users = 0
        self.recorder: FailureRecorder | None = None
        # torch's init_process_group chains its own sys.excepthook (a "[rankN]" prefix) and never removes it:
        # (torch's hook, the one before it), put back when the group Fabric created is destroyed.
        self.torch_hook: tuple[object, object] | None = None

    def is_current(self) -> bool:
        """Whether this share's group is still torch's default group (the user may have destroyed it)."""
        return dist.is_initialized() and dist.GroupMember.WORLD is self._group()

    def destroy_at_exit(self) -> None:
        """Leave the process group before interpreter shutdown (registered once, for a group Fabric created).

        Gloo's worker threads release the tensors of finished collectives (DDP's last buckets) a moment
        after the work completes; doing that once the interpreter is finalising aborts the process
        ("terminate called without an active exception"). Yielding the GIL briefly lets them finish.
        """
        if self.is_current():
            time.sleep(0.1)
            dist.destroy_process_group()


class DefaultGroupLease:
    """One Fabric's use of the default process group; ``release()`` gives it back (a second call does nothing)."""

    def __init__(self, share: _GroupShare) -> None:
        self._share: _GroupShare | None = share

    def __reduce__(self) -> tuple[type[_ReleasedLease], tuple[()]]:
        # A strategy pickled into another process does not carry this process's share of the group.
        return (_ReleasedLease, ())

    def release(self) -> None:
        """The last user of a group Fabric created destroys it; the last user of any group removes the hooks."""
        share, self._share = self._share, None
        if share is None:
            return
        share.users -= 1
        if share.users > 0:
            return
        if share.recorder is not None:
            share.recorder.remove()
            share.recorder = None
        group = share._group()
        if group is not None:
            _SHARES.pop(group, None)
        if share.created_by_fabric:
            atexit.unregister(share.destroy_at_exit)
            if share.is_current():
                dist.destroy_process_group()
            if share.torch_hook is not None and sys.excepthook is share.torch_hook[0]:
                sys.excepthook = share.torch_hook[1]  # type: ignore[assignment]


class _ReleasedLease(DefaultGroupLease):
    def __init__(self) -> None:
        self._share = None


def lease_default_group(create: Callable[[], None], rank: int) -> DefaultGroupLease:
    """Use torch's default process group, calling ``create()`` first when there is none.

    ``rank`` is this process's global rank, for the failure-recording hook the first user installs.
    """
    created = False
    hook_before = sys.excepthook
    if not dist.is_initialized():
        create()
        created = True
    group = dist.GroupMember.WORLD
    assert group is not None, "the default process group exists after init_process_group"
    share = _SHARES.get(group)
    if share is None:
        share = _GroupShare(group, created_by_fabric=created)
        _SHARES[group] = share
        if created:
            atexit.register(share.destroy_at_exit)
            if sys.excepthook is not hook_before:
                share.torch_hook = (sys.excepthook, hook_before)
    if share.users == 0:
        from fabric_core.launchers.failures import FailureRecorder

        share.recorder = FailureRecorder.install(rank)  # None unless a Fabric or torch launcher started this process
    share.users += 1
    return DefaultGroupLease(share)
