"""What a result was produced with: package versions, the git commit, the hardware.

The one collector behind summary.json's `versions`, `git_commit` and `hardware` (the runner and
the training loop) and perf's `environment`. Stdlib at import time: a package is imported only
when its version is asked for, and torch only by the functions that take a torch device, so the
perf GPU run (no Ray) and the runner's driver import just what they record.
"""
from __future__ import annotations

import importlib
import os
import platform
import subprocess
from pathlib import Path


def git_commit() -> str | None:
    """HEAD of the checkout this package runs from; None outside a git checkout or without git."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).parent, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def versions(packages: tuple[str, ...]) -> dict:
    """{package: its __version__ (None when it does not import), "python": the interpreter's}.
    Plain str: torch.__version__ is torch's own str subclass, and unpickling it imports torch
    in whichever process receives it (the runner's board actor gets every summary)."""
    out = {}
    for name in packages:
        try:
            out[name] = str(importlib.import_module(name).__version__)
        except ImportError:
            out[name] = None
    return {**out, "python": platform.python_version()}


def software() -> dict:
    """summary.json's `versions` (torch, timm, ray, python) and `git_commit`."""
    return {"versions": versions(("torch", "timm", "ray")), "git_commit": git_commit()}


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what `platform` knows of it."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device, world_size: int) -> dict:
    """summary.json's `hardware`: the torch device a cell trained on, its workers, this host's
    CPUs and torch's threads."""
    import torch

    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
            or platform.machine(), "device_type": device.type, "workers": world_size,
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}


def accelerator(device) -> dict:
    """The GPU behind a torch device (None for a CPU) and the CUDA and cuDNN torch was built with."""
    import torch

    gpu_name = gpu_memory_gib = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu_name, gpu_memory_gib = props.name, round(props.total_memory / 2 ** 30, 1)
    return {"gpu_name": gpu_name, "gpu_memory_gib": gpu_memory_gib, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
