"""Read `results/<suite>/` folders into tidy pandas frames.

The results layout in docs/ARCHITECTURE.md is the whole interface: this module
reads `index.json` and `cells/<id>/{config.json, metrics.jsonl, summary.json}`
and nothing else (no Ray, no torch, no training code).

Two frames come out:

* `cells`: one row per cell. Flat config keys (lists/dicts as canonical JSON
  strings, `targets` split into `target_within_peak_pct` / `target_top1` /
  `target_common_rule`), the
  summary (`status`, `best_top1`, ..., `total_train_seconds`,
  `total_train_macs`, `checkpoint`, `error`), and the flags `ok` / `flag` /
  `reason`. Unfinished, failed, diverged and unreadable cells are kept with
  `ok == False` so the report can list them; they are never dropped.
* `evals`: one row per (cell, eval), the metrics.jsonl keys plus `suite`,
  `cell` and `eval` (0-based position after sorting by step).

A truncated or corrupt metrics line (a partial last line after a crash, say)
is skipped with a `ReportWarning` naming the file and line.

Usage:
    from amod_bench.report.load import load_results
    res = load_results(["results/a", "results/b"])
    res.cells.loc[~res.cells.ok, ["suite", "cell", "flag", "reason"]]
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from amod_bench.results import best_and_final, is_finite_number

UNITS = ("epoch", "step", "train_macs", "train_seconds")  # the four time-to-target units
METRIC_KEYS = (  # always present in `evals`; other numeric keys of metrics.jsonl are kept as well
    "step", "epoch", "samples", "train_macs", "train_seconds", "eval_seconds", "lr",
    "train_loss", "val_top1", "val_top5", "val_loss",
)
# summary.json key -> cells column (totals renamed so they never clash with eval columns)
SUMMARY_COLUMNS = {
    "status": "status", "best_top1": "best_top1", "best_top5": "best_top5",
    "best_epoch": "best_epoch", "final_top1": "final_top1", "final_top5": "final_top5",
    "train_seconds": "total_train_seconds", "train_macs": "total_train_macs",
    "eval_seconds": "total_eval_seconds", "wall_seconds": "total_wall_seconds",
    "checkpoint": "checkpoint", "error": "error", "git_commit": "git_commit",
    "train_skipped": "train_skipped", "val_skipped": "val_skipped", "startup_seconds": "startup_seconds",
}


class ReportWarning(UserWarning):
    """Something in a results folder was unreadable and was skipped or flagged."""


class ResultsNotFound(FileNotFoundError):
    """A path given to the report is not a results folder."""


@dataclass
class Results:
    """Everything read from one or more results folders."""

    cells: pd.DataFrame  # one row per cell, flagged ones included
    evals: pd.DataFrame  # one row per (cell, eval)
    sources: list[Path]  # the results folders, in the order given
    warnings: list[str] = field(default_factory=list)  # every ReportWarning raised while reading

    @property
    def ok(self) -> pd.DataFrame:
        """The cells that count in means, medians and speedups."""
        return self.cells[self.cells["ok"]]

    @property
    def flagged(self) -> pd.DataFrame:
        return self.cells[~self.cells["ok"]]


def _warn(log: list[str], message: str) -> None:
    log.append(message)
    warnings.warn(message, ReportWarning, stacklevel=3)


def _read_json(path: Path, log: list[str]) -> dict | None:
    """A JSON object from `path`, or None (with a warning) when missing or unreadable."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        _warn(log, f"{path}: unreadable JSON ({exc}); treated as missing")
        return None
    if not isinstance(data, dict):
        _warn(log, f"{path}: expected a JSON object, got {type(data).__name__}; treated as missing")
        return None
    return data


def read_metrics(path: Path, log: list[str] | None = None) -> tuple[list[dict], int]:
    """The eval records of one metrics.jsonl, and how many lines were skipped.

    Blank lines are ignored; a line that is not a JSON object (typically a
    partial last line written by a crashed run) is skipped with a ReportWarning
    naming `path:line`.
    """
    log = [] if log is None else log
    records, bad = [], 0
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        _warn(log, f"{path}: unreadable ({exc})")
        return [], 1
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            bad += 1
            _warn(log, f"{path}:{lineno}: corrupt or truncated metrics line skipped ({exc.__class__.__name__}: {exc})")
            continue
        if not isinstance(record, dict):
            bad += 1
            _warn(log, f"{path}:{lineno}: metrics line is not a JSON object; skipped")
            continue
        records.append(record)
    return records, bad


def _flat_value(value):
    """Config values as hashable scalars: lists and dicts become canonical JSON."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


def _flat_config(config: dict) -> dict:
    row = {}
    for key, value in config.items():
        if key == "resources":  # scheduling only, not part of the cell's identity
            continue
        if key == "axes" and isinstance(value, list):  # the suite's grid axes, which the report groups by
            row["axes"] = tuple(str(a) for a in value)
            continue
        if key == "targets" and isinstance(value, dict):
            row["target_within_peak_pct"] = value.get("within_peak_pct")
            row["target_top1"] = value.get("top1")
            row["target_common_rule"] = value.get("common_rule")
            continue
        row["cell" if key == "id" else key] = _flat_value(value)
    return row


def _flag(row: dict, has_folder: bool, has_config: bool, has_summary: bool, n_evals: int) -> tuple[str, str]:
    """(flag, reason) for a cell; flag "" means the cell counts."""
    status = row.get("status")
    if not has_folder:
        return "missing", f"listed in index.json (status {status!r}) but cells/{row['cell']}/ is missing"
    if not has_config:
        return "no_config", "config.json missing or unreadable"
    if not has_summary:
        return "unfinished", f"no summary.json (status {status or 'running'!r}): still running or killed"
    if status == "failed":
        return "failed", f"failed: {row.get('error') or 'no error message'}"
    if status == "diverged":
        return "diverged", f"diverged: {row.get('error') or 'non-finite loss'}"
    if status == "running":
        return "unfinished", "status 'running'"
    if status != "done":
        return "unknown_status", f"unknown status {status!r}"
    if n_evals == 0:
        return "no_metrics", "status 'done' but metrics.jsonl has no readable eval"
    return "", ""


def _load_cell(cell_dir: Path, suite: str, index_entry: dict, log: list[str]) -> tuple[dict, list[dict]]:
    config = _read_json(cell_dir / "config.json", log)
    summary = _read_json(cell_dir / "summary.json", log)
    row: dict = {"suite": suite, "cell": cell_dir.name, "stage": index_entry.get("stage")}
    if config is not None:
        row.update(_flat_config(config))
        row["suite"], row["cell"] = suite, cell_dir.name  # the folder is the identity
    row["status"] = index_entry.get("status") if summary is None else summary.get("status")
    for key, column in SUMMARY_COLUMNS.items():
        if summary is not None and key in summary and key != "status":
            row[column] = _flat_value(summary[key])
    for key in ("params", "gmacs", "seed"):  # config first, the summary only fills gaps
        if row.get(key) is None and summary is not None:
            row[key] = summary.get(key)

    metrics_path = cell_dir / "metrics.jsonl"
    records, bad = read_metrics(metrics_path, log) if metrics_path.is_file() else ([], 0)
    records = _dedupe_by_step(records, metrics_path, log)
    evals = [{"suite": suite, "cell": row["cell"], **{k: r.get(k) for k in METRIC_KEYS},
              **{k: v for k, v in r.items() if k not in METRIC_KEYS and isinstance(v, (int, float))}}
             for r in records]
    # best/final from summary.json; from the metrics, as the runner computes them, only where the summary has none
    for key, value in best_and_final(records).items():
        if row.get(key) is None and value is not None:
            row[key] = value
    row["n_evals"] = len(records)
    row["bad_lines"] = bad
    row["flag"], row["reason"] = _flag(row, True, config is not None, summary is not None, len(records))
    row["ok"] = row["flag"] == ""
    row["path"] = str(cell_dir)
    return row, evals


def _dedupe_by_step(records: list[dict], path: Path, log: list[str]) -> list[dict]:
    """Sort by step; a step logged twice (a run resumed from an earlier checkpoint) keeps its last record."""
    by_step: dict = {}
    unkeyed = []
    for r in records:
        if is_finite_number(r.get("step")):
            by_step[r["step"]] = r
        else:
            unkeyed.append(r)
    repeated = len(records) - len(unkeyed) - len(by_step)
    if repeated:
        _warn(log, f"{path}: {repeated} eval(s) repeat an earlier step; the last record of each step is used")
    if unkeyed:
        _warn(log, f"{path}: {len(unkeyed)} eval(s) without a numeric 'step' kept in file order after the others")
    return [by_step[s] for s in sorted(by_step)] + unkeyed


def _suite_name(folder: Path, index: dict | None, taken: set[str]) -> str:
    name = str((index or {}).get("suite") or folder.name)
    return name if name not in taken else str(folder)  # same suite name twice: fall back to the path


def load_suite(folder: Path | str, log: list[str] | None = None, taken: set[str] | None = None) -> tuple[list[dict], list[dict], str]:
    """Rows (cells, evals) of one results folder and the suite label used for it."""
    folder = Path(folder)
    log = [] if log is None else log
    cells_dir = folder / "cells"
    if not folder.is_dir():
        raise ResultsNotFound(f"results folder not found: {folder}")
    if not cells_dir.is_dir() and not (folder / "index.json").is_file():
        raise ResultsNotFound(f"{folder} is not a results folder (no cells/ and no index.json)")
    index = _read_json(folder / "index.json", log)
    suite = _suite_name(folder, index, taken or set())
    entries = {}
    for entry in (index or {}).get("cells", []):
        if isinstance(entry, dict) and entry.get("id"):
            entries[str(entry["id"])] = entry
    cell_rows, eval_rows = [], []
    on_disk = sorted(p for p in cells_dir.iterdir() if p.is_dir()) if cells_dir.is_dir() else []
    for cell_dir in on_disk:
        row, evals = _load_cell(cell_dir, suite, entries.get(cell_dir.name, {}), log)
        if row["ok"] and entries and cell_dir.name not in entries:  # the runner lists every cell of the suite
            row["ok"], row["flag"] = False, "stale"
            row["reason"] = ("not in index.json: a cell of an earlier version of the suite (its config changed); "
                             f"delete cells/{cell_dir.name}/ or run that version again")
        cell_rows.append(row)
        eval_rows.extend(evals)
    unlabelled = sum(1 for r in cell_rows if r["ok"] and "axes" not in r)
    if unlabelled:
        _warn(log, f"{folder}: {unlabelled} cell(s) have no `axes` in config.json (written by an earlier "
                   "amod-bench): their variants are told apart by router and capacity only; rerun the suite "
                   "with --fresh to record them")
    for cell_id in sorted(set(entries) - {p.name for p in on_disk}):
        entry = entries[cell_id]
        row = {"suite": suite, "cell": cell_id, "stage": entry.get("stage"), "status": entry.get("status"),
               "n_evals": 0, "bad_lines": 0, "path": str(cells_dir / cell_id)}
        row["flag"], row["reason"] = _flag(row, False, False, False, 0)
        row["ok"] = False
        cell_rows.append(row)
    return cell_rows, eval_rows, suite


def load_results(folders) -> Results:
    """Read one or more results folders (str or Path) into a `Results`.

    Raises ResultsNotFound when a folder does not exist or has neither cells/
    nor index.json. Unreadable pieces inside a folder only warn.
    """
    if isinstance(folders, (str, Path)):
        folders = [folders]
    sources = [Path(f) for f in folders]
    if not sources:
        raise ResultsNotFound("no results folder given")
    log: list[str] = []
    cell_rows, eval_rows, taken = [], [], set()
    for folder in sources:
        rows, evals, suite = load_suite(folder, log, taken)
        taken.add(suite)
        cell_rows.extend(rows)
        eval_rows.extend(evals)
    cells = pd.DataFrame(cell_rows)
    for column in ("stage", "model", "dataset", "router", "capacity", "seed", "gmacs",
                   "best_top1", "best_top5", "final_top1", "final_top5", "checkpoint", "error",
                   "target_within_peak_pct", "target_top1", "target_common_rule"):
        if column not in cells:
            cells[column] = None
    for column in ("capacity", "gmacs", "best_top1", "best_top5", "final_top1", "final_top5",
                   "target_within_peak_pct", "target_top1"):
        cells[column] = pd.to_numeric(cells[column], errors="coerce").astype(float)
    cells["ok"] = cells["ok"].astype(bool)
    cells = cells.sort_values(["suite", "cell"], kind="stable").reset_index(drop=True)

    extra = sorted({k for row in eval_rows for k in row} - {"suite", "cell", *METRIC_KEYS})
    evals = pd.DataFrame(eval_rows, columns=["suite", "cell", *METRIC_KEYS, *extra])
    for column in (*METRIC_KEYS, *extra):
        evals[column] = pd.to_numeric(evals[column], errors="coerce").astype(float)
    evals["eval"] = evals.groupby(["suite", "cell"], sort=False).cumcount().astype(int)
    evals = evals.replace([np.inf, -np.inf], np.nan)
    return Results(cells=cells, evals=evals.reset_index(drop=True), sources=sources, warnings=log)

