"""Suite files: one YAML is one study; `expand` turns it into a list of training cells.

A suite is a list of *stages* run in file order. Each stage is a grid of cells (the
product of its axes, minus `exclude` rules, plus `include` cells); a cell is one
training run, described by a fully resolved, frozen `Cell.config` (`CellConfig`) that the
runner hands to the training loop and writes, flat, to `results/<suite>/cells/<id>/config.json`.

    suite = load_suite("suites/deit.yaml")   # parse + validate; SuiteError lists ALL problems
    cells = expand(suite)                     # pure: list[Cell] in stage order

`python bench.py plan SUITE` prints the grid without running it (amod_bench.plan).

Modules: `schema` (the dataclasses and their constraints), `yaml_reader` (bounded YAML
that remembers lines), `fields` (pydantic type checks, errors mapped to file:line),
`axes` (grid axes and per-router mappings), `overrides` (`--set`), `validate`
(`load_suite`), `expand` and `checks` (cells, ids, cross-cell checks), `paths`,
`problems` (`SuiteError`).

Full example (every field shown; most have defaults and can be left out)::

    name: deit-transfer                 # required; [A-Za-z0-9._-]; names results/<name>
    description: A-MoD vs MoD on DeiT   # free text, shown by plan
    output: results/deit-transfer       # default results/<name>; relative to the working directory
    storage: null                       # Ray storage for checkpoints; default <output>/ray; may be a URI (s3://...)
    max_concurrent: 4                   # cells at once over the whole suite (one Tune run); capped to how many of the smallest cell the cluster holds (a bigger cell waits for its workers)
    targets:                            # the report's two convergence rules
      within_peak_pct: 2.0              # epochs to get within this many points (%) of the run's own peak
      top1: null                        # common target top-1 (%); null = common_rule
      common_rule: lowest               # lowest (median best of the weakest arm) | every_run (lowest best of any run) | dense
    analyses: [importance]              # after the cells, `bench.py analyze NAME` on their checkpoints (default none)
    max_cells: 10000                    # refuse a bigger grid product (a typo'd list); null = no limit (--allow-large-grid)
    tracking:                           # a tracked run per cell, from the driver (amod_bench.runner.tracking); not in cell ids
      backend: mlflow                   # none (default) | mlflow | wandb | tensorboard; its extra must be installed (pip install -e ".[mlflow]")
      uri: sqlite:///mlflow.db          # mlflow: tracking URI (null = MLflow's default); wandb: PROJECT or ENTITY/PROJECT (null = amod-bench); tensorboard: log folder (null = ./tensorboard)
      tags: {study: transfer}           # strings; MLflow run tags, W&B tags "study:transfer", TensorBoard hparams

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
  `Cell.config.init_from` is that cell's id.
* **select.** `select: STAGE` or `{stage, param, by, metric}`: `param` (default `lr`,
  a grid axis of STAGE) is taken at run time from the cells of STAGE equal to this
  cell on `by`: the value whose cells have the best mean `metric`. STAGE must be
  earlier and evaluate on `heldout` (selection never sees `val`). `expand` sets
  `param` to None and leaves the marker `Cell.config.select` (a `SearchChoice`: stage,
  param, by, metric, cells, values: the candidate cell ids and their values); `plan`
  shows "from STAGE".
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

`Cell.config` fields: as in its flat form `CellConfig.to_json()` (config.json; CONFIG_KEYS
then `axes`), except that the recipe fields sit in `recipe` (a `Recipe`): id, suite, stage,
model, router, capacity,
routed_layers, cls_policy, dataset (as written), dataset_path (what amod_bench.data
opens: bundled specs and URLs as written, folders absolute), seed, every recipe field
(augment holds only the keys the suite sets), pretrained (as written), pretrained_path
(absolute, or null), router_options (this cell's router only), init_from (a cell id or
null), select (the marker or null), targets, resources, output, storage, and `axes` (the
stage's grid axes, which the report groups by). The runner writes the derived figures
(params, gmacs, ...) from amod_bench.costs and the run-time inputs beside them in config.json.

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

from .cell import Cell, CellConfig, SearchChoice
from .expand import cell_id, config_hash, expand
from .overrides import parse_override
from .paths import dataset_path, dataset_short_name, missing_inputs, resolve_path
from .problems import Problem, SuiteError
from .schema import (
    CONFIG_KEYS, DEFAULT_IGNORE, IGNORABLE_AXES, MAX_CELLS, RECIPE_FIELDS, STANDARD_AXES, TRACKING_PACKAGES, UNHASHED_KEYS,
    Augment, Grid, InitFrom, Recipe, Resources, Select, Stage, Suite, Targets, Tracking,
)
from .validate import load_suite
from .yaml_reader import MAX_DEPTH, MAX_NODES, MAX_SUITE_BYTES

__all__ = [
    "CONFIG_KEYS", "DEFAULT_IGNORE", "IGNORABLE_AXES", "MAX_CELLS", "MAX_DEPTH", "MAX_NODES", "MAX_SUITE_BYTES",
    "RECIPE_FIELDS", "STANDARD_AXES", "UNHASHED_KEYS", "Augment", "Cell", "CellConfig", "Grid", "InitFrom", "Problem", "Recipe",
    "Resources", "SearchChoice", "Select", "Stage", "Suite", "SuiteError", "Targets", "TRACKING_PACKAGES", "Tracking", "cell_id", "config_hash", "dataset_path",
    "dataset_short_name", "expand", "load_suite", "missing_inputs", "parse_override", "resolve_path",
]
