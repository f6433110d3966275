"""Suite files: validation messages (field, line, file), grid expansion and stable cell ids.

Each malformed case marks the line its problem must be reported on with `#<`. No test
here trains or builds a model; the registries are the real ones (names only).
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap

import pytest

from amod_bench import suite as S
from amod_bench.suite import SuiteError, expand, load_suite

MODEL = "vit_nano_patch7_28"  # 6 blocks, 28 px, 10 classes

# A small valid suite: a held-out lr search, a main stage that selects from it, a
# transfer stage that starts from the main stage's checkpoints.
VALID = f"""\
name: tiny
description: fixture
max_concurrent: 2
defaults:
  grid:
    model: {MODEL}
    dataset: bundled:digits
    seed: [0, 1]
  recipe:
    epochs: 2
    batch_size: 32
    lr: 1e-3
  router_options:
    mod_tanh: {{alpha: 0.5}}
stages:
  - name: search
    grid:
      router: [dense, isoflop, amod, mod_tanh]
      capacity: 0.5
      lr: [1e-3, 3e-3]
      seed: 0
    recipe: {{eval_split: heldout}}
  - name: main
    grid:
      router: [dense, isoflop, amod, mod_tanh]
      capacity: [0.25, 0.5]
    exclude:
      - {{router: isoflop, capacity: 0.25}}
    include:
      - {{router: amod, capacity: 0.5, cls_policy: keep}}
    select: {{stage: search, by: [model, router, dataset]}}
  - name: transfer
    init_from: {{stage: main, match: [model, router, capacity, cls_policy, seed]}}
    grid:
      router: [dense, amod]
      capacity: 0.5
      dataset: bundled:mnist5k
    recipe: {{optimizer: sgd, lr: 0.01}}
"""


def write(tmp_path, text: str, name: str = "suite.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def load_text(tmp_path, text: str, **kwargs):
    return load_suite(write(tmp_path, text), **kwargs)


def by_stage(cells, stage):
    return [c for c in cells if c.stage == stage]


# ---------------------------------------------------------------------------------------------
# malformed suites: (case, yaml with `#<` on the reported line, field path, message part)

BASE_HEAD = f"""\
name: tiny
defaults:
  grid:
    model: {MODEL}
    dataset: bundled:digits
  recipe:
    epochs: 2
    batch_size: 32
"""

MALFORMED = [
    ("unknown top-level key", "name: tiny\ncolour: red  #<\nstages:\n  - name: a\n    grid: {router: dense, model: "
     f"{MODEL}, dataset: bundled:digits}}\n", "colour", "unknown key (allowed: name"),
    ("unknown recipe key, did you mean", BASE_HEAD + "    epoch: 3  #<\nstages:\n  - name: a\n    grid: {router: dense}\n",
     "defaults.recipe.epoch", "did you mean 'epochs'?"),
    ("wrong type", BASE_HEAD.replace("epochs: 2", "epochs: ten  #<") + "stages:\n  - name: a\n    grid: {router: dense}\n",
     "defaults.recipe.epochs", "expected a number, got str 'ten'"),
    ("negative lr", BASE_HEAD + "stages:\n  - name: a\n    grid: {router: dense}\n    recipe:\n      lr: -0.1  #<\n",
     "stages[0].recipe.lr", "must be > 0"),
    ("bad optimizer", BASE_HEAD + "    optimizer: adam  #<\nstages:\n  - name: a\n    grid: {router: dense}\n",
     "defaults.recipe.optimizer", "(allowed: adamw, sgd; did you mean 'adamw'?)"),
    ("unknown model", BASE_HEAD + "stages:\n  - name: a\n    grid:\n      router: dense\n      model: vit_nano  #<\n",
     "stages[0].grid.model", "unknown model 'vit_nano'"),
    ("unknown router, suggestion", BASE_HEAD + "stages:\n  - name: a\n    grid:\n      router:\n        - dense\n"
     "        - amdo  #<\n      capacity: 0.5\n", "stages[0].grid.router[1]", "did you mean 'amod'?"),
    ("capacity 0", BASE_HEAD + "stages:\n  - name: a\n    grid:\n      router: amod\n      capacity: 0  #<\n",
     "stages[0].grid.capacity", "capacity must be in (0, 1]"),
    ("capacity 1.5", BASE_HEAD + "stages:\n  - name: a\n    grid:\n      router: amod\n      capacity:\n        - 0.5\n"
     "        - 1.5  #<\n", "stages[0].grid.capacity[1]", "capacity must be in (0, 1]"),
    ("capacity missing for a routed router", BASE_HEAD + "stages:\n  - name: a\n    grid:  #<\n      router: [dense, mod]\n",
     "stages[0].grid", "grid.capacity is required for router(s) mod"),
    ("empty grid after exclude", BASE_HEAD + "stages:\n  - name: a\n    grid: {router: [dense, amod], capacity: 0.5}\n"
     "    exclude:  #<\n      - {router: [dense, amod]}\n", "stages[0].exclude", "no grid cells left after exclude"),
    ("exclude rule matching nothing", BASE_HEAD + "stages:\n  - name: a\n    grid: {router: [dense, amod], capacity: 0.5}\n"
     "    exclude:\n      - {router: amod, capacity: 0.25}  #<\n", "stages[0].exclude[0]", "matches no grid cell"),
    ("missing dataset folder", BASE_HEAD + "stages:\n  - name: a\n    grid:\n      router: dense\n"
     "      dataset: no/such/folder  #<\n", "stages[0].grid.dataset", "does not exist"),
    ("unknown bundled dataset", BASE_HEAD + "stages:\n  - name: a\n    grid:\n      router: dense\n"
     "      dataset: bundled:digit  #<\n", "stages[0].grid.dataset", "did you mean 'bundled:digits'?"),
    ("init_from unknown stage", BASE_HEAD + "stages:\n  - name: pretrain\n    grid: {router: dense}\n  - name: b\n"
     "    init_from: pretrian  #<\n    grid: {router: dense}\n", "stages[1].init_from", "unknown stage 'pretrian'"),
    ("init_from a later stage", BASE_HEAD + "stages:\n  - name: a\n    init_from: b  #<\n    grid: {router: dense}\n"
     "  - name: b\n    grid: {router: dense}\n", "stages[0].init_from", "does not come before"),
    ("init_from matching several cells", BASE_HEAD + "stages:\n  - name: a\n    grid: {router: dense, seed: [0, 1]}\n"
     "  - name: b\n    init_from: a  #<\n    grid: {router: dense}\n", "stages[1].init_from",
     "2 cells of stage 'a' have model="),
    ("init_from with pretrained", BASE_HEAD + "stages:\n  - name: a\n    grid: {router: dense}\n  - name: b\n"
     "    init_from: a\n    pretrained: timm  #<\n    grid: {router: dense}\n", "stages[1].pretrained",
     "pretrained and init_from are both set"),
    ("select from a stage evaluating on val", BASE_HEAD + "stages:\n  - name: search\n    grid: {router: dense, lr: [0.1, 0.2]}\n"
     "  - name: main\n    select:\n      stage: search  #<\n    grid: {router: dense}\n", "stages[1].select.stage",
     "must set recipe.eval_split: heldout"),
    ("duplicate cell id via include", BASE_HEAD + "stages:\n  - name: a\n    grid: {router: [dense, amod], capacity: 0.5}\n"
     "    include:\n      - {router: amod}  #<\n", "stages[0].include[0]", "duplicate cell id"),
    ("duplicate stage name", BASE_HEAD + "stages:\n  - name: a\n    grid: {router: dense}\n  - name: a  #<\n"
     "    grid: {router: dense}\n", "stages[1].name", "duplicate stage name"),
    ("workers < 1", BASE_HEAD + "  resources:\n    workers: 0  #<\nstages:\n  - name: a\n    grid: {router: dense}\n",
     "defaults.resources.workers", "must be >= 1"),
    ("fractional gpus above one", BASE_HEAD + "stages:\n  - name: a\n    grid: {router: dense}\n    resources:\n"
     "      gpus_per_worker: 1.5  #<\n", "stages[0].resources.gpus_per_worker", "a whole number"),
    ("fractional gpus with several workers", BASE_HEAD + "stages:\n  - name: a\n    grid: {router: dense}\n"
     "    resources:\n      workers: 2\n      gpus_per_worker: 0.5  #<\n", "stages[0].resources.gpus_per_worker",
     "NCCL"),
    ("batch not divisible by workers", BASE_HEAD + "stages:\n  - name: a\n    grid: {router: dense}\n    resources:\n"
     "      workers: 3  #<\n", "stages[0].resources.workers", "does not split evenly across 3 workers"),
    ("malformed YAML", BASE_HEAD + "stages:\n  - name: a\n    grid: {router: [dense, amod}  #<\n",
     "(top level)", "malformed YAML"),
    ("top-level list", "- name: tiny  #<\n- stages: []\n", "(top level)", "expected a mapping of suite fields, got a list"),
    ("duplicate YAML key", BASE_HEAD + "stages:\n  - name: a\n    name: b  #<\n    grid: {router: dense}\n",
     "stages[0].name", "duplicate key 'name'"),
    ("bad routed_layers spec", BASE_HEAD + "stages:\n  - name: a\n    grid:\n      router: amod\n      capacity: 0.5\n"
     "      routed_layers: first  #<\n", "stages[0].grid.routed_layers", "bad routed_layers spec"),
    ("routed_layers beyond depth", BASE_HEAD + "stages:\n  - name: a\n    grid:\n      router: mod\n      capacity: 0.5\n"
     "      routed_layers: [1, 9]  #<\n", "stages[0].grid.routed_layers", "not a block index in 0..5"),
    ("attention router on block 0", BASE_HEAD + "stages:\n  - name: a\n    grid:\n      router: amod\n      capacity: 0.5\n"
     "      routed_layers: [0, 3]  #<\n", "stages[0].grid.routed_layers", "cannot route block 0"),
    ("unknown router option", BASE_HEAD + "  router_options:\n    mod_tanh:\n      alpah: 0.1  #<\nstages:\n"
     "  - name: a\n    grid: {router: dense}\n", "defaults.router_options.mod_tanh.alpah", "did you mean 'alpha'?"),
    ("router option of the wrong type", BASE_HEAD + "  router_options:\n    mod_tanh:\n      alpha: strong  #<\n"
     "stages:\n  - name: a\n    grid: {router: dense}\n", "defaults.router_options.mod_tanh.alpha",
     "expected a number, got str 'strong'"),
    ("router option not among its values", BASE_HEAD + "stages:\n  - name: a\n    grid: {router: amod, capacity: 0.5}\n"
     "    router_options:\n      amod: {score_impl: bogus}  #<\n", "stages[0].router_options.amod.score_impl",
     "unknown value str 'bogus' (allowed: explicit, chunked"),
    ("stage-only key in defaults", BASE_HEAD + "  init_from: a  #<\nstages:\n  - name: a\n    grid: {router: dense}\n",
     "defaults.init_from", "belongs to a stage"),
    ("ignore an axis that cannot be ignored", BASE_HEAD + "stages:\n  - name: a\n    grid: {router: dense}\n"
     "    ignore:\n      dense: [seed]  #<\n", "stages[0].ignore.dense[0]", "cannot ignore axis"),
    ("warm-up as long as training", BASE_HEAD + "    warmup_epochs: 2  #<\nstages:\n  - name: a\n    grid: {router: dense}\n",
     "defaults.recipe.warmup_epochs", "must be < epochs"),
    ("unknown grid axis", BASE_HEAD + "stages:\n  - name: a\n    grid:\n      router: dense\n      seeds: [0, 1]  #<\n",
     "stages[0].grid.seeds", "did you mean 'seed'?"),
    ("missing stages", "name: tiny  #<\n", "stages", "required field is missing"),
    ("unknown analysis", BASE_HEAD + "analyses: [importance, importanse]  #<\nstages:\n  - name: a\n"
     "    grid: {router: dense}\n", "analyses[1]", "did you mean 'importance'?"),
]


@pytest.mark.parametrize("text,path,message", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_suite_names_field_line_and_file(tmp_path, text, path, message):
    line = next(i for i, row in enumerate(text.splitlines(), start=1) if "#<" in row)
    file = write(tmp_path, text)
    with pytest.raises(SuiteError) as caught:
        load_suite(file)
    problems = caught.value.problems
    hits = [p for p in problems if p.path == path and p.line == line and p.file == file and message in p.message]
    assert hits, f"expected {file}:{line}: {path}: ...{message}... in\n{caught.value}"
    assert f"{file}:{line}: {path}: " in str(caught.value)


def test_every_problem_is_reported_at_once(tmp_path):
    text = BASE_HEAD.replace("epochs: 2", "epochs: ten") + (
        "  resources: {workers: 0}\n"
        "stages:\n"
        "  - name: a\n"
        "    grid: {router: [amdo, dense], capacity: 2}\n"
        "  - name: b\n"
        "    recipie: {}\n"
        "    grid: {router: dense}\n"
        "  - name: c\n"
        "    init_from: d\n"
        "    grid: {router: dense}\n")
    with pytest.raises(SuiteError) as caught:
        load_text(tmp_path, text)
    paths = {p.path for p in caught.value.problems}
    assert {"defaults.recipe.epochs", "defaults.resources.workers", "stages[0].grid.router[0]",
            "stages[0].grid.capacity", "stages[1].recipie", "stages[2].init_from"} <= paths
    lines = [p.line for p in caught.value.problems]
    assert lines == sorted(lines)  # in file order


def test_router_options_are_checked_against_their_declared_types_and_kept_as_written(tmp_path):
    text = BASE_HEAD + ("  router_options:\n    mod_tanh: {alpha: 1}\n    random: {seed: '3'}\n    amod: {chunk_size: 1.5}\n"
                        "stages:\n  - name: a\n    grid: {router: [mod_tanh, random, amod], capacity: 0.5}\n")
    with pytest.raises(SuiteError) as caught:
        load_text(tmp_path, text)
    assert {(p.path, p.message) for p in caught.value.problems} == {
        ("defaults.router_options.random.seed", "expected an integer, got str '3'"),
        ("defaults.router_options.amod.chunk_size", "expected an integer, got float 1.5")}
    cells = expand(load_text(tmp_path, text.replace("seed: '3'", "seed: 3").replace("chunk_size: 1.5", "chunk_size: 64")))
    # an int where a float goes is accepted, and kept as written: the id hashes what the suite says
    assert next(c for c in cells if c.config.router == "mod_tanh").config.router_options == {"alpha": 1}


def test_override_problems_point_at_the_set_argument(tmp_path):
    file = write(tmp_path, VALID)
    with pytest.raises(SuiteError) as caught:
        load_suite(file, overrides=["defaults.recipe.epochs=3", "stages.main.recipe.epoch=2"])
    (problem,) = caught.value.problems
    assert (problem.file, problem.line, problem.path) == ("--set", 2, "stages[1].recipe.epoch")
    assert "did you mean 'epochs'?" in problem.message


def test_unreadable_file(tmp_path):
    with pytest.raises(SuiteError, match="cannot read the suite"):
        load_suite(tmp_path / "nope.yaml")


# ---------------------------------------------------------------------------------------------
# expansion


def test_valid_fixture_expands_in_stage_order(tmp_path):
    suite = load_text(tmp_path, VALID)
    cells = expand(suite)
    assert [c.stage for c in cells] == sorted((c.stage for c in cells), key=["search", "main", "transfer"].index)
    # search: dense (capacity ignored) + isoflop + amod + mod_tanh, 2 lrs, one seed
    assert len(by_stage(cells, "search")) == 4 * 2
    # main: per seed dense 1 + isoflop 1 (0.25 excluded) + amod 2 + mod_tanh 2, + include amod keep
    assert len(by_stage(cells, "main")) == 2 * (1 + 1 + 2 + 2) + 2
    assert len(by_stage(cells, "transfer")) == 2 * 2
    assert len({c.id for c in cells}) == len(cells)
    for cell in cells:
        assert cell.id == cell.config.id
        assert tuple(cell.config.to_json()) == (*S.CONFIG_KEYS, "axes")
    assert suite.max_concurrent == 2


def test_ignore_rule_collapses_dense_and_can_be_overridden(tmp_path):
    text = BASE_HEAD + "stages:\n  - name: a\n    grid: {router: [dense, isoflop, mod], capacity: [0.25, 0.5], " \
                       "cls_policy: [compete, keep]}\n"
    cells = expand(load_text(tmp_path, text))
    dense = [c for c in cells if c.config.router == "dense"]
    assert len(dense) == 1
    assert (dense[0].config.capacity, dense[0].config.to_json()["routed_layers"], dense[0].config.cls_policy) == \
        (1.0, "every_other", "compete")
    assert len([c for c in cells if c.config.router == "isoflop"]) == 4  # isoflop depends on capacity
    assert len(cells) == 1 + 4 + 4

    text2 = text + "    ignore: {dense: [], isoflop: [cls_policy]}\n"
    cells = expand(load_text(tmp_path, text2))
    assert len([c for c in cells if c.config.router == "dense"]) == 4
    assert len([c for c in cells if c.config.router == "isoflop"]) == 2


def test_include_takes_every_grid_value_of_axes_it_does_not_name(tmp_path):
    text = BASE_HEAD + ("stages:\n  - name: a\n    grid: {router: mod, capacity: 0.5, seed: [0, 1, 2]}\n"
                        "    include:\n      - {router: amod, capacity: [0.25, 0.75], seed: 7}\n"
                        "      - {router: random, capacity: 0.5}\n")
    cells = expand(load_text(tmp_path, text))
    amod = sorted((c.config.capacity, c.config.seed) for c in cells if c.config.router == "amod")
    assert amod == [(0.25, 7), (0.75, 7)]
    assert sorted(c.config.seed for c in cells if c.config.router == "random") == [0, 1, 2]
    assert len(cells) == 3 + 2 + 3


def test_recipe_axis_and_scalar_forms(tmp_path):
    text = BASE_HEAD + ("stages:\n  - name: a\n    grid:\n      router: dense\n      lr: [1e-4, 3.0e-4]\n"
                        "      weight_decay: 0\n      routed_layers: [1, 3]\n")
    cells = expand(load_text(tmp_path, text))
    assert [c.config.recipe.lr for c in cells] == [1e-4, 3e-4]  # 1e-4 is a number, not a string
    assert all(c.config.recipe.weight_decay == 0.0 for c in cells)
    assert "-lr0.0001-" in cells[0].id and "-weight_decay0-" in cells[0].id


def test_routed_layers_list_of_specs_is_an_axis(tmp_path):
    text = BASE_HEAD + ("stages:\n  - name: a\n    grid:\n      router: mod\n      capacity: 0.5\n"
                        "      routed_layers: [every_other, 'last:2', [1, 3]]\n")
    cells = expand(load_text(tmp_path, text))
    assert [c.config.to_json()["routed_layers"] for c in cells] == ["every_other", "last:2", [1, 3]]
    assert "-rl-last_2-" in cells[1].id and "-rl-1.3-" in cells[2].id


def test_ids_are_stable_across_loads_and_working_directories(tmp_path, monkeypatch):
    folder = tmp_path / "data" / "flowers"
    text = VALID.replace("dataset: bundled:mnist5k", "dataset: data/flowers")
    first = expand(load_text(tmp_path, text, check_data=False, base_dir=str(tmp_path)))
    again = expand(load_text(tmp_path, text, check_data=False, base_dir=str(tmp_path)))
    assert [c.id for c in first] == [c.id for c in again]
    assert first == again  # expand is pure: equal suites give equal cells

    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    moved = expand(load_suite(str(tmp_path / "suite.yaml"), check_data=False))
    assert [c.id for c in moved] == [c.id for c in first]
    transfer = by_stage(first, "transfer")[0].config.to_json()
    assert transfer["dataset"] == "data/flowers" and transfer["dataset_path"] == str(folder)
    assert by_stage(moved, "transfer")[0].config.dataset_path == str(other / "data" / "flowers")


def test_what_changes_an_id(tmp_path):
    base = {c.id: c for c in expand(load_text(tmp_path, VALID))}

    def ids(*overrides):
        return [c.id for c in expand(load_suite(str(tmp_path / "suite.yaml"), overrides=list(overrides)))]

    same = ["defaults.resources.workers=2", "defaults.resources.cpus_per_worker=4", "max_concurrent=8",
            "targets.top1=90", "name=renamed", "output=/somewhere/else", "storage=s3://bucket/x"]
    for override in same:
        assert ids(override) == list(base), override
    changed = ids("stages.transfer.recipe.lr=0.02")
    assert changed[:-4] == list(base)[:-4] and not set(changed[-4:]) & set(base)
    # another search lr: the lr=1e-3 search cells keep their ids; the main cells that select
    # among other candidates change, and so do the transfer cells that start from them
    kept = set(ids("stages.search.grid.lr=[1e-3, 1e-2]")) & set(base)
    assert kept == {i for i, c in base.items() if c.stage == "search" and c.config.recipe.lr == 1e-3}


def test_init_from_points_at_the_matching_cell(tmp_path):
    cells = expand(load_text(tmp_path, VALID))
    main = {c.id: c.config for c in by_stage(cells, "main")}
    for cell in by_stage(cells, "transfer"):
        source = main[cell.config.init_from]
        for key in ("model", "router", "capacity", "cls_policy", "seed"):
            assert getattr(source, key) == getattr(cell.config, key)
    assert all(c.config.init_from is None for c in cells if c.stage != "transfer")


def test_select_leaves_a_marker_with_the_candidate_cells(tmp_path):
    cells = expand(load_text(tmp_path, VALID))
    search = {c.id: c.config.to_json() for c in by_stage(cells, "search")}
    for cell in by_stage(cells, "main"):
        marker = cell.config.to_json()["select"]
        assert cell.config.recipe.lr is None
        assert marker["stage"] == "search" and marker["param"] == "lr" and marker["metric"] == "best_top1"
        assert marker["cells"] and all(search[i]["router"] == cell.config.router for i in marker["cells"])
        assert marker["values"] == [search[i]["lr"] for i in marker["cells"]]
    # a router left out of the search has nothing to select from
    text = VALID.replace("router: [dense, isoflop, amod, mod_tanh]", "router: [dense, amod, mod_tanh]", 1)
    with pytest.raises(SuiteError, match="no cell of stage 'search' has model=.*router=isoflop"):
        load_text(tmp_path, text)


def test_cell_config_paths_and_defaults(tmp_path):
    suite = load_text(tmp_path, VALID, base_dir=str(tmp_path))
    config = expand(suite)[0].config.to_json()
    assert config["output"] == str(tmp_path / "results" / "tiny") == suite.output
    assert config["storage"] == os.path.join(suite.output, "ray")
    assert config["dataset_path"] == "bundled:digits"
    assert config["augment"] == {}  # nothing set: the dataset's own defaults apply
    assert config["resources"] == {"workers": 1, "cpus_per_worker": 1.0, "gpus_per_worker": 0.0,
                                   "max_failures": 0, "checkpoints_to_keep": 1, "data_cache_mb": 256.0,
                                   "prestart": False}
    assert config["targets"] == {"within_peak_pct": 2.0, "top1": None, "common_rule": "lowest"}
    mod_tanh = next(c for c in expand(suite) if c.config.router == "mod_tanh")
    assert mod_tanh.config.to_json()["router_options"] == {"alpha": 0.5}


def test_overrides_apply_before_validation(tmp_path):
    file = write(tmp_path, VALID)
    suite = load_suite(file, overrides=["defaults.recipe.epochs=5", "stages.main.grid.seed=[0, 1, 2]",
                                        "stages.2.recipe.augment.hflip=true"])
    cells = expand(suite)
    assert all(c.config.recipe.epochs == 5.0 for c in cells)
    assert {c.config.seed for c in by_stage(cells, "main")} == {0, 1, 2}
    assert all(c.config.to_json()["augment"] == {"hflip": True} for c in by_stage(cells, "transfer"))


def test_plan_mode_tolerates_missing_data(tmp_path):
    text = VALID.replace("dataset: bundled:mnist5k", "dataset: /nowhere/pets")
    with pytest.raises(SuiteError, match="does not exist"):
        load_text(tmp_path, text)
    suite = load_text(tmp_path, text, check_data=False)
    assert len(expand(suite)) == 26
    ((message, where),) = S.missing_inputs(suite)
    assert "/nowhere/pets" in message and where[0] == "stages[2].grid.dataset"


def test_docstring_example_is_a_valid_suite(tmp_path):
    doc = S.__doc__
    example = doc[doc.index("Full example"):doc.index("Recipe fields (defaults")].split("::\n", 1)[1]
    suite = load_text(tmp_path, example, check_data=False)
    cells = expand(suite)
    assert {c.stage for c in cells} == {"search", "main", "transfer"}
    assert all(c.config.init_from for c in by_stage(cells, "transfer"))


def test_schema_fields_carry_a_comment(tmp_path):
    # every dataclass field of the schema has a trailing comment giving its unit or reason
    import inspect

    for cls in (S.Targets, S.Augment, S.Recipe, S.Resources, S.InitFrom, S.Select, S.Grid, S.Stage, S.Suite):
        source = inspect.getsource(cls)
        for f in dataclasses.fields(cls):
            line = next(row for row in source.splitlines() if row.strip().startswith(f"{f.name}:"))
            assert "  # " in line, f"{cls.__name__}.{f.name} lacks a comment"


# ---------------------------------------------------------------------------------------------
# bounded reading (issue 20, item 5): every hostile file ends in a SuiteError naming it, quickly


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """~300 bytes that expand to width**levels nodes."""
    rows = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    rows += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join(rows) + "\nname: bomb\nstages: []\n"


HOSTILE = [
    ("alias bomb", alias_bomb().encode(), "more than 100,000 nodes once its aliases are expanded"),
    ("merge-key bomb", (f"a0: &a0 {{k: 1}}\n" + "".join(
        f"a{i}: &a{i} {{<<: [{', '.join([f'*a{i - 1}'] * 9)}]}}\n" for i in range(1, 10))
        + "name: bomb\n").encode(), "more than 100,000 nodes"),
    ("deep nesting", ("name: deep\nstages: " + "[" * 5000 + "]" * 5000 + "\n").encode(), "nested deeper than 64"),
    ("not UTF-8", b"name: tiny\ndescription: \xff\xfe\n", "not UTF-8 text (byte 24"),
    ("binary", bytes(range(256)) * 4, "not UTF-8 text"),
    ("too large", b"name: big\n" + b"# padding\n" * 110_000, "larger than 1 MiB"),
]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("data,message", [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_suite_files_end_in_an_error_naming_the_file(tmp_path, data, message):
    file = tmp_path / "hostile.yaml"
    file.write_bytes(data)
    with pytest.raises(SuiteError) as caught:
        load_suite(file)
    (problem,) = caught.value.problems
    assert problem.file == str(file) and message in problem.message, str(caught.value)


@pytest.mark.timeout(10)
def test_a_huge_grid_is_refused_before_it_is_built(tmp_path):
    # 1000 x 1000 x 1000 cells: counted, never built; the error says how to confirm it
    numbers = ", ".join(str(i) for i in range(1, 1001))
    text = BASE_HEAD + ("stages:\n  - name: a\n    grid:\n      router: dense\n"
                        f"      seed: [{numbers}]\n      batch_size: [{numbers}]\n      epochs: [{numbers}]\n")
    with pytest.raises(SuiteError) as caught:
        load_text(tmp_path, text)
    (problem,) = caught.value.problems
    assert "the grid has 1,000,000,000 cells" in problem.message and "--allow-large-grid" in problem.message
    assert (problem.file, problem.path) == (str(tmp_path / "suite.yaml"), "stages")


@pytest.mark.parametrize("module", ["amod_bench.plan", "amod_bench.runner"])
def test_allow_large_grid_lifts_the_suites_max_cells(tmp_path, module):
    import argparse
    import importlib

    text = "max_cells: 3  #<\n" + BASE_HEAD + "stages:\n  - name: a\n    grid: {router: dense, seed: [0, 1, 2, 3]}\n"
    file = write(tmp_path, text)
    with pytest.raises(SuiteError, match=r"suite.yaml:1: max_cells: the grid has 4 cells .*max_cells \(3\)"):
        load_suite(file)
    parser = argparse.ArgumentParser()
    importlib.import_module(module).add_arguments(parser)
    args = vars(parser.parse_args([file, "--allow-large-grid"]))
    overrides = args["overrides" if module == "amod_bench.plan" else "set"]
    assert len(expand(load_suite(file, overrides=overrides))) == 4


# ---------------------------------------------------------------------------------------------
# overrides that would change nothing (issue 20, item 7)


def test_override_shadowed_by_every_stage_is_refused_with_the_stages_and_the_fix():
    quickstart = os.path.join(os.path.dirname(__file__), os.pardir, "suites", "quickstart.yaml")
    with pytest.raises(SuiteError) as caught:
        load_suite(quickstart, overrides=["defaults.recipe.epochs=1"], check_data=False)
    (problem,) = caught.value.problems
    assert (problem.file, problem.line, problem.path) == ("--set", 1, "defaults.recipe.epochs")
    assert "changes nothing" in problem.message
    assert "pretrain (" in problem.message and "finetune (" in problem.message
    assert "--set stages.pretrain.recipe.epochs=" in problem.message


def test_override_shadowed_by_some_stages_applies_to_the_others(tmp_path):
    text = BASE_HEAD + ("stages:\n  - name: a\n    grid: {router: dense}\n    recipe: {epochs: 3}\n"
                        "  - name: b\n    grid: {router: dense}\n")
    suite = load_text(tmp_path, text, overrides=["defaults.recipe.epochs=5"])
    assert {c.stage: c.config.recipe.epochs for c in expand(suite)} == {"a": 3.0, "b": 5.0}
    # a mapping override merges key by key: shadowed only where every key of it is
    suite = load_text(tmp_path, text.replace("{epochs: 3}", "{epochs: 3, lr: 0.1}"),
                      overrides=["defaults.recipe={epochs: 4, lr: 0.2}"])
    assert {c.stage: c.config.recipe.epochs for c in expand(suite)} == {"a": 3.0, "b": 4.0}
    with pytest.raises(SuiteError, match="every stage sets grid.seed itself"):
        load_text(tmp_path, text.replace("grid: {router: dense}", "grid: {router: dense, seed: 1}"),
                  overrides=["defaults.grid.seed=[0, 1]"])


# ---------------------------------------------------------------------------------------------
# validation reads registries by name only (issue 17)

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)


def test_validating_a_suite_does_not_import_torch():
    code = ("import sys\nfrom amod_bench.suite import load_suite\nload_suite('suites/quickstart.yaml')\n"
            "assert 'torch' not in sys.modules, 'loading a suite imported torch'\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
