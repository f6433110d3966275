"""The Ray instance a suite runs on: its environment variables, the connection (or a local
instance on 127.0.0.1 of this process's own), and where Ray's messages in this process go."""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

from .planning import RunError

# Ray's documented settings, in one place (Ray Train's internal knobs live in ray_fast_path).
RAY_ENV = {
    # Ray Train V2, the API this runner uses: opt-in on Ray 2.50, the default from 2.51
    "RAY_TRAIN_V2_ENABLED": "1",
}
# Only for a local instance. Ray turns a node address of 127.0.0.1 into the machine's
# routable address and listens there, except where multi-node clusters are off (its setting
# for Windows and macOS); with it off, the node and every server of the instance stay on the
# loopback address. Ray reads it when it is imported: `loopback_only` must come first. gloo
# must then use loopback too.
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "GLOO_SOCKET_IFNAME": "lo"}
# For this driver, where Tune runs. ResultsWriter writes each cell's files; Tune's own
# per-trial CSV and TensorBoard copies would only cost the driver CPU on every report (its JSON
# copy stays: run_suite passes JsonLoggerCallback, because the analysis Tune builds at the end of
# every fit reads it and warns about each trial without one). Tune's older console output prints
# nothing at verbose=0; its newer one prints an experiment box and paths at every verbosity.
DRIVER_ENV = {**RAY_ENV, "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_AIR_NEW_OUTPUT": "0"}


class RayImportedTooEarly(RunError):
    """A local instance asked for after this process imported Ray without the loopback setting."""


def loopback_only() -> None:
    """Keep a local Ray instance on 127.0.0.1: set LOCAL_RAY_ENV before this process imports
    Ray (the processes ray.init starts read the environment; this driver resolves its own node
    address from what Ray read at import)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():  # a caller (a test, a notebook) already connected
        return
    imported_without = ray is not None and os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") != "0"
    os.environ.update(LOCAL_RAY_ENV)
    if imported_without:
        raise RayImportedTooEarly(
            "Ray was imported before its loopback setting was made, so a local instance would "
            "listen on this machine's network address: call amod_bench.runner.loopback_only() "
            "before importing ray, or set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 in the environment")


@contextmanager
def ray_messages_to(log_file: Path):
    """Ray's messages in this process (its start-up notices, Tune's bookkeeping, a failed trial's
    traceback) go to `log_file`, not the console: the suite prints its own line per event, a failed
    cell's error included, and names the file at the end. Ray logs on its "ray" logger, which does
    not propagate, to a console handler of its own: that handler steps aside while the suite runs.
    Python warnings raised in Ray's code go to the file too."""
    import logging
    import warnings

    import ray  # its import sets up the "ray" logger this replaces

    ray_logger = logging.getLogger("ray")
    own_handlers, own_level = list(ray_logger.handlers), ray_logger.level
    log_file.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(log_file)
    # a full disk or a read-only folder: Ray's messages are dropped, not a traceback per message
    # on the console (the suite's own error names the file it could not write)
    to_file.handleError = lambda record: None
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s -- %(message)s"))
    for handler in own_handlers:
        ray_logger.removeHandler(handler)
    ray_logger.addHandler(to_file)
    # Python warnings raised inside Ray (tips about its future defaults) go to the file as well
    show_warning, ray_root = warnings.showwarning, os.path.dirname(ray.__file__)

    def show_ray_warnings_in_log(message, category, filename, lineno, file=None, line=None):
        if not filename.startswith(ray_root):
            return show_warning(message, category, filename, lineno, file, line)
        to_file.emit(logging.LogRecord("ray.warnings", logging.WARNING, filename, lineno,
                                       f"{category.__name__}: {message}", None, None))

    warnings.showwarning = show_ray_warnings_in_log
    try:
        yield
    finally:
        warnings.showwarning = show_warning
        ray_logger.removeHandler(to_file)
        to_file.close()
        for handler in own_handlers:
            ray_logger.addHandler(handler)
        ray_logger.setLevel(own_level)


def ray_env(local: bool, extra: dict | None = None) -> dict:
    """Environment variables for every Ray process this suite starts."""
    from . import ray_fast_path

    return {**RAY_ENV, **(LOCAL_RAY_ENV if local else {}), **ray_fast_path.env(local), **(extra or {})}


@contextmanager
def ray_session(address: str | None, num_cpus: int | None, worker_env: dict | None = None):
    """Connect to a cluster, or start a local instance bound to 127.0.0.1 and stop it afterwards.
    Yields True when the instance is this process's own (it ends with this process). For a local
    instance the caller has made `loopback_only()` before importing Ray (run_suite does); the
    instance's address is checked here."""
    import ray

    if ray.is_initialized():  # a caller (a test, a notebook) already connected
        yield False
        return
    env = ray_env(local=not address, extra=worker_env)
    if address:
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False)
    else:
        # "local": a new instance even when another one runs on this machine (Ray's default
        # would join it)
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 runtime_env={"env_vars": env}, log_to_driver=False)
        node_ip = ray.util.get_node_ip_address()
        if node_ip != "127.0.0.1":
            ray.shutdown()
            raise RayImportedTooEarly(f"the local Ray instance came up on {node_ip}, not 127.0.0.1; "
                                      "refusing to run on a network address")
    try:
        yield not address
    finally:
        ray.shutdown()
