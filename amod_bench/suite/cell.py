"""A cell: one training run, with its resolved configuration typed and frozen.

`CellConfig` is what the suite knows before anything runs. What is known only at run time
(the initial weights, a search's pick, the per-cell costs) travels beside it in the runner,
never patched into it. `to_json()` is the flat `config.json` form the report reads and the id
hash covers (docs/ARCHITECTURE.md, "Results layout").
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .schema import Recipe, Resources, RoutedLayers, Targets


@dataclass(frozen=True)
class SearchChoice:
    """A `select` stage's link to its search: the cells it chooses among, resolved at run time."""

    stage: str  # the search stage
    param: str  # the recipe field taken from the winner (lr)
    by: tuple[str, ...]  # config keys that group the search's cells (one winner per group)
    metric: str  # summary.json key maximised over the group (mean over its seeds)
    cells: tuple[str, ...]  # ids of the search cells of this cell's group
    values: tuple[Any, ...]  # their `param` values, in the same order


@dataclass(frozen=True)
class CellConfig:
    id: str  # readable prefix + 8-hex hash of the flat form's hashed keys (expand.cell_id)
    suite: str
    stage: str
    model: str  # amod_bench.models name
    router: str  # amod_bench.routers.traits name
    capacity: float  # fraction of tokens a routed block keeps (1.0 for routers that ignore it)
    routed_layers: RoutedLayers
    cls_policy: str
    dataset: str  # as written in the suite (bundled:<name>, a folder, a URL, a spec file)
    dataset_path: str  # `dataset` resolved against the suite's working directory
    seed: int
    recipe: Recipe  # a `select` stage's searched field is None here: the runner picks it
    pretrained: str | None  # null | "timm" | a checkpoint file as written
    pretrained_path: str | None  # that file, resolved
    router_options: dict[str, Any]  # build_model(**options) for this router
    init_from: str | None  # id of the cell whose final checkpoint this one starts from
    select: SearchChoice | None
    targets: Targets
    resources: Resources
    output: str  # results/<suite>
    storage: str  # Ray storage path or URI
    axes: tuple[str, ...] = ()  # the stage's grid axes: the keys on which its cells may differ

    def to_json(self) -> dict[str, Any]:
        """The flat config.json form: CONFIG_KEYS order, recipe fields inline, tuples as lists,
        `augment` with only the keys the suite set."""
        recipe = {**dataclasses.asdict(self.recipe), "augment": self.recipe.augment.chosen()}
        flat = {
            "id": self.id, "suite": self.suite, "stage": self.stage, "model": self.model,
            "router": self.router, "capacity": self.capacity, "routed_layers": self.routed_layers,
            "cls_policy": self.cls_policy, "dataset": self.dataset, "dataset_path": self.dataset_path,
            "seed": self.seed, **recipe, "pretrained": self.pretrained,
            "pretrained_path": self.pretrained_path, "router_options": self.router_options,
            "init_from": self.init_from,
            "select": None if self.select is None else dataclasses.asdict(self.select),
            "targets": dataclasses.asdict(self.targets), "resources": dataclasses.asdict(self.resources),
            "output": self.output, "storage": self.storage, "axes": self.axes,
        }
        return jsonable(flat)


@dataclass(frozen=True)
class Cell:
    id: str  # = config.id
    stage: str  # the stage the cell belongs to
    config: CellConfig


def jsonable(value: Any) -> Any:
    """Tuples as lists, recursively: the JSON form that ids hash and config.json stores."""
    if isinstance(value, (tuple, list)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value
