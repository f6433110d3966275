"""The driver's side of a suite run: `ResultsWriter`, the Tune callback that turns every trial
event into the cell's result files (config.json, metrics.jsonl, summary.json), on the machine
that runs `bench.py` whichever nodes trained."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from amod_bench.results import CellFiles, ResultsFolder, ResultWriteError, summarize


def config_json(cell, costs, resolved: dict | None = None) -> dict:
    """config.json's fields: the suite's config, then the cell's costs and its run-time inputs
    (`resolved`, once the trial reports them: init weights, a search's pick)."""
    inputs = {"init_weights": resolved["init_weights"], **resolved["picked"]} if resolved else {}
    return {**cell.config.to_json(), **costs.as_json(), **inputs}


def results_writer_class():
    """`ResultsWriter`, made when Ray Tune is imported (it subclasses `tune.Callback`)."""
    from ray import tune

    class ResultsWriter(tune.Callback):
        """Turns every trial event into result files; runs in the driver process only.

        A result file that cannot be written (a full disk, a read-only folder) stops the suite:
        the cell is marked failed with the error, in the room `ResultsFolder.reserve_space` kept,
        its running siblings stay resumable, and every file written before stays as it was.
        `write_error` then says why, `stopper` stops Tune, and later events write nothing."""

        def __init__(self, results: ResultsFolder, cells: dict, costs: dict, progress, board, provenance: dict):
            self.results, self.cells, self.costs, self.progress, self.board = results, cells, costs, progress, board
            self.provenance = provenance
            self.resolved: dict[str, dict] = {}  # per cell: init_weights and a search's pick, once known
            self.history: dict[str, list[dict]] = {}
            self.extra: dict[str, dict] = {}  # per cell: checkpoint, hardware, diverged_at
            self.write_error: str | None = None
            self.stopper = _StopAllWhen(self)

        def _writing(self, trial, handle, *args) -> None:
            """One trial event's writes; the first that fails stops the suite (class docstring)."""
            if self.write_error is not None:  # stopping: the results stay as they were then
                return
            try:
                handle(trial, *args)
            except ResultWriteError as error:
                self.write_error = str(error)
                self.results.free_reserve()
                cell_id, files = self._files(trial)
                try:
                    if cell_id not in self.extra:
                        self._open(cell_id, files)
                    self._write_summary(cell_id, "failed", self.write_error)
                except ResultWriteError:  # a read-only folder: nothing can be marked
                    pass
                self.progress.cell_ended(cell_id, "failed")

        def _files(self, trial) -> tuple[str, CellFiles]:
            cell_id = trial.config["cell_id"]
            return cell_id, self.results.cell(cell_id)

        def _write_config(self, cell_id: str) -> None:
            self.results.cell(cell_id).write_config(
                config_json(self.cells[cell_id], self.costs[cell_id], self.resolved.get(cell_id)))

        def _write_summary(self, cell_id: str, status: str, error: str | None = None) -> dict:
            costs = self.costs[cell_id]
            summary = {**summarize(self.history[cell_id], status), **self.provenance,
                       "params": costs.params, "gmacs": costs.gmacs,
                       "seed": self.cells[cell_id].config.seed, "error": error,
                       "checkpoint": self.extra[cell_id].get("checkpoint"),
                       "hardware": self.extra[cell_id].get("hardware"),
                       "rank_checksums": self.extra[cell_id].get("rank_checksums"),
                       "diverged_at_step": self.extra[cell_id].get("diverged_at_step"),
                       # wall-clock of the Tune trial (Ray start-up and teardown included), summed
                       # over reruns; minus train_seconds and eval_seconds it is Ray's overhead
                       "wall_seconds": self.extra[cell_id]["earlier_wall_seconds"]
                       + time.monotonic() - self.extra[cell_id]["started"],
                       "startup_seconds": self.extra[cell_id].get("startup_seconds")}
            self.results.cell(cell_id).write_summary(summary)
            return summary

        def _open(self, cell_id: str, files: CellFiles) -> None:
            """The cell's state in this run: its rows and summary so far (a rerun keeps them)."""
            self.history[cell_id] = files.read_metrics()
            previous = files.read_summary() or {}
            self.extra[cell_id] = {"checkpoint": previous.get("checkpoint"), "started": time.monotonic(),
                                   "earlier_wall_seconds": previous.get("wall_seconds") or 0.0}

        def on_trial_start(self, iteration, trials, trial, **info):
            self._writing(trial, self._start)

        def _start(self, trial) -> None:
            cell_id, files = self._files(trial)
            self._write_config(cell_id)
            self._open(cell_id, files)
            self._write_summary(cell_id, "running")
            self.progress.cell_started(cell_id)

        def _keep(self, cell_id: str, row: dict) -> dict:
            """The row as metrics.jsonl holds it; its per-run facts go to the summary."""
            for key in ("hardware", "rank_checksums"):
                if key in row:
                    self.extra[cell_id][key] = row[key]
            return {k: v for k, v in row.items() if k not in ("status", "hardware", "rank_checksums")}

        def _started_training(self, cell_id: str, eval_seconds: float) -> None:
            """Ray's start-up cost of this run: from the trial's start (or, if later, the end of the
            cells it waited for) to its first training step, less the step-0 evaluation."""
            if "startup_seconds" not in self.extra[cell_id]:
                elapsed = time.monotonic() - self.extra[cell_id]["started"] - eval_seconds
                self.extra[cell_id]["startup_seconds"] = max(0.0, elapsed)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self._writing(trial, self._result, result)

        def _result(self, trial, result: dict) -> None:
            cell_id, files = self._files(trial)
            if "resolved" in result:  # values known only at run time: a search's pick, the init weights
                self.extra[cell_id]["started"] = time.monotonic()  # dependencies met: the cell starts now
                self.resolved[cell_id] = result["resolved"]
                self._write_config(cell_id)
            if "history" in result:
                # The worker group started from a checkpoint, which holds every row up to its
                # step: that is the cell's history, whatever of it reached this file before
                # (the driver may have died between the checkpoint and its report). Later rows
                # are trained again and follow.
                self._started_training(cell_id, eval_seconds=0.0)
                self.history[cell_id] = [self._keep(cell_id, r) for r in result["history"]]
                self.extra[cell_id]["checkpoint"] = result.get("resumed_from")
                files.write_metrics(self.history[cell_id])
                self._write_summary(cell_id, "running")
                return
            row = result.get("row")
            if row is None:
                return
            if row.get("status") == "diverged":
                self.extra[cell_id]["diverged_at_step"] = row["step"]
                return
            if row["step"] == 0:  # evaluated just before the first training step
                self._started_training(cell_id, eval_seconds=row.get("eval_seconds") or 0.0)
            row = self._keep(cell_id, row)
            if result.get("checkpoint_path"):
                self.extra[cell_id]["checkpoint"] = result["checkpoint_path"]
            # A worker group restarted from its last checkpoint reports again from there:
            # rows at or after the reported step are superseded, so no step appears twice.
            history = [r for r in self.history[cell_id] if r["step"] < row["step"]] + [row]
            self.history[cell_id] = history
            files.write_metrics(history)
            self._write_summary(cell_id, "running")
            self.progress.cell_evaluated(cell_id, row)

        def _finish(self, trial, status: str, error: str | None = None) -> None:
            cell_id, files = self._files(trial)
            if cell_id not in self.extra:  # the trial failed before Tune started it (no on_trial_start)
                self._open(cell_id, files)
            if status == "done" and self.extra[cell_id].get("diverged_at_step") is not None:
                status = "diverged"
            summary = self._write_summary(cell_id, status, error)
            if status == "done":
                self._remove_stale_checkpoints(cell_id, summary["checkpoint"])
            self.board.finish.remote(cell_id, summary)
            self.progress.cell_ended(cell_id, status)

        def _remove_stale_checkpoints(self, cell_id: str, final: str | None) -> None:
            """A run killed between writing a checkpoint and registering it leaves that folder
            behind, outside Ray's count; once the cell is done, only the `checkpoints_to_keep`
            newest (their names are timestamps) and the final one stay. Local storage only."""
            if not final or "://" in final:
                return
            keep = self.cells[cell_id].config.resources.checkpoints_to_keep
            if keep is None:  # keep them all
                return
            folders = sorted((f for f in Path(final).parent.glob("checkpoint_*") if f.is_dir()), reverse=True)
            for folder in folders[keep:]:
                if folder != Path(final):
                    shutil.rmtree(folder, ignore_errors=True)

        def on_step_end(self, iteration, trials, **info):
            self.progress.tick()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._writing(trial, self._finish, "done")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._writing(trial, self._failed)

        def _failed(self, trial) -> None:
            # Tune writes the error to the trial's local folder now and to storage later, which is
            # where get_error() reads it: at this point only the local file is sure to exist
            local = Path(trial.error_file) if trial.error_file else None
            error = (local.read_text() if local and local.exists() else trial.get_error()) \
                or "unknown error (see the Ray logs under /tmp/ray/session_latest/logs)"
            last_line = [line for line in str(error).strip().splitlines() if line.strip()][-1:]
            self._finish(trial, "failed", last_line[0] if last_line else str(error))

    class _StopAllWhen(tune.Stopper):
        """Stops every trial once the writer could not write a result file."""

        def __init__(self, writer):
            self.writer = writer

        def __call__(self, trial_id, result) -> bool:
            return False

        def stop_all(self) -> bool:
            return self.writer.write_error is not None

    return ResultsWriter
