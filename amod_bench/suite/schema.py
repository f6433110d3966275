"""The suite schema: frozen dataclasses, one field per suite key, and their constraints.

Field types are what `fields.py` hands to pydantic: `Number`, `Integer`, `Flag` and `Text`
take a YAML value of exactly that kind (no `"3"` for 3, no `true` for 1), and the
`Annotated` checks below bound it. Each field's trailing comment gives its unit or the
reason for its default."""
from __future__ import annotations

import dataclasses
import importlib.util
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, AllowInfNan, Strict
from pydantic_core import PydanticCustomError

from .problems import Where

# Scalars as YAML writes them: an int where a float goes is fine (epochs: 2), nothing else converts.
Number = Annotated[float, Strict(), AllowInfNan(False)]
Integer = Annotated[int, Strict()]
Flag = Annotated[bool, Strict()]
Text = Annotated[str, Strict()]


def _check(ok, message: str) -> AfterValidator:
    """A constraint: `ok(value)` or the problem '<message>, got <value>'."""
    def check(value):
        if not ok(value):
            raise PydanticCustomError("suite_check", "{message}", {"message": f"{message}, got {value!r}"})
        return value
    return AfterValidator(check)


_POSITIVE = _check(lambda v: v > 0, "must be > 0")
_NON_NEGATIVE = _check(lambda v: v >= 0, "must be >= 0")
_FRACTION = _check(lambda v: 0 <= v < 1, "must be in [0, 1)")
_AT_LEAST_1 = _check(lambda v: v >= 1, "must be >= 1")
_PERCENT = _check(lambda v: 0 < v <= 100, "must be in (0, 100]")
_PROBABILITY = _check(lambda v: 0 <= v <= 1, "must be a probability in [0, 1]")
_AREA = _check(lambda v: 0 < v[0] <= v[1] <= 1, "must be [lo, hi] with 0 < lo <= hi <= 1")
_RANGE = _check(lambda v: 0 < v[0] <= v[1], "must be [lo, hi] with 0 < lo <= hi")
_GPUS = _check(lambda v: v >= 0 and (v <= 1 or float(v).is_integer()),
               "must be 0, a fraction in (0, 1] or a whole number")
_FAILURES = _check(lambda v: v >= -1, "must be >= -1 (-1 = unlimited)")
NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_NAME = _check(lambda v: bool(NAME_RE.match(v)), "must be a non-empty name of letters, digits, '.', '_' or '-'")

PositiveNumber = Annotated[Number, _POSITIVE]
NonNegativeNumber = Annotated[Number, _NON_NEGATIVE]
Fraction = Annotated[Number, _FRACTION]
Name = Annotated[Text, _NAME]


@dataclass(frozen=True)
class Targets:
    within_peak_pct: PositiveNumber = 2.0  # points (%) below the run's own peak: the paper's rule
    top1: Annotated[Number, _PERCENT] | None = None  # common target top-1 (%); null = common_rule
    # lowest = lowest median-over-seeds best among the compared arms; every_run = lowest best of any
    # run compared (every run reaches it, so bootstrap CIs stay bounded); dense = dense median best
    common_rule: Literal["lowest", "every_run", "dense"] = "lowest"  # the report's common target when top1 is null


@dataclass(frozen=True)
class Augment:
    """Training augmentation (amod_bench.data.transforms). Every field defaults to null = the
    dataset manifest's default (the bundled digit sets: no flip, scale [0.6, 1]), else timm's."""

    scale: Annotated[tuple[Number, Number], _AREA] | None = None  # RandomResizedCrop area fraction
    ratio: Annotated[tuple[Number, Number], _RANGE] | None = None  # RandomResizedCrop aspect ratio
    hflip: Flag | None = None  # random horizontal flip (p = 0.5)
    color_jitter: Number | tuple[Number, ...] | None = None  # brightness/contrast/saturation(/hue); 0 = off
    trivial_augment: Flag | None = None  # TrivialAugmentWide after the crop
    random_erasing: Annotated[Number, _PROBABILITY] | None = None  # RandomErasing probability
    interpolation: Literal["bilinear", "bicubic", "nearest"] | None = None  # resize interpolation

    def chosen(self) -> dict:
        """The fields the suite set: the loader merges them over the dataset's own defaults, and
        a new field leaves existing cell ids alone."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class Recipe:
    optimizer: Literal["adamw", "sgd"] = "adamw"  # paper: AdamW for ImageNet fine-tuning, SGD for transfer
    lr: PositiveNumber = 1e-4  # peak learning rate (after warm-up) for the global batch
    momentum: Fraction = 0.9  # SGD momentum (AdamW ignores it)
    weight_decay: NonNegativeNumber = 0.05  # paper silent; DeiT's 0.05; none on norms/biases
    schedule: Literal["cosine", "constant"] = "cosine"  # after the linear warm-up; paper: cosine
    warmup_epochs: NonNegativeNumber = 0.0  # linear warm-up length, epochs (< epochs)
    epochs: PositiveNumber = 10.0  # training length; fractional allowed for smoke suites
    batch_size: Annotated[Integer, _POSITIVE] = 128  # GLOBAL batch, split evenly across workers (paper: 128 / 64)
    label_smoothing: Fraction = 0.0  # cross-entropy label smoothing
    grad_clip: PositiveNumber | None = None  # max global grad L2 norm; null = no clipping
    drop_path: Fraction = 0.0  # stochastic depth rate (paper silent)
    eval_every: PositiveNumber = 1.0  # epochs between evaluations (fractional ok): convergence resolution
    eval_split: Literal["val", "heldout"] = "val"  # heldout for search stages, so selection never sees val
    img_size: Annotated[Integer, _POSITIVE] | None = None  # input resolution, px; null = the model's default
    augment: Augment = field(default_factory=Augment)  # train-time augmentation; config keeps only the keys set
    num_loader_workers: Annotated[Integer, _NON_NEGATIVE] = 2  # DataLoader processes per Ray Train worker
    on_error: Literal["raise", "skip"] = "raise"  # a corrupt sample fails the cell, or is skipped and counted


@dataclass(frozen=True)
class Resources:
    workers: Annotated[Integer, _AT_LEAST_1] = 1  # Ray Train workers (DDP ranks) per cell
    cpus_per_worker: PositiveNumber = 1.0  # CPU cores reserved per worker (loader processes run there)
    gpus_per_worker: Annotated[Number, _GPUS] = 0.0  # 0 = CPU; a fraction shares a GPU
    max_failures: Annotated[Integer, _FAILURES] = 0  # restarts from the last checkpoint (FailureConfig)
    checkpoints_to_keep: Annotated[Integer, _AT_LEAST_1] | None = 1  # CheckpointConfig.num_to_keep; null = all
    data_cache_mb: NonNegativeNumber = 256.0  # RAM per worker for each of: eval batches, raw train shards (loader workers 0); 0 = stream
    prestart: Flag = False  # an init_from cell starts its workers once its parent trains, not after it ends; they hold their CPUs/GPUs while they wait


@dataclass(frozen=True)
class InitFrom:
    stage: Text  # an earlier stage whose cells' final checkpoints seed this stage
    match: tuple[Text, ...] = ("model",)  # config keys the source cell must share; exactly one cell may match


@dataclass(frozen=True)
class Select:
    stage: Text  # an earlier search stage that evaluates on `heldout`
    param: Text = "lr"  # the recipe field taken from the search (a grid axis of that stage)
    by: tuple[Text, ...] = ("model", "router", "capacity", "routed_layers", "cls_policy", "dataset")  # one winner per group of these keys
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
    name: Name  # unique within the suite; the first part of every cell id
    grid: Grid  # the axes; see Grid
    exclude: tuple[dict, ...] = ()  # rules {axis: value or [values]}; a grid cell matching all keys of one is dropped
    include: tuple[dict, ...] = ()  # extra cells {axis: value or [values]}; unnamed axes take every grid value
    ignore: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_IGNORE))  # router -> axes it ignores
    router_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # router -> build_model(**options)
    pretrained: Text | None = None  # null | "timm" | local checkpoint file (as written)
    init_from: InitFrom | None = None  # start each cell from an earlier stage's matching cell
    select: Select | None = None  # take fields (lr) from an earlier search stage at run time
    recipe: Recipe = field(default_factory=Recipe)  # the training recipe
    resources: Resources = field(default_factory=Resources)  # per-cell cluster resources; not part of the id
    where: dict = field(default_factory=dict, repr=False, compare=False)  # dotted key -> (path, file, line), for messages

    def at(self, key: str) -> Where:
        """Where the dotted `key` (or the nearest part of it that was written) is in the suite."""
        while key and key not in self.where:
            key = key.rsplit(".", 1)[0] if "." in key else ""
        return self.where.get(key) or self.where.get("", ("stages", "", 0))


# Each tracking backend: the modules its Ray callback needs (found with find_spec: validating a
# suite imports none of them) and the pyproject extra that installs them
TRACKING_PACKAGES = {
    "mlflow": ("mlflow", "sqlalchemy", "alembic"),  # mlflow-skinny; MLflow 3's default store is SQLite
    "wandb": ("wandb",),
    "tensorboard": ("tensorboardX",),  # the writer (tensorboard, to view the runs, comes with the extra)
}


# W&B's project names exclude these characters; ENTITY/PROJECT names the team or user too
WANDB_PROJECT_RE = re.compile(r"^[^/\\#?%:\s]+(/[^/\\#?%:\s]+)?$")


def _installed(backend: str) -> str:
    missing = [m for m in TRACKING_PACKAGES.get(backend, ()) if importlib.util.find_spec(m) is None]
    if missing:
        names = " and ".join(", ".join(missing).rsplit(", ", 1))
        raise PydanticCustomError("suite_check", "{message}", {"message": (
            f"tracking backend '{backend}' needs {names}, not installed here: install the '{backend}' "
            f"extra: pip install -e \".[{backend}]\"")})
    return backend


@dataclass(frozen=True)
class Tracking:
    """Where the driver sends every cell's config and evaluation rows, besides the result files
    (amod_bench.runner.tracking); not part of any cell id."""

    backend: Annotated[Literal["none", "mlflow", "wandb", "tensorboard"], AfterValidator(_installed)] = "none"
    # mlflow: tracking URI (null = MLflow's default); wandb: PROJECT or ENTITY/PROJECT (null = amod-bench);
    # tensorboard: log folder (null = ./tensorboard). Relative paths resolve against the working directory.
    uri: Text | None = None
    tags: dict[Text, Text] = field(default_factory=dict)  # MLflow run tags; W&B tags "key:value"; TensorBoard hparams


# A typo'd axis list can make millions of cells (gigabytes and minutes to plan): a larger
# grid product is refused unless the suite raises max_cells (or --allow-large-grid lifts it)
MAX_CELLS = 10_000


@dataclass(frozen=True)
class Suite:
    name: Name  # results/<name>; not part of cell ids (renaming keeps them)
    stages: tuple[Stage, ...]  # run in file order; a stage may depend only on earlier ones
    description: Text = ""  # free text
    output: Text | None = None  # results folder; default results/<name>; absolute after load_suite
    storage: Text | None = None  # Ray storage path or URI; default <output>/ray; absolute after load_suite
    max_concurrent: Annotated[Integer, _AT_LEAST_1] = 1  # cells at once, whole suite; capped as in the module docstring
    targets: Targets = field(default_factory=Targets)  # convergence targets for the report
    analyses: tuple[Literal["importance"], ...] = ()  # run after the cells, before the report (bench.py analyze)
    tracking: Tracking = field(default_factory=Tracking)  # MLflow / W&B / TensorBoard runs of the cells, from the driver
    max_cells: Annotated[Integer, _AT_LEAST_1] | None = MAX_CELLS  # refuse a larger grid product; null = no limit
    source: str = ""  # the suite file, for messages and the results copy
    base_dir: str = ""  # the working directory at load time: relative paths resolve here
    where: dict = field(default_factory=dict, repr=False, compare=False)  # dotted key -> (path, file, line)


CONFIG_KEYS = (
    "id", "suite", "stage", "model", "router", "capacity", "routed_layers", "cls_policy",
    "dataset", "dataset_path", "seed", *RECIPE_FIELDS, "pretrained", "pretrained_path",
    "router_options", "init_from", "select", "targets", "resources", "output", "storage",
)
# Keys left out of the id hash: bookkeeping, cluster and machine specifics, report-only settings.
UNHASHED_KEYS = ("id", "suite", "targets", "resources", "output", "storage", "dataset_path", "pretrained_path",
                 "axes")


