"""The Ray instance a suite runs on: its environment variables, the connection (or a local
instance on 127.0.0.1 of this process's own), and where Ray's messages in this process go."""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

# Ray's knobs, in one place.
RAY_ENV = {
    # how often a cell's controller polls its workers: the delay between a cell's end and
    # the next cell's start, against the polling's CPU (Ray's default is 2 s)
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "1.0",
}
# Only for a local instance. Ray turns a node address of 127.0.0.1 into the machine's
# routable address and listens there; with this flag off it keeps the node, and every
# server of the instance, on the loopback address. gloo must then use loopback too.
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "GLOO_SOCKET_IFNAME": "lo",
                 # one machine is never preempted; the watcher is one more process per cell
                 "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
# For this driver, where Tune runs. ResultsWriter writes each cell's files; Tune's own
# per-trial CSV and TensorBoard copies would only cost the driver CPU on every report (its JSON
# copy stays: run_suite passes JsonLoggerCallback, because the analysis Tune builds at the end of
# every fit reads it and warns about each trial without one). Tune's older console output prints
# nothing at verbose=0; its newer one prints an experiment box and paths at every verbosity.
DRIVER_ENV = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_AIR_NEW_OUTPUT": "0"}


def loopback_only() -> None:
    """Keep a local Ray instance on 127.0.0.1: the processes ray.init starts read the
    environment, and this driver must resolve its own node address the same way (Ray read
    the flag when it was imported, perhaps before this call)."""
    from ray._private import ray_constants

    os.environ.update(LOCAL_RAY_ENV)
    ray_constants.ENABLE_RAY_CLUSTER = False


@contextmanager
def ray_messages_to(log_file: Path):
    """Ray's messages in this process (its start-up notices, Tune's bookkeeping) go to `log_file`;
    its errors reach the console too. Ray logs on its "ray" logger, which does not propagate, to a
    console handler of its own: that handler steps aside while the suite runs."""
    import logging

    import ray  # noqa: F401  (its import sets up the "ray" logger this replaces)

    ray_logger = logging.getLogger("ray")
    own_handlers, own_level = list(ray_logger.handlers), ray_logger.level
    log_file.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(log_file)
    to_console = logging.StreamHandler(sys.stderr)
    to_console.setLevel(logging.ERROR)
    for handler in (to_file, to_console):  # ray.init gives them Ray's own format
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s -- %(message)s"))
    for handler in own_handlers:
        ray_logger.removeHandler(handler)
    ray_logger.addHandler(to_file)
    ray_logger.addHandler(to_console)
    try:
        yield
    finally:
        ray_logger.removeHandler(to_file)
        ray_logger.removeHandler(to_console)
        to_file.close()
        for handler in own_handlers:
            ray_logger.addHandler(handler)
        ray_logger.setLevel(own_level)


def ray_env(local: bool, extra: dict | None = None) -> dict:
    """Environment variables for every Ray process this suite starts."""
    return {**RAY_ENV, **(LOCAL_RAY_ENV if local else {}), **(extra or {})}


@contextmanager
def ray_session(address: str | None, num_cpus: int | None, worker_env: dict | None = None):
    """Connect to a cluster, or start a local instance bound to 127.0.0.1 and stop it afterwards.
    Yields True when the instance is this process's own (it ends with this process)."""
    import ray

    if ray.is_initialized():  # a caller (a test, a notebook) already connected
        yield False
        return
    env = ray_env(local=not address, extra=worker_env)
    if address:
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False)
    else:
        loopback_only()
        # "local": a new instance even when another one runs on this machine (Ray's default
        # would join it)
        ray.init(address="local", num_cpus=num_cpus, _node_ip_address="127.0.0.1",
                 include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=False)
    try:
        yield not address
    finally:
        ray.shutdown()

