"""The suite's board: the one actor where the cells' trials and Train controllers meet (`CellBoard`)."""
from __future__ import annotations

import asyncio

BOARD_WAIT_SECONDS = 60.0  # longest wait of one call to the board; it answers as soon as it can


def remote_board():
    """The board's actor class (`remote_board().remote(finished)`), made when Ray is imported."""
    import ray

    @ray.remote(num_cpus=0)
    class CellBoard:
        """The suite's meeting point. Finished cells' summaries, so a trial on any node can wait
        for its dependencies; and running cells' reports, posted by each cell's Train controller
        and taken by its trial. (Tune's TuneReportCallback does the second through a queue
        actor per cell: one more process importing ray per cell; docs/DECISIONS.md.)
        Trials block on it instead of polling: every call to an actor costs both processes CPU."""

        def __init__(self, finished: dict):
            self.finished = finished
            self.reports: dict[str, list[dict]] = {}
            self.closed: set[str] = set()
            self.started: set[str] = set()  # cells that have reported at least once
            self.changed = asyncio.Condition()  # notified on every finish, post and close

        async def _changed(self) -> None:
            # one event loop runs every call: the state is already updated, waiters recheck it
            async with self.changed:
                self.changed.notify_all()

        async def _wait(self, ready, wait_seconds: float) -> None:
            async with self.changed:
                try:
                    await asyncio.wait_for(self.changed.wait_for(ready), wait_seconds)
                except asyncio.TimeoutError:
                    pass

        async def finish(self, cell_id: str, summary: dict) -> None:
            self.finished[cell_id] = summary
            await self._changed()

        async def get(self, cell_ids: list[str], wait_seconds: float = 0.0) -> dict:
            """Summaries of these cells (None: not finished); waits up to wait_seconds for all."""
            await self._wait(lambda: all(cid in self.finished for cid in cell_ids), wait_seconds)
            return {cid: self.finished.get(cid) for cid in cell_ids}

        async def post(self, cell_id: str, report: dict) -> None:
            self.reports.setdefault(cell_id, []).append(report)
            self.started.add(cell_id)
            await self._changed()

        async def started_or_finished(self, cell_id: str, wait_seconds: float) -> bool:
            """Whether the cell has reported (its training has begun) or finished; waits up to
            wait_seconds for either."""
            def ready() -> bool:
                return cell_id in self.started or cell_id in self.finished
            await self._wait(ready, wait_seconds)
            return ready()

        async def close(self, cell_id: str) -> None:
            """The cell's run has ended: every report it will make is posted."""
            self.closed.add(cell_id)
            await self._changed()

        async def take(self, cell_id: str, wait_seconds: float) -> tuple[list[dict], bool]:
            """(the cell's reports not taken yet, oldest first; whether its run has ended).
            Waits up to wait_seconds for either."""
            await self._wait(lambda: bool(self.reports.get(cell_id)) or cell_id in self.closed, wait_seconds)
            return self.reports.pop(cell_id, []), cell_id in self.closed

    return CellBoard
