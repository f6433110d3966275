"""The hardware and software a measurement ran on, recorded with every result (collected by
amod_bench.provenance, as the runner's are)."""
from __future__ import annotations

import datetime
import os
import platform

from amod_bench.provenance import accelerator, cpu_model, versions


def environment(device) -> dict:
    import torch

    env = {
        "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(), "device": str(device),
        # torchvision: timm's dependency; recorded, never needed by the measurements
        **versions(("torch", "timm", "torchvision")), **accelerator(device),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        env["loadavg"] = list(os.getloadavg())  # how busy the machine was (shared CPUs)
    except OSError:
        env["loadavg"] = None
    return env
