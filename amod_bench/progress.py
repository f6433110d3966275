"""Progress output for a running suite. In a terminal: tqdm bars redrawn in place, the suite's
(cells done/total, elapsed, ETA) and one per running cell, with a line above them for each cell
that ends. Piped or logged: one line per event (a cell started, evaluated, ended), never a
redrawn table. The runner prints the plan before and the summary after."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

ENDED = ("done", "failed", "diverged")


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


@dataclass
class SuiteProgress:
    cell_ids: list[str]
    epochs: dict[str, float]  # cell id -> planned epochs
    live: bool | None = None  # bars in place; default: when stdout is a terminal
    cells: dict[str, CellProgress] = field(init=False)
    started: float | None = field(init=False, default=None)  # the first cell's start, after Ray's

    def __post_init__(self) -> None:
        self.cells = {cid: CellProgress(epochs=self.epochs[cid]) for cid in self.cell_ids}
        if self.live is None:
            self.live = sys.stdout.isatty()
        # made at the first event: Tune pickles its callbacks, this object with them, before the run
        self._bars: dict[str, object] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_bars": {}}

    # ------------------------------------------------------------------ state

    def done(self) -> int:
        return sum(c.status in ENDED for c in self.cells.values())

    def _epochs_done(self) -> float:
        return sum(c.epochs if c.status in ENDED else c.epoch for c in self.cells.values())

    def eta(self) -> float | None:
        """Seconds left for the whole suite, at the rate of its epochs so far."""
        done, total = self._epochs_done(), sum(c.epochs for c in self.cells.values())
        if not done:
            return None
        return (time.monotonic() - self.started) * (total - done) / done

    # ------------------------------------------------------------------ events (Tune's callback)

    def cell_started(self, cell_id: str) -> None:
        cell = self.cells[cell_id]
        cell.status = "running"
        if self.started is None:
            self.started = time.monotonic()
        if cell.started is None:
            cell.started = time.monotonic()
        if self.live:
            self._cell_bar(cell_id)
            self._redraw_suite()
        else:
            self._line(f"started  {cell_id}")

    def cell_evaluated(self, cell_id: str, row: dict) -> None:
        cell = self.cells[cell_id]
        cell.epoch = row.get("epoch", cell.epoch)
        cell.top1 = row.get("val_top1", cell.top1)
        if self.live:
            bar = self._cell_bar(cell_id)
            bar.n = cell.epoch
            bar.set_postfix_str(self._top1(cell), refresh=False)
            bar.refresh()
            self._redraw_suite()
        else:
            self._line(f"{cell_id}: epoch {cell.epoch:.2f}/{cell.epochs:g}  {self._top1(cell)}  "
                       f"suite ETA {_duration(self.eta())}")

    def cell_ended(self, cell_id: str, status: str) -> None:
        cell = self.cells[cell_id]
        cell.status = status
        took = _duration(time.monotonic() - cell.started) if cell.started is not None else "-"
        text = f"{status:<8} {cell_id}  {self._top1(cell)}  in {took}"
        if self.live:
            bar = self._bars.pop(cell_id, None)
            if bar is not None:
                bar.close()
            self._suite_bar().write(text, file=sys.stdout)
            self._redraw_suite()
        else:
            self._line(text)

    def tick(self) -> None:
        """Between events: lets the terminal's elapsed time and ETA move (tqdm throttles it)."""
        if self.live and self._bars:
            self._suite_bar().update(0)

    def close(self) -> None:
        for bar in reversed(list(self._bars.values())):
            bar.close()
        self._bars.clear()

    # ------------------------------------------------------------------ output

    @staticmethod
    def _top1(cell: CellProgress) -> str:
        return f"val top-1 {'-' if cell.top1 is None else f'{cell.top1:.2f}'}"

    def _line(self, text: str) -> None:
        # sys.stdout looked up now: the object is pickled with Tune's callbacks, streams are not
        print(f"[{self.done()}/{len(self.cells)}] {text}", file=sys.stdout, flush=True)

    def _suite_bar(self):
        from tqdm import tqdm

        if "" not in self._bars:  # the suite's bar, first made: it stays at the top
            self._bars[""] = tqdm(total=sum(c.epochs for c in self.cells.values()), file=sys.stdout,
                                  smoothing=0, dynamic_ncols=True, position=0, leave=True,
                                  desc=f"{self.done()}/{len(self.cells)} cells",
                                  bar_format="{desc} |{bar:30}| {percentage:3.0f}%  elapsed {elapsed}, ETA {remaining}")
        return self._bars[""]

    def _redraw_suite(self) -> None:
        bar = self._suite_bar()
        bar.set_description_str(f"{self.done()}/{len(self.cells)} cells", refresh=False)
        bar.n = self._epochs_done()
        bar.refresh()

    def _cell_bar(self, cell_id: str):
        from tqdm import tqdm

        self._suite_bar()
        if cell_id not in self._bars:
            width = max(len(cid) for cid in self.cell_ids)
            self._bars[cell_id] = tqdm(
                total=self.cells[cell_id].epochs, file=sys.stdout, smoothing=0, dynamic_ncols=True,
                leave=False, desc=f"{cell_id:<{width}}", postfix=self._top1(self.cells[cell_id]),
                # the bar last: on a narrow terminal tqdm shrinks it, not the numbers
                bar_format="{desc} {n:.2f}/{total:g} ep{postfix}  [{elapsed}<{remaining}] |{bar}|")
        return self._bars[cell_id]
