"""Experiment tracking (amod_bench.runner.tracking): per backend, one tiny suite run on the test
session's Ray cluster, its tracked run read back with the library's own reader and compared with
the cell's metrics.jsonl and config.json; and the suite's `tracking` section's validation."""
from __future__ import annotations

import glob
import importlib.util
import json
import math
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from amod_bench.results import ResultsFolder
from amod_bench.runner import run_suite
from amod_bench.suite import SuiteError, expand, load_suite
from test_runner import ROOT, write_suite

def tracked_suite(tmp_path: Path, name: str, tracking: str) -> Path:
    """The smallest suite (one dense cell, 1 epoch, evaluations at steps 0, 10, 20) with `tracking`."""
    path = write_suite(tmp_path, name, """\
        - name: main
          grid: {router: dense}
        """)
    path.write_text(path.read_text() + textwrap.dedent(tracking))
    return path


def run_tracked(path: Path, overrides=()):
    """Run the suite's one cell; its Cell, result files, config.json and metrics.jsonl rows."""
    suite = load_suite(path)
    (cell,) = expand(suite)
    assert run_suite(path, overrides=overrides) == {cell.id: "done"}
    files = ResultsFolder(suite.output).cell(cell.id)
    return cell, files, json.loads(files.config.read_text()), files.read_metrics()


def curves(rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """metric -> [(step, value)] as a tracker should hold it: numeric, finite values but the step."""
    out: dict[str, list] = {}
    for row in rows:
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and math.isfinite(value):
                out.setdefault(key, []).append((row["step"], value))
    return out


def assert_curves(tracked: dict, expected: dict, rel: float = 1e-12) -> None:
    """Same metrics, same steps, values equal (to `rel`: TensorBoard keeps float32)."""
    assert set(tracked) == set(expected)
    for key, points in expected.items():
        assert [s for s, _ in tracked[key]] == [s for s, _ in points], key
        assert [v for _, v in tracked[key]] == pytest.approx([v for _, v in points], rel=rel), key


def flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# ---------------------------------------------------------------------------------------------
# MLflow: a file store, then a resumed run (its rows come as the checkpoint's history) in SQLite


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_mlflow_run_per_cell_holds_its_config_and_every_row(ray_cluster, tmp_path, monkeypatch, capsys):
    import mlflow
    from mlflow.tracking import MlflowClient

    # the runner allows MLflow's file store for a file: URI in this (the driver's) process; undone after
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    store = f"file:{tmp_path / 'mlruns'}"
    path = tracked_suite(tmp_path, "tracked-mlflow", f"""\
        tracking:
          backend: mlflow
          uri: {store}
          tags: {{study: transfer}}
        """)
    cell, files, config, rows = run_tracked(path)
    out, err = capsys.readouterr()
    assert f"tracking: MLflow experiment 'tracked-mlflow' at {store}" in out and "mlflow" not in err.lower()
    assert [r["step"] for r in rows] == [0, 10, 20]

    def check(uri: str, expected_rows: list[dict]) -> None:
        mlflow.set_tracking_uri(uri)
        (run,) = mlflow.search_runs(experiment_names=["tracked-mlflow"], output_format="list")
        assert run.info.run_name == cell.id and run.info.status == "FINISHED"
        assert run.data.tags["study"] == "transfer"
        assert run.data.params == {k: v if isinstance(v, str) else json.dumps(v) for k, v in flat(config).items()}
        client = MlflowClient(uri)
        expected = curves(expected_rows)
        assert {"val_top1", "val_top5", "val_loss", "train_loss", "lr", "epoch", "samples"} <= set(expected)
        assert set(run.data.metrics) == set(expected) | {"training_iteration"}
        assert_curves({key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
                       for key in expected}, expected)

    check(store, rows)

    # A rerun that resumes the cell from its final checkpoint gets its rows as the history, trains
    # nothing more, and still tracks the whole curve (here in MLflow's SQLite store)
    files.summary.unlink()
    database = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert run_tracked(path, overrides=[f"tracking.uri={database}"])[3] == rows
    assert "mlflow" not in capsys.readouterr().err.lower()  # creating the database's tables: in the log file
    check(database, rows)


# ---------------------------------------------------------------------------------------------
# W&B, offline: the run's transaction log, read back record by record

def wandb_records(path: str):
    """The protobuf records of a .wandb file (W&B's LevelDB-style log: a 7-byte header, then
    32 KiB blocks of chunks, each with a 7-byte header: CRC, length, type)."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1)
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:  # padding to the block's end
            pos += (32768 - pos % 32768) % 32768
            continue
        pending = chunk if kind in (1, 2) else pending + chunk  # full, first | middle, last
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_wandb_offline_run_per_cell_in_the_suites_group(ray_cluster, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    path = tracked_suite(tmp_path, "tracked-wandb", """\
        tracking:
          backend: wandb
          uri: lab/amod
          tags: {study: transfer}
        """)
    cell, files, config, rows = run_tracked(path)
    out, err = capfd.readouterr()
    assert f"offline runs in {tmp_path / 'wandb'}" in out
    # W&B says nothing on the console (its lines start with "wandb:")
    assert not [line for line in (out + err).splitlines() if line.startswith("wandb")]

    (log,) = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "run-*.wandb"))
    records = list(wandb_records(log))
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.display_name, run.run_group, run.project, run.entity) == (cell.id, "tracked-wandb", "amod", "lab")
    assert list(run.tags) == ["study:transfer"]
    assert {u.key: json.loads(u.value_json) for u in run.config.update if u.key != "_wandb"} == config
    history = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            items = {i.nested_key[0] if i.nested_key else i.key: json.loads(i.value_json) for i in record.history.item}
            assert items["_step"] == record.history.step.num
            history[record.history.step.num] = {k: v for k, v in items.items() if not k.startswith("_")}
    assert list(history) == [0, 10, 20]
    tracked = {}
    for step, items in history.items():
        for key, value in items.items():
            tracked.setdefault(key, []).append((step, value))
    assert_curves(tracked, curves(rows))


# ---------------------------------------------------------------------------------------------
# TensorBoard: event files per cell under <log dir>/<suite>/, read back with TensorBoard's reader


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_tensorboard_event_files_per_cell_hold_every_row(ray_cluster, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    path = tracked_suite(tmp_path, "tracked-tb", f"""\
        tracking:
          backend: tensorboard
          uri: {tmp_path / 'tb'}
          tags: {{study: transfer}}
        """)
    cell, files, config, rows = run_tracked(path)

    folder = tmp_path / "tb" / "tracked-tb" / cell.id
    events = EventAccumulator(str(folder))
    events.Reload()
    expected = curves(rows)
    assert set(events.Tags()["scalars"]) == {f"ray/tune/{k}" for k in expected}
    assert_curves({k: [(e.step, e.value) for e in events.Scalars(f"ray/tune/{k}")] for k in expected}, expected,
                  rel=1e-6)

    (event_file,) = folder.glob("events.out.tfevents.*")
    hparams = {}
    for event in EventFileLoader(str(event_file)).Load():
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name == "hparams":
                data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                if data.HasField("session_start_info"):
                    hparams = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
                               for k, v in data.session_start_info.hparams.items()}
    assert hparams["id"] == cell.id and hparams["tags.study"] == "transfer"
    assert hparams["lr"] == config["lr"] and hparams["resources.workers"] == 1
    assert hparams["grad_clip"] == "null" and json.loads(hparams["axes"]) == config["axes"]


# ---------------------------------------------------------------------------------------------
# the suite section

SUITE = """\
name: tracked
stages:
  - name: main
    grid: {model: vit_nano_patch7_28, dataset: "bundled:digits", router: dense}
"""


def write(tmp_path: Path, tracking: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE + textwrap.dedent(tracking))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(SuiteError) as caught:
        load_suite(path, check_data=False)
    return [str(p) for p in caught.value.problems]


def test_unknown_backend_is_a_problem_at_its_line(tmp_path):
    path = write(tmp_path, "tracking:\n  backend: mlfow\n")
    assert problems(path) == [f"{path}:6: tracking.backend: unknown value str 'mlfow' "
                              "(allowed: none, mlflow, wandb, tensorboard; did you mean 'mlflow'?)"]


@pytest.mark.parametrize("backend, module, extra", [("mlflow", "sqlalchemy", "mlflow"), ("wandb", "wandb", "wandb"),
                                                    ("tensorboard", "tensorboardX", "tensorboard")])
def test_missing_package_names_the_extra_to_install(tmp_path, monkeypatch, backend, module, extra):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else find_spec(name, *a))
    path = write(tmp_path, f"tracking: {{backend: {backend}}}\n")
    (problem,) = problems(path)
    assert problem.startswith(f"{path}:5: tracking.backend: tracking backend '{backend}' needs {module}, ")
    assert problem.endswith(f"install the '{extra}' extra: pip install -e \".[{extra}]\"")


def test_section_problems_each_at_their_line(tmp_path):
    path = write(tmp_path, """\
        tracking:
          backend: wandb
          uri: team/project/run
          tags: {study: 3}
          url: x
        """)
    assert problems(path) == [
        f"{path}:7: tracking.uri: expected a W&B project, PROJECT or ENTITY/PROJECT, got 'team/project/run'",
        f"{path}:8: tracking.tags.study: expected a string, got int 3",
        f"{path}:9: tracking.url: unknown key (allowed: backend, uri, tags; did you mean 'uri'?)",
    ]


def test_local_stores_resolve_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for backend, uri, resolved in [("mlflow", "file:./mlruns", f"file:{tmp_path / 'mlruns'}"),
                                   ("mlflow", "runs/ml", str(tmp_path / "runs" / "ml")),
                                   ("mlflow", "sqlite:///mlflow.db", "sqlite:///mlflow.db"),
                                   ("mlflow", "http://127.0.0.1:5000", "http://127.0.0.1:5000"),
                                   ("tensorboard", "tb", str(tmp_path / "tb")),
                                   ("wandb", "team/project", "team/project")]:
        suite = load_suite(write(tmp_path, f"tracking: {{backend: {backend}, uri: '{uri}'}}\n"), check_data=False)
        assert suite.tracking.uri == resolved
    assert load_suite(write(tmp_path, ""), check_data=False).tracking.backend == "none"


def test_tracking_leaves_cell_ids_and_configs_alone(tmp_path):
    plain = expand(load_suite(write(tmp_path, ""), check_data=False))
    tracked = expand(load_suite(write(tmp_path, "tracking: {backend: tensorboard, uri: tb, tags: {a: b}}\n"),
                                check_data=False))
    assert [c.id for c in tracked] == [c.id for c in plain]
    assert [c.config.to_json() for c in tracked] == [c.config.to_json() for c in plain]


def test_validating_a_tracked_suite_imports_no_tracking_library(tmp_path):
    path = write(tmp_path, "tracking: {backend: mlflow}\n")
    code = (f"import sys\nfrom amod_bench.suite import load_suite\nload_suite({str(path)!r})\n"
            "loaded = {'torch', 'ray', 'mlflow', 'sqlalchemy', 'wandb', 'tensorboardX'} & set(sys.modules)\n"
            "assert not loaded, loaded\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
