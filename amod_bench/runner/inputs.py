"""A cell's run-time inputs: the cells it waits for, and what is known only once they have
finished (the initial weights, a search's pick), read from their summaries on the board."""
from __future__ import annotations

import os

from amod_bench.suite import CellConfig, SearchChoice

from .board import BOARD_WAIT_SECONDS


def dependencies(config: CellConfig) -> list[str]:
    """Cell ids a cell must wait for: its init_from cell and the cells of a search it selects from."""
    deps = [config.init_from] if config.init_from else []
    if config.select:
        deps += config.select.cells
    return deps


def select_value(select: SearchChoice, summaries: dict) -> object:
    """The search stage's winner: the value of `select.param` with the best mean `select.metric`
    over the search cells that finished (ties go to the first value listed)."""
    scores: dict = {}
    for cid, value in zip(select.cells, select.values):
        summary = summaries[cid]
        if summary and summary["status"] == "done" and summary.get(select.metric) is not None:
            scores.setdefault(value, []).append(summary[select.metric])
    if not scores:
        raise RuntimeError(f"no cell of the search over {select.param} finished: nothing to select")
    return max(scores, key=lambda v: sum(scores[v]) / len(scores[v]))


def await_cells(board, cell_ids: list[str]) -> dict:
    """The summaries of these cells, once every one has finished."""
    import ray

    summaries = ray.get(board.get.remote(cell_ids, BOARD_WAIT_SECONDS))
    while any(s is None for s in summaries.values()):
        summaries = ray.get(board.get.remote(cell_ids, BOARD_WAIT_SECONDS))
    return summaries


def parent_weights(parent_id: str, summary: dict) -> str:
    """The weights file of the finished cell a cell starts from; RuntimeError when it did not end done."""
    from amod_bench.train import CHECKPOINT_WEIGHTS

    if summary["status"] != "done" or not summary.get("checkpoint"):
        raise RuntimeError(f"cannot start: {parent_id}, whose checkpoint this cell starts from, "
                           f"ended {summary['status']}")
    return os.path.join(summary["checkpoint"], CHECKPOINT_WEIGHTS)


class ParentWeights:
    """`init_weights` of a prestarted cell (resources.prestart): called in the cell's workers once
    they are up, it waits for the parent cell to finish and returns its weights file."""

    def __init__(self, board, parent_id: str):
        self.board, self.parent_id = board, parent_id

    def __call__(self) -> str:
        return parent_weights(self.parent_id, await_cells(self.board, [self.parent_id])[self.parent_id])


def resolved_inputs(config: CellConfig, summaries: dict) -> dict:
    """What is known only once the dependencies have finished, as plain data (Tune reports it and
    config.json records it): `init_weights` ("timm", a local file, or the parent cell's weights)
    and `picked` (a search's pick: {param: value}, or empty)."""
    init_weights = config.pretrained_path or config.pretrained
    if config.init_from:
        init_weights = parent_weights(config.init_from, summaries[config.init_from])
    picked = {config.select.param: select_value(config.select, summaries)} if config.select else {}
    return {"init_weights": init_weights, "picked": picked}
