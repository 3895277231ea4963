"""Print how Fabric sees this process (cluster environment, ranks, rendezvous), then run a script unchanged.

python probe.py SCRIPT [ARGS...]: one ``PROBE {json}`` line per process, then SCRIPT runs as ``__main__``.
"""

from __future__ import annotations

import json
import runpy
import sys

from fabric_core import Fabric

fabric = Fabric(accelerator="cpu", strategy="ddp")  # not launched: only reads the environment
environment = fabric.strategy.cluster_environment
report = {"environment": type(environment).__name__}
if environment.creates_processes_externally:
    report.update(
        rank=environment.global_rank(),
        world_size=environment.world_size(),
        node_rank=environment.node_rank(),
        main_address=environment.main_address,
        main_port=environment.main_port,
    )
sys.stdout.write(f"PROBE {json.dumps(report)}\n")
sys.stdout.flush()
del fabric, environment

sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
