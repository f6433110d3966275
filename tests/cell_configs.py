"""Cells built in code for the runner's unit tests: a valid CellConfig with only the fields a test names changed."""
import dataclasses

from amod_bench.suite import Cell, CellConfig, Recipe, Resources, Targets

BASE = CellConfig(id="x", suite="s", stage="s", model="vit_nano_patch7_28", router="dense", capacity=1.0,
                  routed_layers="every_other", cls_policy="compete", dataset="bundled:digits",
                  dataset_path="bundled:digits", seed=0, recipe=Recipe(), pretrained=None, pretrained_path=None,
                  router_options={}, init_from=None, select=None, targets=Targets(), resources=Resources(),
                  output="results/s", storage="results/s/ray")


def cell(cell_id: str, stage: str | None = None, **fields) -> Cell:
    """A cell `cell_id` of `stage` (default: the id's first part)."""
    stage = stage or cell_id.split("-")[0]
    return Cell(cell_id, stage, dataclasses.replace(BASE, id=cell_id, stage=stage, **fields))
