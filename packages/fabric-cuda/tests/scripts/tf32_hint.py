"""Set up two single-GPU Fabrics in 32-true with the default matmul precision; report the TF32 hints.

Prints {"hints": N, "capability": [major, minor]}: a fresh process, so that warnings' once-per-process
behaviour is what a user sees. With ``high`` as argument the user has chosen TF32 first.
"""

from __future__ import annotations

import json
import sys
import warnings

import torch
from fabric_core import Fabric


def main() -> None:
    if sys.argv[1:] == ["high"]:
        torch.set_float32_matmul_precision("high")
    hints = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # what an interactive user gets: once per location
        for _ in range(2):
            Fabric(accelerator="cuda", devices=1, precision="32-true").launch()
        hints = sum("set_float32_matmul_precision" in str(w.message) for w in caught)
    print(json.dumps({"hints": hints, "capability": list(torch.cuda.get_device_capability(0))}))


if __name__ == "__main__":
    main()
