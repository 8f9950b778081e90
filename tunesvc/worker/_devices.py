"""Which device each worker of a pool trains on."""

from __future__ import annotations

from pathlib import Path


def worker_devices(device: str, workers: int, gpus: int) -> list[str]:
    """The device of each of ``workers`` workers: ``auto`` and ``cuda`` spread over the
    ``gpus`` visible GPUs round-robin (``auto`` is the CPU without one); anything else
    (``cpu``, ``cuda:1``) pins every worker there.

    Example::

        worker_devices("cuda", 3, gpus=2)  # ['cuda:0', 'cuda:1', 'cuda:0']
    """
    if device in ("auto", "cuda") and gpus > 0:
        return [f"cuda:{i % gpus}" for i in range(workers)]
    if device == "auto":
        return ["cpu"] * workers
    return [device] * workers


def visible_gpus() -> int:
    """GPUs this process may use; 0 without touching torch on a machine with no NVIDIA driver
    (importing torch takes seconds)."""
    if not Path("/proc/driver/nvidia/gpus").exists():
        return 0
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
