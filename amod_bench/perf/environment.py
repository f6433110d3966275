"""The hardware and software a measurement ran on, recorded with every result."""
from __future__ import annotations

import datetime
import os
import platform


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device) -> dict:
    import timm
    import torch

    try:  # timm's dependency; recorded, never needed by the measurements
        import torchvision
        torchvision_version = torchvision.__version__
    except ImportError:
        torchvision_version = None
    env = {
        "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "timm": timm.__version__, "torchvision": torchvision_version, "device": str(device),
        "gpu_name": None, "gpu_memory_gib": None, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["gpu_name"] = props.name
        env["gpu_memory_gib"] = round(props.total_memory / 2 ** 30, 1)
    try:
        env["loadavg"] = list(os.getloadavg())  # how busy the machine was (shared CPUs)
    except OSError:
        env["loadavg"] = None
    return env
