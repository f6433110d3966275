"""Suite files: one YAML is one study; `expand` turns it into a list of training cells.

A suite is a list of *stages* run in file order. Each stage is a grid of cells (the
product of its axes, minus `exclude` rules, plus `include` cells); a cell is one
training run, described by a flat, fully resolved `Cell.config` dict that the
runner hands to the training loop and writes to `results/<suite>/cells/<id>/config.json`.

    suite = load_suite("suites/deit.yaml")   # parse + validate; SuiteError lists ALL problems
    cells = expand(suite)                     # pure: list[Cell] in stage order

`python bench.py plan SUITE` prints the grid without running it (amod_bench.plan).

Full example (every field shown; most have defaults and can be left out)::

    name: deit-transfer                 # required; [A-Za-z0-9._-]; names results/<name>
    description: A-MoD vs MoD on DeiT   # free text, shown by plan
    output: results/deit-transfer       # default results/<name>; relative to the working directory
    storage: null                       # Ray storage for checkpoints; default <output>/ray; may be a URI (s3://...)
    max_concurrent: 4                   # cells at once over the whole suite (one Tune run); capped to how many of the smallest cell the cluster holds (a bigger cell waits for its workers)
    targets:                            # the report's two convergence rules
      within_peak_pct: 2.0              # epochs to get within this many points (%) of the run's own peak
      top1: null                        # common target top-1 (%); null = the report's --common-target rule
    analyses: [importance]              # after the cells, `bench.py analyze NAME` on their checkpoints (default none)
    max_cells: 10000                    # refuse a bigger grid product (a typo'd list); null = no limit (--allow-large-grid)

    defaults:                           # shared by every stage; a stage's own mappings merge over it key by key
      grid:
        model: deit_tiny_patch16_224
        dataset: bundled:digits         # bundled:<name>, a shards folder (relative = working directory), URL or spec .yaml
        seed: [0, 1, 2]
      recipe:
        optimizer: adamw
        epochs: 100
      resources:
        workers: 1                      # Ray Train workers per cell; batch_size is split across them
        cpus_per_worker: 4
        gpus_per_worker: 1
        max_failures: 2                 # worker-group restarts from the last checkpoint
        checkpoints_to_keep: 1
        data_cache_mb: 256              # small splits stay in RAM per worker (0: stream every epoch)
        prestart: false                 # true: an init_from cell's workers start (and wait) once its parent trains
      router_options:                   # router -> build_model(**options), for that router's cells only
        mod_tanh: {alpha: 0.1}
        amod: {score_impl: explicit}
      pretrained: timm                  # null | timm | path of a local checkpoint file

    stages:
      - name: search                    # lr search, selected on the held-out split
        grid:
          router: [dense, isoflop, amod, mod, mod_tanh]
          capacity: [0.125, 0.5, 0.7]
          lr: [1.0e-5, 1e-4]            # any recipe field can be a list axis (1e-4 reads as a number)
          seed: 0
        recipe: {eval_split: heldout, epochs: 20}

      - name: main
        grid:
          router: [dense, isoflop, amod, mod, mod_tanh]
          capacity: [0.125, 0.5]
          routed_layers: every_other    # every_other (blocks 1, 3, .., L-1) | last:K | [1, 5, 9] (one spec)
          cls_policy: [compete, keep]
        exclude:                        # drop every grid cell matching ALL keys of one rule
          - {router: [isoflop, mod_tanh], cls_policy: keep}
        include:                        # extra cells; axes not named take every grid value
          - {router: amod, capacity: 0.7, cls_policy: compete}
        ignore:                         # router -> axes it does not depend on (merged over the default)
          dense: [capacity, routed_layers, cls_policy]
          isoflop: [cls_policy]
        select:                         # lr from `search`: the best of its cells equal on `by`
          stage: search
          param: lr
          by: [model, router, capacity, dataset]
          metric: best_top1             # best_top1 | final_top1 | best_top5, mean over the group's seeds
        recipe:
          warmup_epochs: 5
          eval_every: 0.5               # epochs; the resolution of "epochs to target"
          label_smoothing: 0.1
          augment: {scale: [0.08, 1.0], hflip: true}

      - name: transfer
        init_from:                      # start from the checkpoint of the one matching `main` cell
          stage: main
          match: [model, router, capacity, cls_policy, seed]
        pretrained: null                # the init_from checkpoint replaces it (both set is an error)
        grid:
          router: [dense, amod, mod]
          capacity: 0.5
          cls_policy: compete
          dataset: [/data/cars-shards, /data/pets-shards]
        recipe: {optimizer: sgd, lr: 0.01, momentum: 0.9, weight_decay: 0.0, batch_size: 64, epochs: 200}

Recipe fields (defaults in `Recipe`): optimizer (adamw | sgd), lr, momentum, weight_decay,
schedule (cosine | constant, after a linear warm-up), warmup_epochs, epochs, batch_size
(global), label_smoothing, grad_clip, drop_path, eval_every, eval_split (val | heldout),
img_size, augment {scale, ratio, hflip, color_jitter, trivial_augment, random_erasing,
interpolation; unset = the dataset's default}, num_loader_workers, on_error (raise | skip).

Rules:

* **Merging.** Built-in defaults < `defaults` < the stage. Mappings (`grid`, `recipe`,
  `recipe.augment`, `resources`, `router_options`, `ignore`) merge key by key;
  scalars and lists replace. `name`, `exclude`, `include`, `init_from` and `select`
  belong to a stage only.
* **Grid.** Axes: `model`, `router`, `dataset` (required), `capacity` (required unless
  every router ignores it), `routed_layers` (default `every_other`), `cls_policy`
  (default `compete`), `seed` (default 0), and any `recipe` field. A scalar is a
  one-value axis. For `routed_layers` a flat list of ints is ONE spec; a list of
  specs (`[every_other, [1, 3]]`) is an axis. A recipe field given as a grid axis
  wins over the same field in `recipe`. Order of the product (and of the plan):
  model, dataset, router, capacity, routed_layers, cls_policy, recipe axes, seed.
* **exclude / include.** `exclude` rules apply to the grid product only (before
  `ignore`), and a rule that matches no grid cell is an error (it is a typo).
  `include` items are small grids of their own: each names some axes (scalar or
  list) and takes every grid value for the axes it does not name; they are not
  subject to `exclude`. An include cell that duplicates any other cell is an error.
* **ignore.** `ignore: {router: [axes]}` sets those axes to their default for that
  router (capacity 1.0, routed_layers every_other, cls_policy compete: values every
  builder accepts) and grid cells that became identical collapse into one,
  silently. Only `capacity`, `routed_layers` and `cls_policy` can be ignored.
  Default: `{dense: [capacity, routed_layers, cls_policy]}`. `isoflop` is not in
  it: its depth is chosen to match the routed model's FLOPs at that capacity and
  those routed layers, so it depends on both.
* **init_from.** `init_from: STAGE` or `{stage, match}`: each cell starts from the
  final checkpoint of the one cell of the earlier stage STAGE that equals it on
  every key of `match` (default `[model]`); zero or several such cells is an error.
  `Cell.config["init_from"]` is that cell's id.
* **select.** `select: STAGE` or `{stage, param, by, metric}`: `param` (default `lr`,
  a grid axis of STAGE) is taken at run time from the cells of STAGE equal to this
  cell on `by`: the value whose cells have the best mean `metric`. STAGE must be
  earlier and evaluate on `heldout` (selection never sees `val`). `expand` sets
  `param` to None and leaves the marker `Cell.config["select"] = {stage, param, by,
  metric, cells, values}` (the candidate cell ids and their values); `plan` shows
  "from STAGE".
* **Paths.** Relative dataset, checkpoint and output paths resolve against the
  working directory at load time (where `bench.py` runs) and are stored absolute,
  because Ray workers chdir. `bench.py run` refuses a suite whose datasets or
  checkpoint files are missing; `plan` only warns.
* **Overrides.** `load_suite(path, overrides=["defaults.recipe.epochs=1",
  "stages.search.grid.seed=[0,1]"])` (`--set`): dotted keys, stages by name or index,
  values parsed as YAML, applied before validation. A `defaults` override that every
  stage sets itself would change nothing and is refused, naming those stages.
* **Limits.** A suite file is at most 1 MiB of UTF-8, nested at most 64 levels deep, and
  at most 100,000 nodes with every alias expanded (an alias bomb is refused, not
  walked). A grid product (before exclude and ignore) above `max_cells` (10,000) is
  refused before any cell is built; `bench.py plan|run --allow-large-grid` lifts it.

`Cell.config` keys (flat; CONFIG_KEYS): id, suite, stage, model, router, capacity,
routed_layers, cls_policy, dataset (as written), dataset_path (what amod_bench.data
opens: bundled specs and URLs as written, folders absolute), seed, every recipe field
(augment holds only the keys the suite sets), pretrained (as written), pretrained_path
(absolute, or null), router_options (this cell's router only), init_from (a cell id or
null), select (the marker or null), targets, resources, output, storage. The runner adds
derived figures (params, gmacs, ...) from amod_bench.costs.

Cell id: `<stage>-<model>-<router>-c<capacity>-<dataset>-s<seed>[-<tags>]-<hash8>`,
e.g. `main-deit_tiny_patch16_224-amod-c0.5-digits-s0-4f3a9c1e` (`<dataset>`: the
bundled name or the folder's base name; dense cells read `c1`). Tags name the
recipe axes of the stage (`lr0.0001`) and a non-default routed_layers (`rl-last_4`)
or cls_policy (`cls-keep`); characters outside [A-Za-z0-9._-] become `_`. `hash8` is the first 8 hex digits of the
SHA-256 of the canonical JSON (sorted keys, no spaces) of the cell config WITHOUT
`id`, `suite`, `targets`, `resources`, `output`, `storage`, `dataset_path` and
`pretrained_path`: the same study on another cluster, in a renamed suite, with
other convergence targets or on another machine (datasets and checkpoints are
hashed as written, their absolute paths are stored beside them) keeps its ids,
while any change that alters training (a recipe value, the init_from cell, the
select rule) gives a new id.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import yaml

__all__ = [
    "Augment", "Cell", "Grid", "InitFrom", "Recipe", "Resources", "Select", "Stage", "Suite",
    "SuiteError", "Targets", "expand", "load_suite", "parse_override",
]

# ---------------------------------------------------------------------------------------
# Schema. Each field's trailing comment gives its unit or the reason for its default.
# `metadata={"check": fn}` validates a value (fn returns an error message or None).


def _check(fn, message: str) -> dict:
    return {"check": lambda v: None if v is None or fn(v) else message}


_POSITIVE = _check(lambda v: v > 0, "must be > 0")
_NON_NEGATIVE = _check(lambda v: v >= 0, "must be >= 0")
_FRACTION = _check(lambda v: 0 <= v < 1, "must be in [0, 1)")
_NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_NAME = _check(lambda v: bool(_NAME_RE.match(v)), "must be a non-empty name of letters, digits, '.', '_' or '-'")


_AT_LEAST_1 = _check(lambda v: v >= 1, "must be >= 1")
_PERCENT = _check(lambda v: 0 < v <= 100, "must be in (0, 100]")
_PROBABILITY = _check(lambda v: 0 <= v <= 1, "must be a probability in [0, 1]")
_AREA = _check(lambda v: 0 < v[0] <= v[1] <= 1, "must be [lo, hi] with 0 < lo <= hi <= 1")
_RANGE = _check(lambda v: 0 < v[0] <= v[1], "must be [lo, hi] with 0 < lo <= hi")
_GPUS = _check(lambda v: v >= 0 and (v <= 1 or float(v).is_integer()),
               "must be 0, a fraction in (0, 1] or a whole number")
_FAILURES = _check(lambda v: v >= -1, "must be >= -1 (-1 = unlimited)")


@dataclass(frozen=True)
class Targets:
    within_peak_pct: float = field(default=2.0, metadata=_POSITIVE)  # points (%) below the run's own peak: the paper's rule
    top1: float | None = field(default=None, metadata=_PERCENT)  # common target top-1 (%); null = dense median


@dataclass(frozen=True)
class Augment:
    """Training augmentation (amod_bench.data.transforms). Every field defaults to null = the
    dataset manifest's default (the bundled digit sets: no flip, scale [0.6, 1]), else timm's."""

    scale: tuple[float, float] | None = field(default=None, metadata=_AREA)  # RandomResizedCrop area fraction
    ratio: tuple[float, float] | None = field(default=None, metadata=_RANGE)  # RandomResizedCrop aspect ratio
    hflip: bool | None = None  # random horizontal flip (p = 0.5)
    color_jitter: float | tuple[float, ...] | None = None  # brightness/contrast/saturation(/hue); 0 = off
    trivial_augment: bool | None = None  # TrivialAugmentWide after the crop
    random_erasing: float | None = field(default=None, metadata=_PROBABILITY)  # RandomErasing probability
    interpolation: Literal["bilinear", "bicubic", "nearest"] | None = None  # resize interpolation


@dataclass(frozen=True)
class Recipe:
    optimizer: Literal["adamw", "sgd"] = "adamw"  # paper: AdamW for ImageNet fine-tuning, SGD for transfer
    lr: float = field(default=1e-4, metadata=_POSITIVE)  # peak learning rate (after warm-up) for the global batch
    momentum: float = field(default=0.9, metadata=_FRACTION)  # SGD momentum (AdamW ignores it)
    weight_decay: float = field(default=0.05, metadata=_NON_NEGATIVE)  # paper silent; DeiT's 0.05; none on norms/biases
    schedule: Literal["cosine", "constant"] = "cosine"  # after the linear warm-up; paper: cosine
    warmup_epochs: float = field(default=0.0, metadata=_NON_NEGATIVE)  # linear warm-up length, epochs (< epochs)
    epochs: float = field(default=10.0, metadata=_POSITIVE)  # training length; fractional allowed for smoke suites
    batch_size: int = field(default=128, metadata=_POSITIVE)  # GLOBAL batch, split evenly across workers (paper: 128 / 64)
    label_smoothing: float = field(default=0.0, metadata=_FRACTION)  # cross-entropy label smoothing
    grad_clip: float | None = field(default=None, metadata=_POSITIVE)  # max global grad L2 norm; null = no clipping
    drop_path: float = field(default=0.0, metadata=_FRACTION)  # stochastic depth rate (paper silent)
    eval_every: float = field(default=1.0, metadata=_POSITIVE)  # epochs between evaluations (fractional ok): convergence resolution
    eval_split: Literal["val", "heldout"] = "val"  # heldout for search stages, so selection never sees val
    img_size: int | None = field(default=None, metadata=_POSITIVE)  # input resolution, px; null = the model's default
    augment: Augment = field(default_factory=Augment)  # train-time augmentation; config keeps only the keys set
    num_loader_workers: int = field(default=2, metadata=_NON_NEGATIVE)  # DataLoader processes per Ray Train worker
    on_error: Literal["raise", "skip"] = "raise"  # a corrupt sample fails the cell, or is skipped and counted


@dataclass(frozen=True)
class Resources:
    workers: int = field(default=1, metadata=_AT_LEAST_1)  # Ray Train workers (DDP ranks) per cell
    cpus_per_worker: float = field(default=1.0, metadata=_POSITIVE)  # CPU cores reserved per worker (loader processes run there)
    gpus_per_worker: float = field(default=0.0, metadata=_GPUS)  # 0 = CPU; a fraction shares a GPU
    max_failures: int = field(default=0, metadata=_FAILURES)  # restarts from the last checkpoint (FailureConfig)
    checkpoints_to_keep: int | None = field(default=1, metadata=_AT_LEAST_1)  # CheckpointConfig.num_to_keep; null = all
    data_cache_mb: float = field(default=256.0, metadata=_NON_NEGATIVE)  # RAM per worker for each of: eval batches, raw train shards (loader workers 0); 0 = stream
    prestart: bool = False  # an init_from cell starts its workers once its parent trains, not after it ends; they hold their CPUs/GPUs while they wait


@dataclass(frozen=True)
class InitFrom:
    stage: str  # an earlier stage whose cells' final checkpoints seed this stage
    match: tuple[str, ...] = ("model",)  # config keys the source cell must share; exactly one cell may match


@dataclass(frozen=True)
class Select:
    stage: str  # an earlier search stage that evaluates on `heldout`
    param: str = "lr"  # the recipe field taken from the search (a grid axis of that stage)
    by: tuple[str, ...] = ("model", "router", "capacity", "routed_layers", "cls_policy", "dataset")  # one winner per group of these keys
    metric: Literal["best_top1", "final_top1", "best_top5"] = "best_top1"  # summary.json key, maximised (mean over the group's seeds)


RoutedLayers = Union[str, tuple[int, ...]]
ROUTED_LAYERS_RE = re.compile(r"^(every_other|last:[1-9][0-9]*)$")  # amod_bench.routers.layout's string specs
CLS_POLICIES = ("compete", "keep")  # = amod_bench.routers.layout.CLS_POLICIES (kept here: no torch at import)
# axis -> the value it takes for a router that ignores it: the defaults, so every config stays buildable
IGNORABLE_AXES = {"capacity": 1.0, "routed_layers": "every_other", "cls_policy": "compete"}
DEFAULT_IGNORE = {"dense": ("capacity", "routed_layers", "cls_policy")}  # dense runs every token in every block


@dataclass(frozen=True)
class Grid:
    model: tuple[str, ...]  # names from amod_bench.models.list_models()
    router: tuple[str, ...]  # names from amod_bench.routers.list_routers()
    dataset: tuple[str, ...]  # bundled:<name> or a shards folder, as written (hashed as written)
    capacity: tuple[float | None, ...] = (None,)  # fraction of tokens a routed block keeps, in (0, 1]; None = not given
    routed_layers: tuple[RoutedLayers, ...] = ("every_other",)  # which blocks route (paper: 1, 3, .., L-1)
    cls_policy: tuple[str, ...] = ("compete",)  # see CLS_POLICIES; the paper's equation: compete
    seed: tuple[int, ...] = (0,)  # torch seed of the cell (init of new parameters, data order)
    recipe: dict[str, tuple] = field(default_factory=dict)  # recipe field -> values, the extra axes

    def axes(self) -> dict[str, tuple]:
        """Axis name -> values, in product order."""
        return {"model": self.model, "dataset": self.dataset, "router": self.router,
                "capacity": self.capacity, "routed_layers": self.routed_layers,
                "cls_policy": self.cls_policy, **self.recipe, "seed": self.seed}


STANDARD_AXES = ("model", "dataset", "router", "capacity", "routed_layers", "cls_policy", "seed")
RECIPE_FIELDS = tuple(f.name for f in dataclasses.fields(Recipe))


@dataclass(frozen=True)
class Stage:
    name: str = field(metadata=_NAME)  # unique within the suite; the first part of every cell id
    grid: Grid  # the axes; see Grid
    exclude: tuple[dict, ...] = ()  # rules {axis: value or [values]}; a grid cell matching all keys of one is dropped
    include: tuple[dict, ...] = ()  # extra cells {axis: value or [values]}; unnamed axes take every grid value
    ignore: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_IGNORE))  # router -> axes it ignores
    router_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # router -> build_model(**options)
    pretrained: str | None = None  # null | "timm" | local checkpoint file (as written)
    init_from: InitFrom | None = None  # start each cell from an earlier stage's matching cell
    select: Select | None = None  # take fields (lr) from an earlier search stage at run time
    recipe: Recipe = field(default_factory=Recipe)  # the training recipe
    resources: Resources = field(default_factory=Resources)  # per-cell cluster resources; not part of the id
    where: dict = field(default_factory=dict, repr=False, compare=False)  # dotted key -> (path, file, line), for messages


# A typo'd axis list can make millions of cells (gigabytes and minutes to plan): a larger
# grid product is refused unless the suite raises max_cells (or --allow-large-grid lifts it)
MAX_CELLS = 10_000


@dataclass(frozen=True)
class Suite:
    name: str = field(metadata=_NAME)  # results/<name>; not part of cell ids (renaming keeps them)
    stages: tuple[Stage, ...]  # run in file order; a stage may depend only on earlier ones
    description: str = ""  # free text
    output: str | None = None  # results folder; default results/<name>; absolute after load_suite
    storage: str | None = None  # Ray storage path or URI; default <output>/ray; absolute after load_suite
    max_concurrent: int = field(default=1, metadata=_AT_LEAST_1)  # cells at once, whole suite; capped as in the module docstring
    targets: Targets = field(default_factory=Targets)  # convergence targets for the report
    analyses: tuple[Literal["importance"], ...] = ()  # run after the cells, before the report (bench.py analyze)
    max_cells: int | None = field(default=MAX_CELLS, metadata=_AT_LEAST_1)  # refuse a larger grid product; null = no limit
    source: str = ""  # the suite file, for messages and the results copy
    base_dir: str = ""  # the working directory at load time: relative paths resolve here
    where: dict = field(default_factory=dict, repr=False, compare=False)  # dotted key -> (path, file, line)


@dataclass(frozen=True)
class Cell:
    id: str  # readable prefix + 8-hex config hash (module docstring)
    stage: str  # the stage the cell belongs to
    config: dict  # flat resolved config (keys: CONFIG_KEYS)


CONFIG_KEYS = (
    "id", "suite", "stage", "model", "router", "capacity", "routed_layers", "cls_policy",
    "dataset", "dataset_path", "seed", *RECIPE_FIELDS, "pretrained", "pretrained_path",
    "router_options", "init_from", "select", "targets", "resources", "output", "storage",
)
# Keys left out of the id hash: bookkeeping, cluster and machine specifics, report-only settings.
UNHASHED_KEYS = ("id", "suite", "targets", "resources", "output", "storage", "dataset_path", "pretrained_path")


# ---------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    path: str  # dotted field path, e.g. stages[1].recipe.lr
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.path}: {self.message}"


class SuiteError(ValueError):
    """An invalid suite. `problems` lists every problem found, in file order."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        lines = (str(p).replace("\n", "\n      ") for p in problems)  # a message's own lines stay indented
        super().__init__(f"invalid suite ({count}):\n" + "\n".join(f"  {line}" for line in lines))


def _hint(value: Any, allowed) -> str:
    """' (allowed: a, b; did you mean 'x'?)'"""
    allowed = [str(a) for a in allowed]
    shown = ", ".join(allowed[:24]) + (f", ... ({len(allowed)} in all)" if len(allowed) > 24 else "")
    close = difflib.get_close_matches(str(value), allowed, n=1, cutoff=0.6)
    return f" (allowed: {shown}" + (f"; did you mean '{close[0]}'?" if close else "") + ")"


class _Errors:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, where: tuple[str, str, int], message: str) -> None:
        path, file, line = where
        problem = Problem(file, line, path, message)
        if problem not in self.problems:  # a defaults value is checked once per stage
            self.problems.append(problem)

    def raise_if_any(self) -> None:
        if self.problems:
            self.problems.sort(key=lambda p: (p.file == "--set", p.file, p.line))  # stable: same line keeps order
            raise SuiteError(self.problems)


# ---------------------------------------------------------------------------------------
# YAML with line numbers. Containers remember where each key / item was written.


class _Map(dict):
    """A mapping from YAML; `where[key]` = (path, file, line) of the key."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.here: tuple[str, str, int] = ("(top level)", "", 1)
        self.where: dict[Any, tuple[str, str, int]] = {}

    def at(self, key) -> tuple[str, str, int]:
        return self.where.get(key, (_join(self.here[0], key),) + self.here[1:])


class _Seq(list):
    """A sequence from YAML; `where[i]` = (path, file, line) of item i."""

    def __init__(self, *args):
        super().__init__(*args)
        self.here: tuple[str, str, int] = ("(top level)", "", 1)
        self.where: list[tuple[str, str, int]] = []

    def at(self, index: int) -> tuple[str, str, int]:
        return self.where[index] if index < len(self.where) else (f"{self.here[0]}[{index}]",) + self.here[1:]


def _join(path: str, key) -> str:
    return str(key) if path in ("", "(top level)") else f"{path}.{key}"


# Bounds on what one suite file may make the loader do. An alias is cheap to write and is
# walked once per use (line annotation, merging, validation), so 9 levels of 9 aliases
# (300 bytes) would expand to 9^9 nodes: the budget counts nodes as expanded. The largest
# shipped suite has under 200 expanded nodes and 7 levels of nesting.
MAX_SUITE_BYTES = 1 << 20
MAX_NODES = 100_000  # expanded: an alias counts as a copy of what it refers to
MAX_DEPTH = 64  # well inside Python's recursion limit, which the composer would hit first


class _Loader(yaml.SafeLoader):
    """SafeLoader that records line numbers and reports duplicate keys; `1e-5` is a float.

    Composition is bounded (MAX_DEPTH, MAX_NODES): a node's expanded size is known once
    its children are composed, so an alias bomb is refused before anything walks it."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self.depth = 0
        self.sizes: dict[int, int] = {}  # id(node) -> expanded node count (nodes live while composing)

    def compose_node(self, parent, index):
        mark = self.peek_event().start_mark
        alias = self.check_event(yaml.AliasEvent)
        if self.depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
        self.depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        if alias:  # the anchored node itself: sized already, unless the alias sits inside it
            if id(node) not in self.sizes:
                raise yaml.composer.ComposerError(None, None, "an alias refers to a node that contains it", mark)
            return node
        children = node.value if isinstance(node, yaml.SequenceNode) else \
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else []
        size = 1 + sum(self.sizes[id(child)] for child in children)
        if size > MAX_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"more than {MAX_NODES:,} nodes once its aliases are expanded "
                            "(each use of an alias counts as a copy; is this an alias bomb?)", mark)
        self.sizes[id(node)] = size
        return node


# YAML 1.1 (PyYAML) reads 1e-5 as a string; every suite writes learning rates that way.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)  # merge keys (<<: *anchor)
    out = _Map()
    out.here = ("", loader.source, node.start_mark.line + 1)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, typing.Hashable):
            loader.problems.append((out, "?", line, f"a mapping key must be a scalar, got {_show(key)}"))
            continue
        if key in out:  # PyYAML keeps the last silently; a suite must not
            loader.problems.append((out, key, line, f"duplicate key '{key}' (first on line {out.where[key][2]})"))
        out[key] = loader.construct_object(value_node, deep=True)
        out.where[key] = ("", loader.source, line)
    return out


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> _Seq:
    out = _Seq(loader.construct_object(item, deep=True) for item in node.value)
    out.here = ("", loader.source, node.start_mark.line + 1)
    out.where = [("", loader.source, item.start_mark.line + 1) for item in node.value]
    return out


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def _annotate(node: Any, path: str) -> None:
    """Fill in the dotted paths the loader could not know."""
    if isinstance(node, _Map):
        node.here = (path,) + node.here[1:]
        for key, value in node.items():
            sub = _join(path, key)
            node.where[key] = (sub,) + node.where[key][1:]
            _annotate(value, sub)
    elif isinstance(node, _Seq):
        node.here = (path,) + node.here[1:]
        for i, value in enumerate(node):
            node.where[i] = (f"{path}[{i}]",) + node.where[i][1:]
            _annotate(value, f"{path}[{i}]")


def _parse_yaml(text: str, source: str, errors: _Errors, path: str = "(top level)") -> Any:
    loader = _Loader(text)
    loader.source = source
    loader.problems = []
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        what = " ".join(str(s) for s in (exc.context, exc.problem) if s)
        errors.add((path, source, line), f"malformed YAML: {what}")
        return None
    except yaml.YAMLError as exc:
        errors.add((path, source, 1), f"malformed YAML: {exc}")
        return None
    finally:
        loader.dispose()
    _annotate(data, path)
    for mapping, key, line, message in loader.problems:
        errors.add((_join(mapping.here[0], key), source, line), message)
    return data


def _merge(base: Any, over: Any) -> Any:
    """Mappings merge key by key (recursively); anything else in `over` replaces."""
    if not (isinstance(base, _Map) and isinstance(over, _Map)):
        return over
    out = _Map(base)
    out.here, out.where = over.here, dict(base.where)
    for key, value in over.items():
        out[key] = _merge(base[key], value) if key in base else value
        out.where[key] = over.where[key]
    return out


# ---------------------------------------------------------------------------------------
# Typed construction of dataclasses from _Map, collecting every problem.

_BAD = object()


def _type_name(tp) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    if tp in names:
        return names[tp]
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return "a list"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a mapping"
    return str(tp)


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return ("a mapping" if isinstance(value, dict) else "a list") if value else \
            ("an empty mapping" if isinstance(value, dict) else "an empty list")
    return f"{type(value).__name__} {value!r}"


def _coerce(value: Any, tp, where, errors: _Errors) -> Any:
    """Check `value` against the annotation `tp`; return it normalised, or _BAD."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            result = _coerce(value, options[0], where, _Errors() if value is None else errors)
            if result is _BAD and value is None:
                errors.add(where, f"expected {_type_name(tp)}, got null")
            return result
        for option in options:  # first that fits, silently
            result = _coerce(value, option, where, _Errors())
            if result is not _BAD:
                return result
        errors.add(where, f"expected {_type_name(tp)}, got {_show(value)}")
        return _BAD
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        errors.add(where, f"unknown value {_show(value)}" + _hint(value, args))
        return _BAD
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, _Map):
            errors.add(where, f"expected a mapping, got {_show(value)}")
            return _BAD
        return _build_obj(tp, value, errors)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                errors.add(where, f"expected a finite number, got {value!r}")
                return _BAD
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is tuple:
        if isinstance(value, list):
            if len(args) == 2 and args[1] is Ellipsis:
                items = [_coerce(v, args[0], _at(value, i, where), errors) for i, v in enumerate(value)]
            elif len(value) == len(args):
                items = [_coerce(v, a, _at(value, i, where), errors) for i, (v, a) in enumerate(zip(value, args))]
            else:
                errors.add(where, f"expected a list of {len(args)} items, got {len(value)}")
                return _BAD
            return _BAD if _BAD in items else tuple(items)
    elif origin is dict:
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                item_where = value.at(key) if isinstance(value, _Map) else where
                if not isinstance(key, str):
                    errors.add(item_where, f"keys must be strings, got {_show(key)}")
                    return _BAD
                out[key] = _coerce(item, args[1], item_where, errors)
            return _BAD if _BAD in out.values() else out
    else:
        raise TypeError(f"suite schema: unsupported annotation {tp}")
    errors.add(where, f"expected {_type_name(tp)}, got {_show(value)}")
    return _BAD


def _at(container, index, fallback):
    return container.at(index) if isinstance(container, (_Map, _Seq)) else fallback


def _unknown_keys(data: _Map, allowed, errors: _Errors, extra: str = "") -> None:
    for key in data:
        if key not in allowed:
            errors.add(data.at(key), f"unknown key{extra}" + _hint(key, allowed))


def _build(cls, data: _Map, errors: _Errors, skip: tuple[str, ...] = (), known: tuple[str, ...] = ()):
    """Keyword arguments for dataclass `cls` from `data`; every problem goes to `errors`.

    A field with a problem is left out (its default then stands in), so that checking can
    go on and report everything at once; `load_suite` raises at the end anyway. Returns
    _BAD only when a required field is missing or wrong. `skip`: fields the caller builds
    itself; `known`: further keys that are not unknown."""
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.name not in skip and f.name != "where"]
    _unknown_keys(data, [f.name for f in fields] + list(known), errors)
    kwargs, ok = {}, True
    for f in fields:
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.name not in data:
            if required:
                errors.add((_join(data.here[0], f.name),) + data.here[1:], "required field is missing")
                ok = False
            continue
        value = _coerce(data[f.name], hints[f.name], data.at(f.name), errors)
        if value is not _BAD and "check" in f.metadata and (message := f.metadata["check"](value)):
            errors.add(data.at(f.name), f"{message}, got {value!r}")
            value = _BAD
        if value is _BAD:
            ok = ok and not required
            continue
        kwargs[f.name] = value
    return kwargs if ok else _BAD


def _build_obj(cls, data: _Map, errors: _Errors):
    kwargs = _build(cls, data, errors)
    return _BAD if kwargs is _BAD else cls(**kwargs)


# ---------------------------------------------------------------------------------------
# Registries (imported lazily: models and routers pull in torch).


class _Registries:
    """Names the suite may use, from the model / router / dataset registries (imported lazily)."""

    def __init__(self) -> None:
        self.models = self._names("amod_bench.models", "list_models")
        self.routers = self._names("amod_bench.routers", "list_routers")
        self.bundled = self._names("amod_bench.data.bundled", "BUNDLED")
        self._options: dict[str, list[str] | None] = {}

    @staticmethod
    def _names(module: str, attribute: str) -> list[str] | None:
        """Sorted names, or None while that module is not written yet (its check is skipped)."""
        import importlib

        try:
            found = getattr(importlib.import_module(module), attribute)
        except ModuleNotFoundError as exc:
            if module.startswith(exc.name or "\0"):
                return None
            raise
        except (ImportError, AttributeError):
            return None
        return sorted(found() if callable(found) else found)

    def router_options(self, router: str) -> list[str] | None:
        """Option names `router` accepts (amod_bench.routers.router_options), or None if unknown."""
        if router not in self._options:
            try:
                from amod_bench.routers import router_options
                self._options[router] = list(router_options(router))
            except (ImportError, ValueError, KeyError):
                self._options[router] = None
        return self._options[router]


def dataset_short_name(spec: str) -> str:
    """`bundled:digits` -> `digits`; a folder -> its base name; a dataset spec file -> its name
    without `.yaml` / `.yml`."""
    if spec.startswith("bundled:"):
        return spec.split(":", 1)[1]
    name = os.path.basename(os.path.normpath(spec))
    return (name.rsplit(".", 1)[0] if name.endswith((".yaml", ".yml")) else name) or "data"


def resolve_path(spec: str, base_dir: str) -> str:
    """A path as written in a suite -> absolute (URIs unchanged)."""
    if "://" in spec:
        return spec
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(spec)))


def dataset_path(spec: str, base_dir: str) -> str:
    """What amod_bench.data opens: `bundled:` specs and URLs as written, folders absolute."""
    if spec.startswith("bundled:") or "://" in spec:
        return spec
    return resolve_path(spec, base_dir)


# ---------------------------------------------------------------------------------------
# Grid axes: parse and check one value of an axis.


def _axis_value(axis: str, value: Any, where, errors: _Errors, reg: _Registries, names: bool = True):
    """Normalise one axis value; `names` also checks model / router names against the registries."""
    if axis in RECIPE_FIELDS:
        f = next(f for f in dataclasses.fields(Recipe) if f.name == axis)
        out = _coerce(value, typing.get_type_hints(Recipe)[axis], where, errors)
        if out is not _BAD and "check" in f.metadata and (message := f.metadata["check"](out)):
            errors.add(where, f"{message}, got {out!r}")
            return _BAD
        if dataclasses.is_dataclass(out):
            out = dataclasses.asdict(out)  # augment as an axis: a dict per value
        return out
    if axis in ("model", "router"):
        if not isinstance(value, str):
            errors.add(where, f"expected a string, got {_show(value)}")
            return _BAD
        known = reg.models if axis == "model" else reg.routers
        if names and known is not None and value not in known:
            errors.add(where, f"unknown {axis} '{value}'" + _hint(value, known))
            return _BAD
        return value
    if axis == "capacity":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            errors.add(where, f"expected a number, got {_show(value)}")
            return _BAD
        if not 0 < value <= 1:
            errors.add(where, f"capacity must be in (0, 1] (fraction of tokens kept), got {value!r}")
            return _BAD
        return float(value)
    if axis == "routed_layers":
        if isinstance(value, str) and ROUTED_LAYERS_RE.match(value.strip()):
            return value.strip()
        if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            if any(v < 0 for v in value) or len(set(value)) != len(value):
                errors.add(where, f"routed_layers block indices must be distinct and >= 0, got {list(value)}")
                return _BAD
            return tuple(sorted(value))
        errors.add(where, f"bad routed_layers spec {_show(value)} (allowed: every_other, last:K, "
                          "or a non-empty list of 0-indexed block numbers)")
        return _BAD
    if axis == "cls_policy":
        if value not in CLS_POLICIES:
            errors.add(where, f"unknown cls_policy {_show(value)}" + _hint(value, CLS_POLICIES))
            return _BAD
        return value
    if axis == "dataset":
        if not isinstance(value, str) or not value.strip():
            errors.add(where, f"expected a dataset spec (bundled:<name> or a folder), got {_show(value)}")
            return _BAD
        if value.startswith("bundled:"):
            name = value.split(":", 1)[1]
            if names and reg.bundled is not None and name not in reg.bundled:
                errors.add(where, f"unknown dataset '{value}'" + _hint(value, [f"bundled:{n}" for n in reg.bundled]))
                return _BAD
        return value
    if axis == "seed":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            errors.add(where, f"seed must be an integer >= 0, got {_show(value)}")
            return _BAD
        return value
    raise KeyError(axis)


def _axis_values(axis: str, raw: Any, where, errors: _Errors, reg: _Registries, names: bool = True) -> tuple | Any:
    """A grid entry (scalar or list) -> tuple of normalised values."""
    one_spec_list = axis == "routed_layers" and isinstance(raw, list) and raw and all(isinstance(v, int) for v in raw)
    if isinstance(raw, list) and not one_spec_list:
        if not raw:
            errors.add(where, "empty list: the grid would have no cells")
            return _BAD
        values = [_axis_value(axis, v, _at(raw, i, where), errors, reg, names) for i, v in enumerate(raw)]
    else:
        values = [_axis_value(axis, raw, where, errors, reg, names)]
    if _BAD in values:
        return _BAD
    return tuple(values)


def _axis_names() -> list[str]:
    return [*STANDARD_AXES, *RECIPE_FIELDS]


def _build_grid(data: Any, where, errors: _Errors, reg: _Registries):
    if not isinstance(data, _Map):
        errors.add(where, f"expected a mapping of axis -> value(s), got {_show(data)}")
        return _BAD
    _unknown_keys(data, _axis_names(), errors, " (grid axes: the standard axes and any recipe field)")
    axes, ok = {}, True
    for axis in _axis_names():
        if axis not in data:
            continue
        values = _axis_values(axis, data[axis], data.at(axis), errors, reg)
        ok &= values is not _BAD
        axes[axis] = values
    for axis in ("model", "router", "dataset"):
        if axis not in data:
            errors.add((_join(data.here[0], axis),) + data.here[1:], "required axis is missing")
            ok = False
    if not ok:
        return _BAD
    recipe = {k: v for k, v in axes.items() if k in RECIPE_FIELDS}
    return Grid(**{k: v for k, v in axes.items() if k in STANDARD_AXES}, recipe=recipe)


def _build_rules(data: Any, where, what: str, errors: _Errors, reg: _Registries) -> tuple[dict, ...] | Any:
    """exclude / include: a list of {axis: value or [values]}; each returned as {axis: tuple}."""
    if data is None:
        return ()
    if not isinstance(data, list):
        errors.add(where, f"expected a list of {{axis: value or [values]}} mappings, got {_show(data)}")
        return _BAD
    rules, ok = [], True
    for i, item in enumerate(data):
        item_where = _at(data, i, where)
        if not isinstance(item, _Map) or not item:
            errors.add(item_where, f"expected a non-empty mapping {{axis: value or [values]}}, got {_show(item)}")
            ok = False
            continue
        _unknown_keys(item, _axis_names(), errors, " (an axis name)")
        rule = {}
        for axis, raw in item.items():
            if axis in _axis_names():
                # exclude values are not checked against the registries: a typo shows as a rule that matches nothing
                values = _axis_values(axis, raw, item.at(axis), errors, reg, names=what == "include")
                ok &= values is not _BAD
                rule[axis] = values
        rules.append(rule)
    return tuple(rules) if ok else _BAD


def _per_router(data: Any, where, errors: _Errors, reg: _Registries, value_kind: str):
    """The (router, value) entries of a `router -> value` mapping whose router is registered;
    None when `data` is not a mapping. Reports each problem; the second item says if all was well."""
    if not isinstance(data, _Map):
        errors.add(where, f"expected a mapping router -> {value_kind}, got {_show(data)}")
        return None, False
    entries, ok = [], True
    for router, value in data.items():
        if reg.routers is not None and router not in reg.routers:
            errors.add(data.at(router), f"unknown router '{router}'" + _hint(router, reg.routers))
            ok = False
        else:
            entries.append((router, value))
    return entries, ok


def _build_ignore(data: Any, where, errors: _Errors, reg: _Registries):
    entries, ok = _per_router(data, where, errors, reg, "[axes]")
    if entries is None:
        return _BAD
    out = {}
    for router, axes in entries:
        if axes is None:
            axes = []
        if isinstance(axes, str):
            axes = [axes]
        if not isinstance(axes, list):
            errors.add(data.at(router), f"expected a list of axes, got {_show(axes)}")
            ok = False
            continue
        for i, axis in enumerate(axes):
            if axis not in IGNORABLE_AXES:
                errors.add(_at(axes, i, data.at(router)), f"cannot ignore axis {_show(axis)}" + _hint(axis, IGNORABLE_AXES))
                ok = False
        out[router] = tuple(axes)
    return out if ok else _BAD


def _build_router_options(data: Any, where, errors: _Errors, reg: _Registries):
    entries, ok = _per_router(data, where, errors, reg, "{option: value}")
    if entries is None:
        return _BAD
    out = {}
    for router, options in entries:
        if options is None:
            options = _Map()
        if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
            errors.add(data.at(router), f"expected a mapping option -> value, got {_show(options)}")
            ok = False
            continue
        accepted = reg.router_options(router)
        if accepted is not None and isinstance(options, _Map):
            for key in options:
                if key not in accepted:
                    errors.add(options.at(key), f"router '{router}' has no option '{key}'"
                               + (_hint(key, accepted) if accepted else " (it takes none)"))
                    ok = False
        out[router] = _plain(options)
    return out if ok else _BAD


def _plain(value: Any) -> Any:
    """_Map/_Seq -> plain dict/list (for configs and JSON)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _build_ref(cls, data: Any, where, errors: _Errors):
    """init_from / select: `STAGE` or a mapping."""
    if isinstance(data, str):
        return cls(stage=data)
    if isinstance(data, _Map):
        fixed = _Map(data)
        fixed.here, fixed.where = data.here, data.where
        for key in ("match", "by"):  # a single key may be written as a scalar
            if isinstance(data.get(key), str):
                fixed[key] = _seq_of(data, key)
        return _build_obj(cls, fixed, errors)
    errors.add(where, f"expected a stage name or a mapping, got {_show(data)}")
    return _BAD


def _seq_of(data: _Map, key) -> _Seq:
    seq = _Seq([data[key]])
    seq.here = data.at(key)
    seq.where = [data.at(key)]
    return seq


# ---------------------------------------------------------------------------------------
# Suite loading

_STAGE_ONLY = ("name", "exclude", "include", "init_from", "select")
_STAGE_KEYS = ("name", "grid", "exclude", "include", "ignore", "router_options", "pretrained",
               "init_from", "select", "recipe", "resources")


def parse_override(text: str) -> tuple[list[str], str]:
    """`a.b.c=value` -> (['a', 'b', 'c'], 'value'). Stages are addressed by index or name."""
    if "=" not in text:
        raise ValueError(f"--set {text!r}: expected KEY.PATH=VALUE")
    key, value = text.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not all(parts):
        raise ValueError(f"--set {text!r}: empty key in {key!r}")
    return parts, value


def _apply_override(root: _Map, index: int, text: str, errors: _Errors) -> None:
    """Set one `KEY.PATH=VALUE` in the parsed tree; problems point at `--set:<index>`."""
    where = (text.split("=", 1)[0], "--set", index)
    try:
        parts, raw = parse_override(text)
    except ValueError as exc:
        errors.add(where, str(exc))
        return
    value_errors = _Errors()
    value = _parse_yaml(raw, "--set", value_errors) if raw.strip() else None
    if value_errors.problems:
        errors.add(where, f"cannot parse the value {raw!r}: {value_errors.problems[0].message}")
        return
    node: Any = root
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, _Seq):  # stages: an index or a stage name
            if part.isdigit() and int(part) < len(node):
                key = int(part)
            else:
                key = next((i for i, item in enumerate(node) if isinstance(item, _Map) and item.get("name") == part),
                           None)
            if key is None:
                errors.add(where, f"no list item '{part}' in {node.here[0]} (use an index or a stage name)")
                return
            path = f"{node.here[0]}[{key}]"
        elif isinstance(node, _Map):
            key, path = part, _join(node.here[0], part)
        else:
            errors.add(where, f"cannot set '{part}': {'.'.join(parts[:depth])} is not a mapping")
            return
        if last:
            node[key] = value
            node.where[key] = (path, "--set", index)
            _annotate(value, path)
            _relocate(value, "--set", index)
            return
        if isinstance(node, _Map) and not isinstance(node.get(key), (_Map, _Seq)):
            child = _Map()  # --set defaults.recipe.lr=.. works without a recipe block in the file
            child.here = (path, "--set", index)
            node[key] = child
            node.where[key] = (path, "--set", index)
        node = node[key]


def _check_shadowed(root: _Map, overrides, errors: _Errors) -> None:
    """Refuse a `defaults.*` override that every stage sets for itself: it would change nothing."""
    stages = root.get("stages")
    if not isinstance(stages, list) or not stages or not all(isinstance(st, _Map) for st in stages):
        return  # reported by the stage checks
    for index, text in enumerate(overrides, start=1):
        try:
            parts, _ = parse_override(text)
        except ValueError:
            continue  # reported by _apply_override
        if parts[0] != "defaults" or len(parts) < 2:
            continue
        value = _lookup(root, parts)
        shadows = [_shadowing(st, parts[1:], value) for st in stages]
        if all(shadows):
            names = [str(st.get("name", f"stages[{i}]")) for i, st in enumerate(stages)]
            sub = ".".join(parts[1:])
            where = ", ".join(f"{name} ({file}:{line})" for name, (_, file, line) in zip(names, shadows))
            errors.add((".".join(parts), "--set", index),
                       f"changes nothing: every stage sets {sub} itself ({where}) and a stage's value wins "
                       f"over defaults; set it per stage instead, e.g. --set stages.{names[0]}.{sub}=...")


def _lookup(node: Any, parts: list[str]) -> Any:
    for part in parts:
        node = node.get(part) if isinstance(node, _Map) else None
    return node


def _shadowing(stage: _Map, parts: list[str], value: Any) -> tuple[str, str, int] | None:
    """Where `stage` replaces every part of defaults.<parts> = value (mappings merge key by key), or None."""
    node: Any = stage
    for part in parts[:-1]:
        if not isinstance(node, _Map) or part not in node:
            return None
        if not isinstance(node[part], _Map):  # a non-mapping replaces the whole defaults block
            return node.at(part)
        node = node[part]
    if not isinstance(node, _Map) or parts[-1] not in node:
        return None
    own = node[parts[-1]]
    if isinstance(value, _Map) and isinstance(own, _Map):  # merged: shadowed only if each key is
        if not all(_shadowing(own, [key], item) for key, item in value.items()):
            return None
    return node.at(parts[-1])


def _relocate(node: Any, file: str, line: int) -> None:
    if isinstance(node, _Map):
        node.here = (node.here[0], file, line)
        node.where = {k: (w[0], file, line) for k, w in node.where.items()}
        for v in node.values():
            _relocate(v, file, line)
    elif isinstance(node, _Seq):
        node.here = (node.here[0], file, line)
        node.where = [(w[0], file, line) for w in node.where]
        for v in node:
            _relocate(v, file, line)


def load_suite(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = (), *,
               check_data: bool = True, base_dir: str | None = None) -> Suite:
    """Parse and validate a suite file; raise SuiteError listing every problem.

    Args:
        path: the YAML file.
        overrides: `KEY.PATH=VALUE` strings (`--set`), applied in order, e.g.
            `defaults.recipe.epochs=1` or `stages.search.grid.seed=[0,1]`.
        check_data: also require every dataset and checkpoint file to exist
            (`bench.py run`); `plan` passes False and only warns.
        base_dir: where relative paths resolve; default the working directory.
    """
    source = os.fspath(path)
    errors = _Errors()
    data = _parse_yaml(_read_text(source), source, errors)
    if data is None and not errors.problems:
        errors.add(("(top level)", source, 1), "empty suite file: expected a mapping with name and stages")
    elif data is not None and not isinstance(data, _Map):
        allowed = [f.name for f in dataclasses.fields(Suite) if f.name not in ("source", "base_dir", "where")]
        errors.add(("(top level)", source, 1), f"expected a mapping of suite fields, got {_show(data)}"
                   + _hint("", allowed + ["defaults"]))
    if not isinstance(data, _Map):
        errors.raise_if_any()
    for i, text_override in enumerate(overrides, start=1):
        _apply_override(data, i, text_override, errors)
    _check_shadowed(data, overrides, errors)
    suite, stage_names = _build_suite(data, source, os.path.abspath(base_dir or os.getcwd()), errors)
    _expand(suite, errors, stage_names)
    if check_data:
        for message, where in missing_inputs(suite):
            errors.add(where, message)
    errors.raise_if_any()
    return suite


def _read_text(source: str) -> str:
    """The suite file as text: at most MAX_SUITE_BYTES of UTF-8, or a SuiteError naming it."""
    def refuse(message: str, line: int = 0) -> typing.NoReturn:
        raise SuiteError([Problem(source, line, "(file)", message)]) from None

    try:
        with open(source, "rb") as f:
            raw = f.read(MAX_SUITE_BYTES + 1)
    except OSError as exc:
        refuse(f"cannot read the suite: {exc.strerror or exc}")
    if len(raw) > MAX_SUITE_BYTES:
        refuse(f"larger than {MAX_SUITE_BYTES >> 20} MiB: not a suite file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        refuse(f"not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r}); a suite is a YAML file",
               raw[:exc.start].count(b"\n") + 1)


def _build_suite(data: _Map, source: str, base_dir: str, errors: _Errors) -> tuple[Suite, list[str]]:
    """The suite from its parsed tree, plus the names of all stages in file order.

    Stages with problems are left out of the returned suite (their problems are in
    `errors`), so that the others can still be expanded and checked."""
    reg = _Registries()
    top = _build(Suite, data, errors, skip=("stages", "source", "base_dir"), known=("stages", "defaults"))
    if top is _BAD:  # keep going with a stand-in, to report the stages' problems too
        name = data.get("name")
        top = {"name": name if isinstance(name, str) and _NAME_RE.match(name) else "suite"}
    defaults = _defaults(data, errors)
    stages_raw = data.get("stages")
    stages: list[Stage] = []
    names: list[str] = []
    if stages_raw is None:
        errors.add(("stages",) + data.here[1:], "required field is missing: a list of stages")
    elif not isinstance(stages_raw, list) or not stages_raw:
        errors.add(data.at("stages"), f"expected a non-empty list of stages, got {_show(stages_raw)}")
    else:
        seen: dict[str, int] = {}
        for i, raw in enumerate(stages_raw):
            if not isinstance(raw, _Map):
                errors.add(stages_raw.at(i), f"expected a stage mapping, got {_show(raw)}")
                continue
            names.append(str(raw.get("name", f"stages[{i}]")))
            stage = _build_stage(_merge(defaults, raw), errors, reg)
            if stage is _BAD:
                continue
            if stage.name in seen:
                errors.add(raw.at("name"), f"duplicate stage name '{stage.name}' (also stages[{seen[stage.name]}])")
                continue
            seen[stage.name] = i
            stages.append(stage)
    output = resolve_path(top.pop("output", None) or os.path.join("results", top["name"]), base_dir)
    storage = top.pop("storage", None)
    storage = resolve_path(storage, base_dir) if storage else os.path.join(output, "ray")
    suite = Suite(**top, output=output, storage=storage, stages=tuple(stages), source=os.path.abspath(source),
                  base_dir=base_dir, where={k: data.at(k) for k in data})
    return suite, names


def _defaults(data: _Map, errors: _Errors) -> _Map:
    """The `defaults` block, keeping only keys a stage may inherit."""
    raw = data.get("defaults")
    if raw is None:
        return _Map()
    if not isinstance(raw, _Map):
        errors.add(data.at("defaults"), f"expected a mapping of stage fields, got {_show(raw)}")
        return _Map()
    allowed = [k for k in _STAGE_KEYS if k not in _STAGE_ONLY]
    out = _Map()
    out.here = raw.here
    for key, value in raw.items():
        if key in _STAGE_ONLY:
            errors.add(raw.at(key), f"'{key}' belongs to a stage, not to defaults")
        elif key not in allowed:
            errors.add(raw.at(key), "unknown key" + _hint(key, allowed))
        else:
            out[key] = value
            out.where[key] = raw.at(key)
    return out


def _build_stage(data: _Map, errors: _Errors, reg: _Registries):
    """One stage from its mapping (defaults already merged in)."""
    simple = _Map({k: v for k, v in data.items() if k in ("name", "pretrained", "recipe", "resources")})
    simple.here, simple.where = data.here, data.where
    custom = ("grid", "exclude", "include", "ignore", "router_options", "init_from", "select")
    _unknown_keys(data, _STAGE_KEYS, errors)
    kwargs = _build(Stage, simple, errors, skip=custom, known=custom)
    ok = kwargs is not _BAD
    kwargs = {} if kwargs is _BAD else kwargs
    if "grid" not in data:
        errors.add((_join(data.here[0], "grid"),) + data.here[1:],
                   "required field is missing (axes model, router, dataset)")
        ok = False
    else:
        kwargs["grid"] = _build_grid(data["grid"], data.at("grid"), errors, reg)
    for key in ("exclude", "include"):
        if key in data:
            kwargs[key] = _build_rules(data[key], data.at(key), key, errors, reg)
    if "ignore" in data:
        ignore = _build_ignore(data["ignore"], data.at("ignore"), errors, reg)
        kwargs["ignore"] = ignore if ignore is _BAD else {**DEFAULT_IGNORE, **ignore}
    if "router_options" in data:
        kwargs["router_options"] = _build_router_options(data["router_options"], data.at("router_options"),
                                                         errors, reg)
    for key, cls in (("init_from", InitFrom), ("select", Select)):
        if data.get(key) is not None:
            kwargs[key] = _build_ref(cls, data[key], data.at(key), errors)
    for key in ("ignore", "router_options", "init_from", "select"):
        if kwargs.get(key) is _BAD:  # reported; check the rest of the stage without it
            del kwargs[key]
    if not ok or any(v is _BAD for v in kwargs.values()):
        return _BAD
    return Stage(**kwargs, where=_where_index(data))


def _where_index(data: _Map) -> dict[str, tuple[str, str, int]]:
    """Dotted key -> where it was written, two levels deep ('' = the stage itself)."""
    where = {"": data.here}
    for key, value in data.items():
        where[key] = data.at(key)
        if isinstance(value, _Map):
            where.update({f"{key}.{k}": value.at(k) for k in value})
        elif isinstance(value, _Seq):
            where.update({f"{key}[{i}]": value.at(i) for i in range(len(value))})
    return where


# ---------------------------------------------------------------------------------------
# Expansion


def expand(suite: Suite) -> list[Cell]:
    """The suite's cells, in stage order then grid order. Pure: no file system access.

    Raises SuiteError for the problems only expansion finds (empty grids, duplicate
    ids, init_from / select that match no cell); `load_suite` has already run this.
    """
    errors = _Errors()
    cells = _expand(suite, errors)
    errors.raise_if_any()
    return cells


def _stage_where(stage: Stage, key: str) -> tuple[str, str, int]:
    while key and key not in stage.where:
        key = key.rsplit(".", 1)[0] if "." in key else ""
    return stage.where.get(key) or stage.where.get("", ("stages", "", 0))


def _matches(cell: dict, rule: dict) -> bool:
    return all(_jsonable(cell[axis]) in [_jsonable(v) for v in values] for axis, values in rule.items())


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ".".join(_format_value(v) for v in value)
    if isinstance(value, dict):
        return "_".join(f"{k}{_format_value(v)}" for k, v in sorted(value.items()))
    return str(value).lower() if isinstance(value, bool) else str(value)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def config_hash(config: dict) -> str:
    """First 8 hex digits of SHA-256 over the canonical JSON of the hashed keys."""
    hashed = {k: v for k, v in config.items() if k not in UNHASHED_KEYS}
    text = json.dumps(_jsonable(hashed), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def cell_id(config: dict, tags: list[str]) -> str:
    capacity = "" if config["capacity"] is None else f"-c{config['capacity']:g}"
    prefix = (f"{config['stage']}-{config['model']}-{config['router']}{capacity}-"
              f"{dataset_short_name(config['dataset'])}-s{config['seed']}")
    parts = [_safe(p) for p in [prefix, *tags]]
    return "-".join(parts) + "-" + config_hash(config)


def _cell_tags(combo: dict, recipe_axes: list[str]) -> list[str]:
    tags = [f"{axis}{_format_value(combo[axis])}" for axis in recipe_axes]
    if combo["routed_layers"] != "every_other":
        tags.append(f"rl-{_format_value(combo['routed_layers'])}")
    if combo["cls_policy"] != "compete":
        tags.append(f"cls-{combo['cls_policy']}")
    return tags


def _apply_ignore(combo: dict, ignore: dict[str, tuple[str, ...]]) -> dict:
    out = dict(combo)
    for axis in ignore.get(combo["router"], ()):
        out[axis] = IGNORABLE_AXES[axis]
    return out


def _expand(suite: Suite, errors: _Errors, stage_names: list[str] | None = None) -> list[Cell]:
    """`stage_names`: every stage in the file, including any left out of `suite` for its problems."""
    cells: list[Cell] = []
    by_stage: dict[str, list[Cell]] = {}
    order = {name: i for i, name in enumerate(stage_names or [s.name for s in suite.stages])}
    size = sum(_grid_size(stage) for stage in suite.stages)
    if suite.max_cells is not None and size > suite.max_cells:  # counted, so a huge grid is never built
        errors.add(suite.where.get("max_cells") or suite.where.get("stages") or ("stages", suite.source, 1),
                   f"the grid has {size:,} cells (before exclude and ignore), more than max_cells "
                   f"({suite.max_cells:,}); if that is meant, set max_cells: {size} in the suite or pass "
                   "--allow-large-grid")
        return cells
    for stage in suite.stages:
        by_stage[stage.name] = _expand_stage(suite, stage, order, by_stage, errors)
        cells.extend(by_stage[stage.name])
    return cells


def _grid_size(stage: Stage) -> int:
    """Cells of the grid product plus the include cells, before exclude and ignore shrink it."""
    axes = stage.grid.axes()
    return sum(math.prod(len(v) for v in sub.values())
               for sub in [axes, *(_include_axes(axes, rule) for rule in stage.include)])


def _include_axes(axes: dict[str, tuple], rule: dict[str, tuple]) -> dict[str, tuple]:
    """An include item's own small grid: the axes it names, every grid value for the others."""
    return {name: rule.get(name, axes.get(name, (None,))) for name in dict.fromkeys([*axes, *rule])}


# config keys a rule (init_from.match, select.by) may compare: everything that describes training
_COMPARABLE = tuple(k for k in CONFIG_KEYS if k not in UNHASHED_KEYS + ("stage", "init_from", "select"))


def _check_refs(suite: Suite, stage: Stage, order: dict[str, int], by_stage: dict[str, list[Cell]],
                errors: _Errors) -> bool:
    """init_from / select point at an earlier stage and name known keys; True if cells can be matched."""
    index = order[stage.name]
    ok = True
    for what, ref in (("init_from", stage.init_from), ("select", stage.select)):
        if ref is None:
            continue
        where = _stage_where(stage, f"{what}.stage")
        if ref.stage not in order:
            errors.add(where, f"unknown stage '{ref.stage}'" + _hint(ref.stage, list(order)))
            ok = False
        elif order[ref.stage] >= index:
            errors.add(where, f"stage '{ref.stage}' does not come before '{stage.name}' "
                              "(stages run in file order; a stage can only use earlier ones)")
            ok = False
        elif not by_stage.get(ref.stage):
            ok = False  # the source stage has problems of its own, reported there
    if stage.init_from is not None:
        if stage.pretrained is not None:
            errors.add(_stage_where(stage, "pretrained" if "pretrained" in stage.where else "init_from"),
                       "pretrained and init_from are both set: the init_from checkpoint replaces the "
                       "pretrained weights; set pretrained: null in this stage")
        for key in stage.init_from.match:
            if key not in _COMPARABLE:
                errors.add(_stage_where(stage, "init_from.match"), f"unknown key '{key}'" + _hint(key, _COMPARABLE))
                ok = False
    select = stage.select
    if select is not None:
        where = _stage_where(stage, "select.param")
        if select.param not in RECIPE_FIELDS:
            errors.add(where, f"'{select.param}' is not a recipe field" + _hint(select.param, RECIPE_FIELDS))
            ok = False
        elif select.param in stage.grid.recipe or any(select.param in rule for rule in stage.include):
            errors.add(where, f"'{select.param}' is both selected and a grid axis of this stage; drop one")
            ok = False
        for key in select.by:
            if key not in _COMPARABLE or key == select.param:
                errors.add(_stage_where(stage, "select.by"), f"unknown key '{key}'"
                           + _hint(key, [k for k in _COMPARABLE if k != select.param]))
                ok = False
        source = next((s for s in suite.stages if s.name == select.stage), None)
        if source is not None and order[source.name] < index:
            if source.recipe.eval_split != "heldout" or "eval_split" in source.grid.recipe:
                errors.add(_stage_where(stage, "select.stage"),
                           f"stage '{source.name}' evaluates on '{source.recipe.eval_split}': a search stage must "
                           "set recipe.eval_split: heldout, so that selection never sees the reported split")
                ok = False
            if ok and select.param not in source.grid.recipe and not any(select.param in r for r in source.include):
                errors.add(where, f"stage '{source.name}' does not search over '{select.param}' "
                                  f"(it is not one of its grid axes)")
                ok = False
    return ok


def _expand_stage(suite: Suite, stage: Stage, order: dict[str, int], by_stage: dict[str, list[Cell]],
                  errors: _Errors) -> list[Cell]:
    refs_ok = _check_refs(suite, stage, order, by_stage, errors)
    axes = stage.grid.axes()
    names = list(axes)
    recipe_axes = list(stage.grid.recipe)
    for rule in stage.include:  # a recipe field named only by include cells still tags the ids
        recipe_axes += [a for a in rule if a in RECIPE_FIELDS and a not in recipe_axes]

    # grid product minus exclude rules, then include cells: (combo, include index or None)
    combos = [dict(zip(names, values)) for values in itertools.product(*axes.values())]
    hits = [0] * len(stage.exclude)
    kept: list[tuple[dict, int | None]] = []
    for combo in combos:
        matched = [i for i, rule in enumerate(stage.exclude) if _matches(combo, rule)]
        for i in matched:
            hits[i] += 1
        if not matched:
            kept.append((combo, None))
    for i, count in enumerate(hits):
        if count == 0:
            errors.add(_stage_where(stage, f"exclude[{i}]"), "exclude rule matches no grid cell (check its values)")
    if not kept:
        errors.add(_stage_where(stage, "exclude" if stage.exclude else "grid"),
                   f"stage '{stage.name}' has no grid cells left after exclude ({len(combos)} excluded)")
    for i, rule in enumerate(stage.include):
        sub_axes = _include_axes(axes, rule)
        for values in itertools.product(*sub_axes.values()):
            kept.append((dict(zip(sub_axes, values)), i))

    base = {
        "suite": suite.name, "stage": stage.name,
        "recipe": dataclasses.asdict(stage.recipe),
        "pretrained": stage.pretrained,
        "pretrained_path": resolve_path(stage.pretrained, suite.base_dir) if stage.pretrained not in (None, "timm") else None,
        "targets": dataclasses.asdict(suite.targets),
        "resources": dataclasses.asdict(stage.resources),
    }
    out: list[Cell] = []
    seen: dict[str, int | None] = {}
    no_capacity: set[str] = set()
    unmatched = {"init_from": 0, "select": 0}
    for combo, include_index in kept:
        for axis in stage.grid.recipe:  # a recipe axis the include item did not name keeps the recipe value
            if combo.get(axis) is None and include_index is not None and axis not in axes:
                combo[axis] = base["recipe"][axis]
        combo = _apply_ignore(combo, stage.ignore)
        if combo["capacity"] is None:
            no_capacity.add(combo["router"])
            continue
        config = _cell_config(suite, stage, combo, base)
        _check_cell(config, stage, errors)
        if refs_ok and stage.init_from is not None:
            config["init_from"] = _init_source(stage, config, by_stage, errors, unmatched)
        if refs_ok and stage.select is not None:
            config["select"] = _select_marker(stage, config, by_stage, errors, unmatched)
        config["id"] = cell_id(config, _cell_tags(combo, recipe_axes))
        if config["id"] in seen:
            if include_index is not None:
                first = seen[config["id"]]
                errors.add(_stage_where(stage, f"include[{include_index}]"),
                           f"duplicate cell id {config['id']}: this include cell repeats "
                           + ("a grid cell" if first is None else f"include[{first}]"))
            continue  # grid cells that `ignore` made identical collapse into one
        seen[config["id"]] = include_index
        out.append(Cell(id=config["id"], stage=stage.name, config=config))
    if no_capacity:
        errors.add(_stage_where(stage, "grid"),
                   f"grid.capacity is required for router(s) {', '.join(sorted(no_capacity))} "
                   "(only a router whose `ignore` entry lists capacity may leave it out)")
    for what, count in unmatched.items():
        if count > 5:
            errors.add(_stage_where(stage, what), f"... and {count - 5} more cells without a {what} match")
    return out


def _cell_config(suite: Suite, stage: Stage, combo: dict, base: dict) -> dict:
    recipe = {**base["recipe"], **{k: combo[k] for k in combo if k in RECIPE_FIELDS}}
    # only the keys the suite sets: the loader merges them over the dataset's own defaults, and a
    # new Augment field leaves existing ids alone
    recipe["augment"] = {k: v for k, v in recipe["augment"].items() if v is not None}
    if stage.select is not None:
        recipe[stage.select.param] = None  # resolved by the runner from the search's results
    config = {
        "id": None, "suite": base["suite"], "stage": base["stage"],
        "model": combo["model"], "router": combo["router"], "capacity": combo["capacity"],
        "routed_layers": combo["routed_layers"], "cls_policy": combo["cls_policy"],
        "dataset": combo["dataset"], "dataset_path": dataset_path(combo["dataset"], suite.base_dir),
        "seed": combo["seed"],
        **recipe,
        "pretrained": base["pretrained"], "pretrained_path": base["pretrained_path"],
        "router_options": dict(stage.router_options.get(combo["router"], {})),
        "init_from": None, "select": None,
        "targets": base["targets"], "resources": base["resources"],
        "output": suite.output, "storage": suite.storage,
    }
    return {k: _jsonable(v) for k, v in config.items()}


def _describe(config: dict, keys) -> str:
    return ", ".join(f"{k}={config[k]}" for k in keys)


def _init_source(stage: Stage, config: dict, by_stage: dict[str, list[Cell]], errors: _Errors,
                 unmatched: dict[str, int]) -> str | None:
    """The id of the one cell of stage init_from.stage that equals `config` on init_from.match."""
    ref = stage.init_from
    source = [c for c in by_stage[ref.stage] if all(c.config[k] == config[k] for k in ref.match)]
    if len(source) == 1:
        return source[0].id
    unmatched["init_from"] += 1
    if unmatched["init_from"] <= 5:
        if not source:
            message = f"no cell of stage '{ref.stage}' has {_describe(config, ref.match)}"
        else:
            message = (f"{len(source)} cells of stage '{ref.stage}' have {_describe(config, ref.match)} "
                       f"({', '.join(c.id for c in source[:3])}{', ...' if len(source) > 3 else ''}); "
                       "add keys to init_from.match to pick one (e.g. seed)")
        errors.add(_stage_where(stage, "init_from"), message)
    return None


def _select_marker(stage: Stage, config: dict, by_stage: dict[str, list[Cell]], errors: _Errors,
                   unmatched: dict[str, int]) -> dict | None:
    """{stage, param, by, metric, cells, values}: the search cells this cell chooses among."""
    ref = stage.select
    group = [c for c in by_stage[ref.stage] if all(c.config[k] == config[k] for k in ref.by)]
    if not group:
        unmatched["select"] += 1
        if unmatched["select"] <= 5:
            errors.add(_stage_where(stage, "select"),
                       f"no cell of stage '{ref.stage}' has {_describe(config, ref.by)} to select from")
        return None
    return {"stage": ref.stage, "param": ref.param, "by": list(ref.by), "metric": ref.metric,
            "cells": [c.id for c in group], "values": [c.config[ref.param] for c in group]}


def _check_cell(config: dict, stage: Stage, errors: _Errors) -> None:
    """Checks that need a whole cell (values may come from different axes)."""
    epochs = config["epochs"]
    if config["warmup_epochs"] is not None and epochs is not None and config["warmup_epochs"] >= epochs:
        errors.add(_stage_where(stage, "recipe.warmup_epochs"),
                   f"warmup_epochs ({config['warmup_epochs']:g}) must be < epochs ({epochs:g})")
    if config["eval_every"] is not None and epochs is not None and config["eval_every"] > epochs:
        errors.add(_stage_where(stage, "recipe.eval_every"),
                   f"eval_every ({config['eval_every']:g} epochs) is longer than training ({epochs:g} epochs)")
    workers = stage.resources.workers
    if config["batch_size"] is not None and config["batch_size"] % workers:
        errors.add(_stage_where(stage, "resources.workers"),
                   f"global batch_size {config['batch_size']} does not split evenly across {workers} workers")
    gpus = stage.resources.gpus_per_worker
    if workers > 1 and 0 < gpus < 1:
        errors.add(_stage_where(stage, "resources.gpus_per_worker"),
                   f"fractional gpus_per_worker ({gpus:g}) with {workers} workers would put several DDP ranks "
                   "on one GPU, which NCCL rejects; use whole GPUs or one worker")
    _check_layout(config, stage, errors)


def _check_layout(config: dict, stage: Stage, errors: _Errors) -> None:
    """routed_layers fits the model's depth, and attention-scored routers get an unrouted predecessor."""
    model_cfg = _model_config(config["model"])
    try:
        from amod_bench.routers import get_router_class, layout
    except ImportError:
        return
    if model_cfg is None:
        return
    spec = config["routed_layers"]
    where = _stage_where(stage, "grid.routed_layers")
    try:
        routed = layout.resolve_routed_layers(model_cfg["depth"], spec)
        router_cls = get_router_class(config["router"])
        if getattr(router_cls, "routes", True) and getattr(router_cls, "attention_stat", None):
            layout.check_attention_predecessors(config["router"], routed)
    except ValueError as exc:
        errors.add(where, f"model '{config['model']}' ({model_cfg['depth']} blocks), router "
                          f"'{config['router']}': {exc}")


_MODEL_CONFIGS: dict[str, dict | None] = {}


def _model_config(name: str) -> dict | None:
    """model_config(name), cached; None while amod_bench.models is not written yet or the name is unknown."""
    if name not in _MODEL_CONFIGS:
        try:
            from amod_bench.models import model_config
        except ImportError:
            return None
        try:
            _MODEL_CONFIGS[name] = dict(model_config(name))
        except (KeyError, ValueError):
            _MODEL_CONFIGS[name] = None
    return _MODEL_CONFIGS[name]


def missing_inputs(suite: Suite) -> list[tuple[str, tuple[str, str, int]]]:
    """(message, where) for each dataset or checkpoint file of the suite that is not on this machine."""
    try:
        from amod_bench.data import missing_dataset_message
    except ImportError:  # amod_bench.data not written yet: check folders only
        def missing_dataset_message(spec: str) -> str | None:
            return None if spec.startswith("bundled:") or os.path.isdir(spec) else f"dataset {spec} not found"
    out, seen = [], set()
    for stage in suite.stages:
        specs = stage.grid.dataset + tuple(v for rule in stage.include for v in rule.get("dataset", ()))
        for spec in dict.fromkeys(specs):
            target = dataset_path(spec, suite.base_dir)
            if target in seen:
                continue
            seen.add(target)
            if message := missing_dataset_message(target):
                out.append((message, _stage_where(stage, "grid.dataset")))
        if stage.pretrained not in (None, "timm"):
            file = resolve_path(stage.pretrained, suite.base_dir)
            if file not in seen and "://" not in file and not os.path.isfile(file):
                seen.add(file)
                out.append((f"pretrained checkpoint {file} does not exist", _stage_where(stage, "pretrained")))
    return out
