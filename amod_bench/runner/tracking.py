"""Experiment tracking: the suite's `tracking` section as Ray Tune logger callbacks in the driver,
fed by the reports the cells' trials hand to Tune. Ray's own integrations log to MLflow
(`MLflowLoggerCallback`) and TensorBoard (`TBXLoggerCallback`); W&B runs are logged from the
driver with wandb's own API (`_wandb` says why not Ray's `WandbLoggerCallback`). `CellRuns`, mixed
in ahead of each, turns a cell's trial and reports into what they log:

- one tracked run per cell run, named by the cell id, with the cell's config.json (its config,
  costs and run-time inputs: init weights, a search's pick) as parameters;
- every evaluation row as metrics at the row's `step`: its numeric, finite values but `step`
  (step 0's train_loss is NaN: left out); MLflow also records Ray's `training_iteration` (= step);
  a cell resumed from a checkpoint logs the rows it already had (its history) first, so the run's
  curve has no holes; a row at or before a step already logged is skipped (a worker group
  restarted from its last checkpoint trains those steps again, identically); a diverged row
  becomes the metric `diverged` = 1 at its step;
- the suite groups them: the MLflow experiment, the W&B group, the TensorBoard folder
  `<log dir>/<suite>/` (one sub-folder per cell).

Ray's callbacks key everything by the trial they are handed and read a few of its public
attributes (`config`, `trial_id`, `local_path`, `evaluated_params`, `init_local_path()`, `str()`),
so each gets a `CellRun` in its place: one per cell run, whose `str()` is the cell id and whose
config is the cell's. Only their public methods are called or overridden. The result files stay
the runner's (writer.py); nothing here writes to them."""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .writer import config_json

MLFLOW_PARAM_LENGTH = 6000  # MLflow refuses a longer parameter value (mlflow.utils.validation)
DEFAULT_WANDB_PROJECT = "amod-bench"
DEFAULT_TENSORBOARD_DIR = "tensorboard"  # in the working directory
# the driver-side loggers of the tracking libraries: to the run's log file while the suite runs
LIBRARY_LOGGERS = {"mlflow": ("mlflow", "alembic"), "wandb": ("wandb",), "tensorboard": ("tensorboardX",)}


@dataclass(eq=False)  # hashed by identity: Ray's callbacks keep their state per trial in dicts
class CellRun:
    """What Ray's logger callbacks read of a trial, for one run of one cell."""

    cell_id: str
    trial_id: str  # Tune's trial's
    config: dict  # config.json's fields; the run-time inputs join once the trial reports them
    local_path: str  # TensorBoard's folder for this run
    tags: dict = field(default_factory=dict)
    started: bool = False  # handed to the Ray callback's log_trial_start
    last_step: int = -1  # the last row logged

    def __str__(self) -> str:  # the tracked run's name
        return self.cell_id

    @property
    def evaluated_params(self) -> dict:
        """TensorBoard's hparams: the config flat, and the suite's tags."""
        return {**flat_config(self.config), **{f"tags.{k}": v for k, v in self.tags.items()}}

    def init_local_path(self) -> None:
        os.makedirs(self.local_path, exist_ok=True)


def flat_config(config: dict) -> dict:
    """The config flat (`resources.workers`), each value a string, number or bool (None, lists and
    empty mappings as JSON)."""
    flat: dict = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            flat[prefix] = value if isinstance(value, (str, bool, int, float)) else json.dumps(value)

    walk("", config)
    return flat


def mlflow_params(config: dict) -> dict[str, str]:
    """MLflow's parameters: the flat config as strings, JSON but for strings, each cut to the
    length MLflow takes (only a long `select` list of candidate cells comes near it)."""
    out = {}
    for key, value in flat_config(config).items():
        text = value if isinstance(value, str) else json.dumps(value)
        out[key] = text if len(text) <= MLFLOW_PARAM_LENGTH else text[:MLFLOW_PARAM_LENGTH - 3] + "..."
    return out


def metrics(row: dict) -> dict[str, float]:
    """The row's numeric, finite values, but its step (the x axis)."""
    return {k: v for k, v in row.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def rows_of(result: dict) -> list[dict]:
    """The metrics rows of one report the runner forwards to Tune (trial.py, writer.py)."""
    if "history" in result:  # a worker group started from a checkpoint: the rows it holds
        return list(result["history"])
    row = result.get("row")
    if row is None:  # {"resolved": ...}: run-time inputs, before training
        return []
    if row.get("status") == "diverged":  # not a metrics.jsonl row: the loss went non-finite here
        return [{"step": row["step"], "diverged": 1}]
    return [row]


class CellRuns:
    """Mixed in ahead of a Ray logger callback: hands it a `CellRun` for every trial, rows of the
    reports as results, and keeps the library's own log lines in the run's log file."""

    def __init__(self, *args, cells: dict, cell_costs: dict, cell_folder: str, cell_tags: dict, log_file: Path,
                 announce: str, library_loggers: tuple[str, ...], **kwargs):
        super().__init__(*args, **kwargs)
        self.cells, self.cell_costs = cells, cell_costs  # cell id -> Cell, CellCosts: config.json's sources
        self.cell_folder = cell_folder  # the runs' folder: <log dir>/<suite> or W&B's working folder
        self.cell_tags = cell_tags
        self.cell_runs: dict = {}  # Tune's trial -> its CellRun
        self.cell_log_file = log_file
        self.cell_announce = announce  # the one console line, at the start
        self.cell_library_loggers = library_loggers
        self.cell_log_handlers: dict = {}  # made in setup (Tune pickles its callbacks before)

    # ---- the run's log file
    def setup(self, *args, **kwargs):
        file_handler = logging.FileHandler(self.cell_log_file)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s -- %(message)s"))
        for name in self.cell_library_loggers:
            library = logging.getLogger(name)
            self.cell_log_handlers[name] = (file_handler, list(library.handlers), library.propagate)
            for handler in list(library.handlers):
                library.removeHandler(handler)
            library.addHandler(file_handler)
            library.propagate = False
        print(self.cell_announce)
        super().setup(*args, **kwargs)

    def on_experiment_end(self, trials, **info):
        try:
            super().on_experiment_end(trials, **info)
        finally:
            for name, (file_handler, handlers, propagate) in self.cell_log_handlers.items():
                library = logging.getLogger(name)
                library.removeHandler(file_handler)
                file_handler.close()
                for handler in handlers:
                    library.addHandler(handler)
                library.propagate = propagate
            self.cell_log_handlers = {}

    # ---- trials as cell runs
    def cell_run(self, trial) -> CellRun:
        if trial not in self.cell_runs:
            cell_id = trial.config["cell_id"]
            self.cell_runs[trial] = CellRun(
                cell_id=cell_id, trial_id=trial.trial_id, config=config_json(self.cells[cell_id],
                                                                             self.cell_costs[cell_id]),
                local_path=os.path.join(self.cell_folder, cell_id), tags=self.cell_tags)
        return self.cell_runs[trial]

    def start_cell_run(self, run: CellRun) -> None:
        if not run.started:
            run.started = True
            super().log_trial_start(run)

    def log_trial_start(self, trial):
        if isinstance(trial, CellRun):  # Ray's callback starting a run itself (W&B, TensorBoard)
            super().log_trial_start(trial)
            return
        # the tracked run starts at the trial's first row: a search's pick and the initial weights
        # are parameters too, and the trial reports them before any row
        self.cell_run(trial)

    def log_trial_result(self, iteration, trial, result):
        run = self.cell_run(trial)
        if "resolved" in result and not run.started:
            run.config = config_json(self.cells[run.cell_id], self.cell_costs[run.cell_id], result["resolved"])
        for row in rows_of(result):
            if row["step"] <= run.last_step:
                continue
            self.start_cell_run(run)
            super().log_trial_result(iteration, run, {**metrics(row), "training_iteration": row["step"]})
            run.last_step = row["step"]

    def log_trial_end(self, trial, failed=False):
        run = self.cell_run(trial)  # a trial that failed before its start is a failed run too
        self.start_cell_run(run)
        super().log_trial_end(run, failed=failed)
        del self.cell_runs[trial]

    def log_trial_save(self, trial):  # checkpoints stay in Ray's storage (no upload)
        pass

    def log_trial_restore(self, trial):
        pass


def tracking_callbacks(suite, cells: dict, costs: dict, log_file: Path) -> list:
    """The Tune callbacks of the suite's `tracking` section: none, or one Ray logger callback.

    Args:
        suite: the loaded Suite (its `tracking`, name and working directory).
        cells: cell id -> Cell, the cells this run starts.
        costs: cell id -> CellCosts of those cells.
        log_file: the run's log file (results/<suite>/logs/driver.log), for the library's messages.
    """
    tracking = suite.tracking
    if tracking.backend == "none":
        return []
    common = dict(cells=cells, cell_costs=costs, cell_tags=dict(tracking.tags), log_file=log_file,
                  library_loggers=LIBRARY_LOGGERS[tracking.backend])
    if tracking.backend == "mlflow":
        return [_mlflow(suite, tracking, common)]
    if tracking.backend == "wandb":
        return [_wandb(suite, tracking, common)]
    return [_tensorboard(suite, tracking, common)]


def _mlflow(suite, tracking, common: dict):
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class MLflowCellRuns(CellRuns, MLflowLoggerCallback):
        """An MLflow run per cell in the experiment named after the suite."""

        def start_cell_run(self, run: CellRun) -> None:
            # Ray's callback logs `trial.config` as the parameters: MLflow takes strings of bounded length
            if not run.started:
                run.config = mlflow_params(run.config)
            super().start_cell_run(run)

        def setup(self, *args, **kwargs):
            uri = self.tracking_uri or ""
            if uri.startswith("file:") or (uri and ":" not in uri):
                # a file store, named in the suite: MLflow 3 keeps it (maintenance mode) behind this switch
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            super().setup(*args, **kwargs)

    where = tracking.uri or "MLflow's default tracking URI (MLFLOW_TRACKING_URI, else ./mlflow.db)"
    return MLflowCellRuns(tracking.uri, experiment_name=suite.name, tags=dict(tracking.tags),
                          cell_folder=suite.base_dir,
                          announce=f"tracking: MLflow experiment '{suite.name}' at {where}", **common)


def _wandb(suite, tracking, common: dict):
    import wandb
    from ray.tune.logger import LoggerCallback

    entity, _, project = (tracking.uri or DEFAULT_WANDB_PROJECT).rpartition("/")
    # nothing on the console, the driver's output not captured, no system metrics of the driver
    quiet = {"silent": True, "console": "off", "x_disable_stats": True}
    settings = {k: v for k, v in quiet.items() if k in wandb.Settings.model_fields}
    runs_at = os.path.join(os.environ.get("WANDB_DIR") or suite.base_dir, "wandb")
    offline = os.environ.get("WANDB_MODE") == "offline"

    class WandbRuns(LoggerCallback):
        """W&B runs logged from this process with wandb's own API, one per cell run.

        Not Ray's WandbLoggerCallback: it logs from an actor per trial and kills that actor, and
        so W&B's service process, as soon as wandb.finish() returns, while W&B writes the run's
        .wandb file on a timer: offline runs came out empty. Here the service outlives the runs,
        and on_experiment_end waits until it has written them."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.wandb_runs: dict = {}  # CellRun -> wandb Run

        def log_trial_start(self, run: CellRun):
            self.wandb_runs[run] = wandb.init(
                project=project, entity=entity or None, group=suite.name, name=str(run), config=run.config,
                tags=[f"{k}:{v}" for k, v in run.tags.items()], dir=os.path.dirname(runs_at),
                reinit="create_new", settings=settings)

        def log_trial_result(self, iteration: int, run: CellRun, result: dict):
            metrics = {k: v for k, v in result.items() if k != "training_iteration"}
            self.wandb_runs[run].log(metrics, step=result["training_iteration"])

        def log_trial_end(self, run: CellRun, failed: bool = False):
            self.wandb_runs.pop(run).finish(exit_code=1 if failed else 0)

        def on_experiment_end(self, trials, **info):
            for wandb_run in self.wandb_runs.values():  # interrupted: end them as failed
                wandb_run.finish(exit_code=1)
            self.wandb_runs = {}
            wandb.teardown()  # waits for W&B's service to write (offline) or upload every run

    class WandbCellRuns(CellRuns, WandbRuns):
        """A W&B run per cell, grouped by the suite."""

    announce = (f"tracking: W&B project {tracking.uri or DEFAULT_WANDB_PROJECT}, group '{suite.name}'"
                + (f"; offline runs in {runs_at} (to upload: wandb sync {runs_at}/offline-run-*)"
                   if offline else f"; local copies in {runs_at}"))
    return WandbCellRuns(cell_folder=runs_at, announce=announce, **common)


def _tensorboard(suite, tracking, common: dict):
    from ray.tune.logger import TBXLoggerCallback

    folder = os.path.join(tracking.uri or os.path.join(suite.base_dir, DEFAULT_TENSORBOARD_DIR), suite.name)

    class TensorBoardCellRuns(CellRuns, TBXLoggerCallback):
        """Event files per cell in <log dir>/<suite>/<cell id>/; scalars as ray/tune/<metric>."""

    return TensorBoardCellRuns(cell_folder=folder, announce=f"tracking: TensorBoard runs in {folder} "
                               f"(tensorboard --logdir {os.path.dirname(folder)})", **common)
