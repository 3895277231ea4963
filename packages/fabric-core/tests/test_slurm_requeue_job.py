"""requeue_job() outside a SLURM job: a clear error instead of a failing `scontrol` call.

The real `scontrol requeue` path runs in the `cluster` leg (integration_tests/cluster/test_slurm.py).
"""

from __future__ import annotations

import pytest
from fabric_core.environments.slurm import requeue_job


def test_requeue_job_outside_slurm_says_why():
    with pytest.raises(RuntimeError, match="inside a SLURM job: SLURM_JOB_ID is not set"):
        requeue_job(env={"PATH": "/usr/bin"})


def test_requeue_job_without_scontrol_says_what_is_missing(tmp_path):
    with pytest.raises(RuntimeError, match="needs SLURM's `scontrol` command"):
        requeue_job(env={"SLURM_JOB_ID": "12", "PATH": str(tmp_path)})
