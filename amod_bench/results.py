"""The results folder: the only writer of result files, and the only reader the runner needs.

Layout (docs/ARCHITECTURE.md is the contract with the report)::

    results/<suite>/
      suite.yaml                 copy of the suite file as run
      index.json                 {"suite": name, "cells": [{"id", "stage", "status"}, ...]}
      cells/<cell_id>/
        config.json              the resolved cell configuration
        metrics.jsonl            one JSON object per evaluation
        summary.json             final status and totals
      analysis/                  written by `bench.py analyze importance`, read by the report

Every write goes to a temporary file in the same folder, then `os.replace`s the
target, so a crash or a concurrent reader never sees half a file. Only the
driver process writes here (the Ray workers report to it), so no two writers
ever share a file.

Reading never raises on a damaged file (edited by hand, a disk fault, a folder in
its place): the readers leave out what they cannot read, `CellFiles.problems()`
names each such file, and a summary.json that cannot be read gives the status
`unreadable`, which is not `done`: the runner runs that cell again.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

# analysis/ (amod_bench.analysis writes these files, amod_bench.report reads them)
ANALYSIS_DIR = "analysis"
CORRELATIONS = "importance_correlations.csv"
PRECISION_AT_K = "importance_precision_at_k.csv"
DIAGNOSTICS = "routing_diagnostics.csv"
ANALYSIS_INPUTS = "analysis_inputs.json"

FINAL_STATUSES = ("done", "failed", "diverged")
# room for the summaries and index of a run that stops because its disk is full
RESERVE_BYTES = 256 * 1024
SUMMARY_STATUSES = (*FINAL_STATUSES, "running")


class ResultFileError(ValueError):
    """A result file that cannot be read; the message names its path."""


class ResultWriteError(OSError):
    """A file that cannot be written (a full disk, a read-only folder); the message names its path.
    The file as it was before stays intact: every write replaces it whole, or not at all."""


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, then rename it over `path`; a failure
    raises ResultWriteError naming `path`."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            error = ResultWriteError(f"cannot write {path}: {exc.strerror or exc}")
            error.errno = exc.errno
            raise error from exc
        raise
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _finite_or_none(value: Any) -> Any:
    # JSON has no NaN/inf; a diverged loss is recorded as null and flagged by status.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(obj: Any, **kwargs: Any) -> str:
    if isinstance(obj, dict):
        obj = {k: _finite_or_none(v) for k, v in obj.items()}
    return json.dumps(obj, default=_json_default, allow_nan=False, **kwargs)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    """The JSON in `path`; ResultFileError naming it when it is missing, not UTF-8 or not JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as exc:
        raise ResultFileError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ResultFileError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ResultFileError(f"{path}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None


def is_finite_number(value: Any) -> bool:
    """A real number (not a bool), neither NaN nor infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def best_and_final(history: list[dict]) -> dict:
    """Best and final accuracy of a cell's evaluation rows (in step order): `best_*` from the
    row with the highest `val_top1` (the first of equals), `final_*` from the last row with one;
    None where no row has a finite `val_top1`."""
    evals = [row for row in history if is_finite_number(row.get("val_top1"))]
    best = max(evals, key=lambda row: row["val_top1"], default=None)
    final = evals[-1] if evals else None
    return {"best_top1": best and best["val_top1"], "best_top5": best and best.get("val_top5"),
            "best_epoch": best and best.get("epoch"),
            "final_top1": final and final["val_top1"], "final_top5": final and final.get("val_top5")}


def summarize(history: list[dict], status: str) -> dict:
    """summary.json's status, best and final accuracy and totals from a cell's metrics history
    (the runner writes it; the report falls back on `best_and_final` where a summary lacks them)."""
    last = history[-1] if history else {}
    return {"status": status, **best_and_final(history),
            "train_seconds": last.get("train_seconds", 0.0), "eval_seconds": last.get("eval_seconds", 0.0),
            "train_macs": last.get("train_macs", 0),
            "steps": last.get("step", 0), "train_skipped": last.get("train_skipped", 0),
            "val_skipped": last.get("val_skipped", 0)}


@dataclass(frozen=True)
class CellFiles:
    """The three files of one cell."""

    folder: Path

    @property
    def config(self) -> Path:
        return self.folder / "config.json"

    @property
    def metrics(self) -> Path:
        return self.folder / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.folder / "summary.json"

    def write_config(self, config: dict) -> None:
        write_json_atomic(self.config, config)

    def write_metrics(self, rows: Iterable[dict]) -> None:
        write_text_atomic(self.metrics, "".join(dumps(row, sort_keys=True) + "\n" for row in rows))

    def read_metrics(self) -> list[dict]:
        """The evaluation rows; a line that is not one is left out (`problems()` names it)."""
        return self._metrics()[0]

    def _metrics(self) -> tuple[list[dict], list[str]]:
        if not self.metrics.exists():
            return [], []
        try:
            text = self.metrics.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return [], [f"{self.metrics}: cannot read it ({exc}); its rows are left out"]
        rows, bad = [], []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if isinstance(row, dict) and isinstance(row.get("step"), int):  # the runner orders rows by step
                rows.append(row)
            else:
                bad.append(str(number))
        if not bad:
            return rows, []
        return rows, [f"{self.metrics}: line {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''} "
                      "not an evaluation row (a JSON object with an integer step); left out"]

    def write_summary(self, summary: dict) -> None:
        write_json_atomic(self.summary, summary)

    def read_summary(self) -> dict | None:
        """The summary; None when there is none yet or it cannot be read (`problems()` says why)."""
        return self._summary()[0]

    def _summary(self) -> tuple[dict | None, str | None]:
        """(summary, None); (None, None) with no summary yet; (None, why) when it cannot be read."""
        if not self.summary.exists():
            return None, None
        try:
            summary = read_json(self.summary)
        except ResultFileError as exc:
            problem = str(exc)
        else:
            if isinstance(summary, dict) and summary.get("status") in SUMMARY_STATUSES:
                return summary, None
            problem = f"{self.summary}: not a cell summary (a JSON object with status one of {', '.join(SUMMARY_STATUSES)})"
        return None, problem + "; the cell counts as not done and runs again"

    def status(self) -> str:
        """`done` / `failed` / `diverged` / `running`; `pending` with no summary yet; `unreadable`
        when summary.json cannot be read (never `done`: a damaged file must not pass for a result)."""
        summary, problem = self._summary()
        if problem:
            return "unreadable"
        return summary["status"] if summary else "pending"

    def problems(self) -> list[str]:
        """One message per file of this cell that exists but cannot be read, each naming its path."""
        out = [problem for problem in (self._summary()[1],) if problem] + self._metrics()[1]
        if self.config.exists():
            try:
                if not isinstance(read_json(self.config), dict):
                    out.append(f"{self.config}: not a cell configuration (a JSON object)")
            except ResultFileError as exc:
                out.append(str(exc))
        return out


class ResultsFolder:
    """`results/<suite>/`."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()

    def cell(self, cell_id: str) -> CellFiles:
        return CellFiles(self.root / "cells" / cell_id)

    def write_suite_copy(self, suite_path: str | os.PathLike) -> None:
        write_text_atomic(self.root / "suite.yaml", Path(suite_path).read_text())

    def write_index(self, suite_name: str, cells: Iterable[tuple[str, str]]) -> None:
        """`cells`: (cell id, stage) pairs in plan order; statuses are read from disk."""
        entries = [
            {"id": cell_id, "stage": stage, "status": self.cell(cell_id).status()}
            for cell_id, stage in cells
        ]
        write_json_atomic(self.root / "index.json", {"suite": suite_name, "cells": entries})

    @property
    def _reserve(self) -> Path:
        return self.root / ".reserve"

    def reserve_space(self) -> None:
        """Set aside RESERVE_BYTES in a file of their own, so that once the disk is full the
        results of that moment (a failed cell's summary) can still be written: `free_reserve`."""
        write_bytes_atomic(self._reserve, b"\0" * RESERVE_BYTES)

    def free_reserve(self) -> None:
        self._reserve.unlink(missing_ok=True)

    def remove_cell(self, cell_id: str) -> None:
        shutil.rmtree(self.cell(cell_id).folder, ignore_errors=True)
