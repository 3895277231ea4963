"""The one policy that names the rank a failed job is blamed on (launchers/failures.py: first_failure)."""

from __future__ import annotations

import signal

from fabric_core.launchers.failures import RankEnd, first_failure, is_lost_peer
from fabric_core.plugins.failures import first_failure as exported

KILLED = -int(signal.SIGKILL)
STOPPED = -int(signal.SIGTERM)


def test_a_killed_rank_is_blamed_before_the_ranks_that_raised_after_losing_it() -> None:
    ends = [
        RankEnd(0, exitcode=1, raised="RuntimeError", time=1.0),  # not recognised as a lost peer
        RankEnd(1, exitcode=KILLED, time=2.0),
    ]
    assert first_failure(ends) == ends[1]


def test_the_earliest_real_exception_wins_over_consequences_and_stopped_ranks() -> None:
    ends = [
        RankEnd(0, raised="RuntimeError: Connection closed by peer", consequence=True, time=1.0),
        RankEnd(2, raised="ValueError", time=3.0),
        RankEnd(1, raised="KeyError", time=2.0),
        RankEnd(3, exitcode=STOPPED, time=0.5),  # the launcher's own SIGTERM: stopped, not failed
    ]
    assert first_failure(ends).rank == 1


def test_a_silent_exit_beats_a_consequence_but_not_an_exception() -> None:
    silent = RankEnd(1, exitcode=3)
    lost = RankEnd(0, raised="Connection reset by peer", consequence=True, time=0.0)
    assert first_failure([lost, silent]) == silent
    raised = RankEnd(2, raised="ValueError", time=9.0)
    assert first_failure([lost, silent, raised]) == raised


def test_ties_keep_the_order_given_and_nothing_failed_is_none() -> None:
    assert first_failure([RankEnd(1, exitcode=3), RankEnd(0, exitcode=3)]).rank == 1
    assert first_failure([]) is None
    assert first_failure([RankEnd(0, exitcode=STOPPED)]).rank == 0  # only a stopped rank: still named


def test_backends_reach_the_policy_through_the_plugin_surface() -> None:
    assert exported is first_failure


def test_lost_peers_are_recognised_in_what_gloo_and_the_store_say() -> None:
    gloo_closed = "RuntimeError: [gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:42884. This is"
    gloo_reset = (
        "RuntimeError: [gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:47305: Connection reset by peer."
    )
    store = "DistStoreError: Failed to recv, got 0 bytes. Connection was likely closed. Did the remote server shutdown?"
    assert all(is_lost_peer(text) for text in (gloo_closed, gloo_reset, store))
    assert is_lost_peer(RuntimeError(gloo_closed))
    # a rank's own failure, a timeout included, is a cause
    assert not is_lost_peer(
        "RuntimeError: [gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 10000ms for recv"
    )
    assert not is_lost_peer(ValueError("rank 1 failed on purpose"))
