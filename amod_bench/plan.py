"""`python bench.py plan SUITE`: print a suite's grid of cells without running anything.

    python bench.py plan suites/quickstart.yaml
    python bench.py plan suites/paper_deit.yaml --json | jq .gmacs
    python bench.py plan suites/quickstart.yaml --set defaults.grid.seed=[0,1,2]

One row per cell: id, stage, model, router, capacity, dataset, seed, lr (or "from
<stage>" when a search picks it at run time), parameters, inference GMACs per image
(multiply-accumulates, the paper's "FLOPs") and the FLOP ratio to the full-depth dense
model of the same architecture, then one line of totals. `--json` prints one JSON
object per cell instead, with the dataset's class count and train / evaluation sample counts
where the dataset resolves here. The figures come from `amod_bench.costs.cell_costs`, the same
function the runner writes into each cell's config.json; parameters are counted on a
model built on the `meta` device, so even ViT-L plans instantly.

A plan works for suites whose data is not on this machine: missing datasets or
checkpoints are warnings here (classes then default to the model's), while
`bench.py run` refuses them. An invalid suite exits with status 2 and every problem.
"""
from __future__ import annotations

import argparse
import json
import sys

# (header, formatter of one plan row); the row is a dict, see _row
_COLUMNS = [
    ("id", lambda r: r["id"]),
    ("stage", lambda r: r["stage"]),
    ("model", lambda r: r["model"]),
    ("router", lambda r: r["router"]),
    ("capacity", lambda r: f"{r['capacity']:g}"),
    ("dataset", lambda r: r["dataset_short"]),
    ("seed", lambda r: str(r["seed"])),
    ("lr", lambda r: f"from {r['select']['stage']}" if _selects(r, "lr") else f"{r['lr']:g}"),
    ("params", lambda r: _millions(r["params"])),
    ("GMACs", lambda r: "?" if r["gmacs"] is None else f"{r['gmacs']:.4g}"),
    ("ratio", lambda r: "?" if r["flop_ratio"] is None else f"{r['flop_ratio']:.3f}"),
    ("notes", lambda r: r["notes"]),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", help="suite YAML file")
    parser.add_argument("--json", action="store_true", help="one JSON object per cell instead of a table")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a suite field, e.g. --set defaults.recipe.epochs=2 (repeatable)")
    parser.add_argument("--allow-large-grid", dest="overrides", action="append_const", const="max_cells=null",
                        help="plan a grid of more than the suite's max_cells (default 10,000) cells")


def main(args: argparse.Namespace) -> int:
    from amod_bench.suite import SuiteError, expand, load_suite, missing_inputs

    try:
        suite = load_suite(args.suite, overrides=args.overrides, check_data=False)
        cells = expand(suite)
    except SuiteError as error:
        print(error, file=sys.stderr)
        return 2
    missing = missing_inputs(suite)
    for message, (path, file, line) in missing:
        print(f"warning: {file}:{line}: {path}: {message} (`bench.py run` stops here; the plan assumes "
              "the model's default number of classes)", file=sys.stderr)
    rows = plan_rows(cells)
    if args.json:
        for row in rows:
            print(json.dumps({k: v for k, v in row.items() if k not in ("dataset_short", "notes")}))
    else:
        print(format_table(rows, suite))
    return 0


def plan_rows(cells) -> list[dict]:
    """One flat dict per cell with the plan's figures (the --json output)."""
    from amod_bench.costs import CellCosts, cell_costs

    datasets: dict[str, object] = {}  # dataset_path -> Dataset, or None where it does not resolve here
    costs: dict[str, CellCosts] = {}
    stage_of = {cell.id: cell.stage for cell in cells}
    rows = []
    for cell in cells:
        c = cell.config
        if c.dataset_path not in datasets:
            datasets[c.dataset_path] = dataset_here(c.dataset_path)
        dataset = datasets[c.dataset_path]
        num_classes = dataset.num_classes if dataset is not None else None
        if num_classes is None:
            from amod_bench.models import model_config

            num_classes = model_config(c.model)["num_classes"]
        arch = json.dumps([c.model, c.router, c.capacity, c.routed_layers, c.cls_policy, c.recipe.img_size,
                           c.router_options, num_classes], sort_keys=True)
        if arch not in costs:  # cell_costs caches parameter counts too; this skips the MAC math
            costs[arch] = cell_costs(c, num_classes=num_classes)
        rows.append(_row(cell, costs[arch], stage_of, dataset))
    return rows


def _row(cell, cost, stage_of: dict[str, str], dataset) -> dict:
    from amod_bench.suite import dataset_short_name
    from amod_bench.suite.cell import jsonable

    c = cell.config

    def samples(split: str) -> int | None:  # from the manifest, _info.json or dataset spec
        return dataset.num_samples(split) if dataset is not None and split in dataset.splits else None

    notes = []
    if c.select and c.select.param != "lr":
        notes.append(f"{c.select.param} from {c.select.stage}")
    if c.init_from:
        notes.append(f"init from {stage_of.get(c.init_from, c.init_from)}")
    elif c.pretrained:
        notes.append(f"pretrained {c.pretrained}")
    return {
        "id": cell.id, "stage": cell.stage, "model": c.model, "router": c.router,
        "capacity": c.capacity, "routed_layers": jsonable(c.routed_layers), "cls_policy": c.cls_policy,
        "dataset": c.dataset, "dataset_short": dataset_short_name(c.dataset), "seed": c.seed,
        "lr": c.recipe.lr, "epochs": c.recipe.epochs, "batch_size": c.recipe.batch_size,
        "select": {"stage": c.select.stage, "param": c.select.param} if c.select else None,
        "init_from": c.init_from, "pretrained": c.pretrained,
        "params": cost.params, "gmacs": cost.gmacs, "flop_ratio": cost.flop_ratio_dense,
        "train_macs_per_sample": cost.train_macs_per_sample,
        "img_size": cost.img_size, "num_classes": cost.num_classes,
        "train_samples": samples("train"), "eval_samples": samples(c.recipe.eval_split),
        "notes": ", ".join(notes),
    }


def dataset_here(path: str):
    """The `Dataset` if it resolves here without side effects, else None.

    A folder's manifest is read; a bundled set is read only if already written (opening it
    would write it into the cache) and otherwise left to the model's default."""
    from amod_bench.data import missing_dataset_message

    if missing_dataset_message(path) is not None:
        return None
    if path.startswith("bundled:"):
        from amod_bench.data import bundled

        name = path.split(":", 1)[1]
        folder = bundled.cache_folder() / f"{name}-v{bundled.VERSION}"
        if not (folder / "manifest.json").is_file():
            return None
        path = str(folder)
    if "://" in path:
        return None  # never go online to plan
    from amod_bench.data import DatasetError, open_dataset

    try:
        return open_dataset(path)
    except DatasetError:
        return None


def _selects(row: dict, param: str) -> bool:
    return bool(row["select"]) and row["select"]["param"] == param


def _millions(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.2f}M"


def format_table(rows: list[dict], suite) -> str:
    """Aligned columns (numbers right-aligned) and a totals line."""
    numeric = {"capacity", "seed", "lr", "params", "GMACs", "ratio"}
    cells = [[fmt(r) for _, fmt in _COLUMNS] for r in rows]
    headers = [h for h, _ in _COLUMNS]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]

    def line(values):
        return "  ".join(v.rjust(w) if h in numeric else v.ljust(w)
                         for v, w, h in zip(values, widths, headers)).rstrip()

    per_stage: dict[str, int] = {}
    for r in rows:
        per_stage[r["stage"]] = per_stage.get(r["stage"], 0) + 1
    title = f"suite {suite.name}" + (f": {suite.description}" if suite.description else "")
    total = (f"{len(rows)} cells: " + ", ".join(f"{stage} {n}" for stage, n in per_stage.items())
             + f"; results in {suite.output}")
    return "\n".join([title, line(headers), *(line(c) for c in cells), total])
