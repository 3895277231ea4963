"""Resolve a CUDA plan, then fork: the child must still be able to use the GPU.

Prints one JSON line. Run by test_cuda_hardware.py; a CUDA-initialising device count in the parent
would make the child fail with "initialization error" or "Cannot re-initialize CUDA".
"""

from __future__ import annotations

import json
import multiprocessing

import torch
from fabric_core.connector import resolve_plan
from fabric_cuda import CUDAAccelerator, num_cuda_devices


def child(queue: multiprocessing.Queue) -> None:
    torch.cuda.set_device(0)
    queue.put(float(torch.ones(4, device="cuda").sum()))


def main() -> None:
    counted = num_cuda_devices()
    available = CUDAAccelerator.is_available()
    plan = resolve_plan(accelerator="cuda", devices=1, precision="16-mixed")
    initialised = torch.cuda.is_initialized()
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=child, args=(queue,))
    process.start()
    value = queue.get(timeout=120)
    process.join(timeout=120)
    print(
        json.dumps(
            {
                "counted": counted,
                "available": available,
                "device": str(plan.strategy.root_device),
                "initialised_before_fork": initialised,
                "child_sum": value,
                "child_exit": process.exitcode,
                "torch_count": torch.cuda.device_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
