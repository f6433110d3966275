"""Progress output for a running suite: one line per evaluation, a table of cells on every
status change (and at most every `table_every` seconds otherwise), and a final summary."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclass
class CellProgress:
    status: str = "pending"
    epoch: float = 0.0
    epochs: float = 0.0
    top1: float | None = None
    started: float | None = None
    eta: float | None = None


@dataclass
class ProgressTable:
    cell_ids: list[str]
    epochs: dict[str, float]  # cell id -> planned epochs
    table_every: float = 30.0  # seconds between tables when nothing changes status
    cells: dict[str, CellProgress] = field(init=False)
    _last_table: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.cells = {cid: CellProgress(epochs=self.epochs[cid]) for cid in self.cell_ids}

    def _print(self, text: str) -> None:
        print(text, file=sys.stdout, flush=True)  # looked up now: Tune pickles callbacks, not streams

    def set_status(self, cell_id: str, status: str) -> None:
        cell = self.cells[cell_id]
        if status == "running" and cell.started is None:
            cell.started = time.monotonic()
        cell.status = status
        if status != "running":
            cell.eta = None
        self.print_table()

    def update(self, cell_id: str, row: dict) -> None:
        cell = self.cells[cell_id]
        cell.epoch = row.get("epoch", cell.epoch)
        cell.top1 = row.get("val_top1", cell.top1)
        if cell.started is not None and cell.epoch > 0:
            elapsed = time.monotonic() - cell.started
            cell.eta = elapsed * max(0.0, cell.epochs - cell.epoch) / cell.epoch
        top1 = "-" if cell.top1 is None else f"{cell.top1:.2f}"
        self._print(f"  {cell_id}: epoch {cell.epoch:.2f}/{cell.epochs:g}  val top-1 {top1}  "
                    f"ETA {_duration(cell.eta)}")
        if time.monotonic() - self._last_table > self.table_every:
            self.print_table()

    def print_table(self) -> None:
        self._last_table = time.monotonic()
        width = max(len(cid) for cid in self.cell_ids)
        lines = [f"{'cell':<{width}}  {'status':<9} {'epoch':>11}  {'top-1':>6}  {'ETA':>7}"]
        for cid in self.cell_ids:
            c = self.cells[cid]
            top1 = "-" if c.top1 is None else f"{c.top1:.2f}"
            lines.append(f"{cid:<{width}}  {c.status:<9} {c.epoch:>5.2f}/{c.epochs:<5g}  {top1:>6}  "
                         f"{_duration(c.eta):>7}")
        self._print("\n".join(lines))

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for c in self.cells.values():
            counts[c.status] = counts.get(c.status, 0) + 1
        return counts
