"""benchmarks/gpu/run.sh --smoke: the prepared GPU run, on the CPU, with what the GPU machine lacks made unimportable.

The smoke run goes through run.sh exactly as on the GPU machine (wheels, PYTHONPATH,
timeout, `python -m amod_bench.perf.gpu_run`), on one tiny model. A `sitecustomize`
on its PYTHONPATH makes Ray, webdataset, pandas, seaborn and scikit-learn unimportable,
as they are there. Timing is never asserted: only that every planned
configuration has a row that is measured (finite ratios), failed or skipped with a reason.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from amod_bench import flops
from amod_bench.models import model_config
from amod_bench.perf import gpu_run, gpu_sections
from amod_bench.perf.variants import variants
from amod_bench.routers.layout import resolve_routed_layers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_SH = os.path.join(REPO, "benchmarks", "gpu", "run.sh")
ABSENT_ON_GPU = ("ray", "webdataset", "pandas", "seaborn", "sklearn")
# None in sys.modules: `import x` raises ImportError and importlib.util.find_spec("x") is None, as when absent
BLOCKER = f"import sys\nsys.modules.update(dict.fromkeys({ABSENT_ON_GPU!r}))\n"
PLAN = gpu_run.SMOKE
MODEL = PLAN.models[0]
ROUTED_BLOCKS = {str(i) for i in resolve_routed_layers(model_config(MODEL)["depth"], "every_other")}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    (site / "sitecustomize.py").write_text(BLOCKER)
    out = tmp_path_factory.mktemp("gpu") / "out"
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", RUN_SH, str(out), "--smoke"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "gpu_perf.json").read_text())
    return proc.stdout, result, out


def test_the_run_records_its_machine_plan_and_command_and_finishes_every_section(smoke):
    text, result, out = smoke
    meta = result["meta"]
    assert meta["command"] == f"bash benchmarks/gpu/run.sh {out} --smoke" and meta["mode"] == "smoke"
    assert {"torch", "timm", "python", "gpu_name", "cpu_model", "device", "date"} <= set(meta["environment"])
    assert meta["environment"]["torch"] == torch.__version__ and meta["dtype"] == "bfloat16"
    assert meta["plan"]["models"] == [MODEL] and meta["wall_s"] > 0
    assert meta["sections_selected"] == list(gpu_run.SECTIONS) and set(result["sections"]) == set(gpu_run.SECTIONS)
    for name, section in result["sections"].items():
        assert section["status"] == "done", (name, section)
        assert section["budget_s"] == PLAN.budgets[name] and section["seconds"] >= 0
    assert not [r for r in result["rows"] if r.get("error") or r.get("skipped")]
    assert (out / "log.txt").read_text().strip().endswith("0 configuration(s) failed (error rows)")
    assert "goal train_vs_flop:" in text


def test_train_rows_cover_every_variant_eager_and_the_planned_ones_compiled(smoke):
    _, result, _ = smoke
    train = [r for r in result["rows"] if r["kind"] == "train"]
    eager = {(r["router"], r["capacity"], r["score_impl"]): r for r in train if not r["compiled"]}
    planned = variants(PLAN.routers, PLAN.capacities, PLAN.score_impls)
    assert len(eager) == len(planned) == len([r for r in train if not r["compiled"]])
    for row in eager.values():
        assert row["batch_size"] == PLAN.train_batch and row["optimizer"] == "AdamW"
        assert row["train_rounds"] == PLAN.iters and _finite(row["train_time_ratio"])
        assert row["train_step_time_q1"] <= row["train_step_time"] <= row["train_step_time_q3"]
        assert row["train_efficiency"] == pytest.approx(row["flop_ratio"] / row["train_time_ratio"])
        assert _finite(row["train_step_mem_mb"])
        options = {"score_impl": row["score_impl"]} if row["router"] in ("amod", "cls") else {}
        expected = 1.0 if row["router"] == "dense" else flops.flop_ratio(
            MODEL, router=row["router"], capacity=row["capacity"], **options)
        assert row["flop_ratio"] == pytest.approx(expected)
        assert (row["train_over_mod"] is not None) == (row["router"] not in ("dense", "mod"))
    compiled = [r for r in train if r["compiled"]]
    planned = gpu_run.compile_variants(PLAN)
    assert [(r["router"], r["capacity"]) for r in compiled] == [(v.router, v.capacity) for v in planned]
    assert [r["score_impl"] for r in compiled if r["router"] == "amod"] == [
        v.score_impl for v in planned if v.router == "amod"]
    for row in compiled:
        assert row["compile_backend"] == PLAN.compile_backend and row["compile_scope"] == "blocks"
        assert _finite(row["compile_s"]) and isinstance(row["graph_breaks"], int)
        assert isinstance(row["graph_break_reasons"], list) and _finite(row["train_time_ratio"])


def test_inference_at_the_paper_batch_and_at_the_largest_batch_found(smoke):
    _, result, _ = smoke
    infer = [r for r in result["rows"] if r["kind"] == "infer"]
    paper = [r for r in infer if r["batch_policy"] == "paper"]
    largest = [r for r in infer if r["batch_policy"] == "max"]
    assert len(paper) == len(largest) == len(variants(PLAN.routers, PLAN.capacities, PLAN.score_impls))
    assert {r["batch_size"] for r in paper} == {PLAN.infer_batch}
    # no out-of-memory on the CPU: doubling from the paper's batch stops at the cap's power of two
    assert {(r["batch_size"], r["max_batch_stop"]) for r in largest} == {(32, "cap")}
    for row in infer:
        assert _finite(row["infer_samples_per_sec"]) and _finite(row["infer_time_ratio"])


def test_numerics_rows_compare_bf16_with_fp32_and_the_score_paths(smoke):
    _, result, _ = smoke
    rows = [r for r in result["rows"] if r["kind"] == "numerics"]
    bf16 = [r for r in rows if r["check"] == "bf16_vs_fp32"]
    assert len(bf16) == len([v for v in variants(PLAN.routers, PLAN.capacities, PLAN.score_impls)
                             if v.router != "random"])
    for row in bf16:
        assert 0 <= row["top1_agreement"] <= 1 and row["logit_max_abs_err"] >= 0
        routed = row["router"] not in ("dense", "isoflop")
        assert (row["kept_agreement_min"] is not None) == routed
        if routed:
            assert set(row["kept_agreement"]) == ROUTED_BLOCKS
            assert 0 <= row["kept_agreement_min"] <= row["kept_agreement_mean"] <= 1
    paths = {(r["capacity"], r["dtype"]): r for r in rows if r["check"] == "chunked_vs_explicit"}
    assert set(paths) == {(c, d) for c in PLAN.capacities for d in ("float32", "bfloat16")}
    for capacity in PLAN.capacities:  # in fp32 both paths compute the same statistic: the same tokens
        assert paths[(capacity, "float32")]["kept_agreement_min"] >= 0.9
        assert paths[(capacity, "float32")]["logit_rel_err"] < 0.05


def test_memory_rows_and_the_summary_and_figure(smoke):
    _, result, out = smoke
    memory = [r for r in result["rows"] if r["kind"] == "memory"]
    assert {(r["router"], r["capacity"], r["score_impl"]) for r in memory} == {
        (v.router, v.capacity, v.score_impl) for v in variants(PLAN.mem_routers, PLAN.capacities, PLAN.score_impls)}
    assert all(r["img_size"] == 56 and _finite(r["train_step_mem_mb"]) for r in memory)
    assert all(_finite(r["mem_over_mod"]) for r in memory if r["router"] == "amod")

    summary = json.loads((out / "summary.json").read_text())["goals"]
    for goal in ("train_vs_flop", "amod_over_mod", "infer_amod_vs_isoflop"):
        assert summary[goal]["status"] in ("met", "not met") and summary[goal]["rows"], goal
    assert all(_finite(g["time_over_flop"]) for g in summary["train_vs_flop"]["rows"])
    assert any(g["compiled"] for g in summary["amod_over_mod"]["rows"])
    assert {(g["batch_policy"], g["capacity"]) for g in summary["infer_amod_vs_isoflop"]["rows"]} == {
        (p, c) for p in ("paper", "max") for c in PLAN.capacities}
    assert all(_finite(g["amod_over_isoflop"]) for g in summary["infer_amod_vs_isoflop"]["rows"])
    md = (out / "summary.md").read_text()
    for heading in ("### Training step over dense vs FLOP ratio", "### A-MoD over MoD", "### Inference: A-MoD vs isoFLOP",
                    "### torch.compile", "### Numerics", "### Sections"):
        assert heading in md
    with open(out / "gpu_perf.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_a_section_out_of_budget_records_every_configuration_as_skipped(tmp_path, keep_threads):
    assert gpu_run.main([str(tmp_path), "--smoke", "--sections", "train_compiled",
                         "--budget", "train_compiled=0"]) == 0
    result = json.loads((tmp_path / "gpu_perf.json").read_text())
    assert result["sections"]["train_compiled"]["status"] == "skipped"
    rows = result["rows"]
    assert len(rows) == len(gpu_run.compile_variants(PLAN))
    assert all("spent its budget of 0 s" in r["skipped"] and r.get("train_step_time") is None for r in rows)
    summary = json.loads((tmp_path / "summary.json").read_text())["goals"]
    assert summary["train_vs_flop"]["status"] == "not measured"
    assert [r["skipped"] for r in summary["compile"]["rows"]] == [r["skipped"] for r in rows]


def test_largest_batch_doubles_until_out_of_memory_or_the_cap():
    def fits_up_to(limit):
        def try_batch(batch):
            if batch > limit:
                raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {batch} MiB")
        return try_batch

    batch, stop = gpu_sections.largest_batch(fits_up_to(300), 100, 4096)
    assert batch == 200 and stop.startswith("OutOfMemoryError: CUDA out of memory") and stop.endswith("at batch 400")
    assert gpu_sections.largest_batch(fits_up_to(10 ** 6), 100, 1000) == (800, "cap")
    with pytest.raises(torch.OutOfMemoryError):
        gpu_sections.largest_batch(fits_up_to(50), 100, 1000)


@pytest.mark.parametrize("argv, message", [
    (["--budget", "compile=3"], "unknown section 'compile'"),
    (["--budget", "numerics=-1"], "SECONDS must be >= 0"),
    (["--budget", "numerics=soon"], "SECONDS must be a number"),
    (["--sections", "numerics,everything"], "unknown section 'everything'"),
    (["--deadline-s", "0"], "--deadline-s must be > 0"),
])
def test_bad_options_are_refused_before_anything_runs(tmp_path, argv, message):
    with pytest.raises(SystemExit, match=message):
        gpu_run.main([str(tmp_path / "out"), "--smoke", *argv])
    assert not (tmp_path / "out").exists()


def test_run_sh_needs_an_output_folder():
    proc = subprocess.run(["bash", RUN_SH], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "usage: bash benchmarks/gpu/run.sh OUT_DIR" in proc.stderr


def test_the_full_plan_refuses_a_machine_without_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the full plan would run")
    with pytest.raises(SystemExit, match="no CUDA device"):
        gpu_run.main([str(tmp_path / "out")])
    assert not (tmp_path / "out" / "gpu_perf.json").exists()


def test_non_finite_numbers_become_null_at_any_depth():
    from amod_bench.perf.output import finite_json
    assert finite_json({"rows": [{"a": float("nan"), "b": [1.5, float("inf")], "c": "x"}], "d": -float("inf")}) == {
        "rows": [{"a": None, "b": [1.5, None], "c": "x"}], "d": None}
