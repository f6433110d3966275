"""`bench.py report`: exit codes, flagged-cells section, idempotent output, atomic writes, no Ray."""
import argparse
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from amod_bench.report import cli
from amod_bench.report.build import ReportOptions, build_report
from amod_bench.report.output import atomic_write_text
from fixtures_report import DENSE_KNOTS, Cell, known_suite, write_suite

REPO = Path(__file__).resolve().parents[1]
TABLES = ("verdict", "zero_shot", "flagged", "cells", "accuracy_best", "accuracy_final", "targets",
          "time_to_target_cells", "time_to_target", "speedup", "profile")
MARKDOWN = ("verdict", "zero_shot", "flagged", "cells", "accuracy_best", "accuracy_final", "targets",
            "time_to_target_cells", "time_to_target_peak", "time_to_target_common", "speedup_peak", "speedup_common",
            "profile")
TABLE_FILES = [f"{t}.csv" for t in TABLES] + [f"{m}.md" for m in MARKDOWN]


def run_cli(*argv) -> int:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.main(parser.parse_args([str(a) for a in argv]))


def snapshot(out: Path) -> dict[str, bytes]:
    files = [*sorted((out / "tables").iterdir()), out / "index.md"]
    return {p.name: p.read_bytes() for p in files}


@pytest.fixture(scope="module")
def flagged_suite(tmp_path_factory):
    """known_suite plus a failed, a diverged and a killed cell (all with extreme accuracies)."""
    root = known_suite(tmp_path_factory.mktemp("flagged"), name="flagged")
    peak = [(0, 20.0), (2, 99.0), (10, 99.0)]
    from fixtures_report import write_cell
    extra = [Cell("amod", 0.5, 7, peak, status="failed"), Cell("amod", 0.5, 8, peak, status="diverged"),
             Cell("amod", 0.5, 9, peak, status=None)]
    for c in extra:
        write_cell(root, c, "flagged")
    return root, extra


def test_cli_on_a_fixture_folder_exits_0_and_lists_flagged_cells(flagged_suite, tmp_path, capsys):
    root, extra = flagged_suite
    out = tmp_path / "report"
    assert run_cli(root, "--out", out, "--no-figures") == 0
    assert "3 flagged" in capsys.readouterr().out
    index = (out / "index.md").read_text()
    flagged_section = index.split("## Flagged cells")[1].split("## ")[0]
    for c in extra:
        assert c.id in flagged_section
    assert "CUDA out of memory" in flagged_section and "diverged" in flagged_section
    assert "no summary.json" in flagged_section
    # their 99% accuracies stay out of the means: amod's best-epoch mean is the clean 80
    best = (out / "tables" / "accuracy_best.csv").read_text().splitlines()
    header = best[0].split(",")
    amod = next(line.split(",") for line in best[1:] if ",amod," in line)
    assert float(amod[header.index("top1_mean")]) == 80.0 and amod[header.index("n")] == "3"
    assert sorted(p.name for p in (out / "tables").iterdir()) == sorted(TABLE_FILES)
    assert all((out / "tables" / name).stat().st_size > 0 for name in TABLE_FILES)


def test_cli_errors_exit_nonzero_with_a_message(tmp_path, capsys):
    assert run_cli(tmp_path / "missing") == 2
    assert "results folder not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert run_cli(tmp_path / "empty") == 2
    assert "not a results folder" in capsys.readouterr().err
    a = known_suite(tmp_path / "a", name="a", seeds=(0,))
    assert run_cli(a, a) == 2
    assert "--out" in capsys.readouterr().err


def test_default_out_is_inside_the_results_folder_and_suites_combine(tmp_path):
    a = known_suite(tmp_path / "a", name="a", seeds=(0,))
    b = known_suite(tmp_path / "b", name="b", seeds=(1, 2))
    assert run_cli(a, "--no-figures") == 0
    assert (a / "report" / "index.md").is_file()
    out = tmp_path / "ab"
    assert run_cli(a, b, "--out", out, "--no-figures") == 0
    cells = (out / "tables" / "cells.csv").read_text()
    assert cells.count("\na,") == 5 and cells.count("\nb,") == 10


def test_options_reach_the_tables(tmp_path):
    root = known_suite(tmp_path, seeds=(0,))
    out = tmp_path / "rel"
    assert run_cli(root, "--out", out, "--no-figures", "--peak-mode", "relative", "--target-top1", "50") == 0
    index = (out / "index.md").read_text()
    assert "x (1 - 2/100) (relative)" in index
    targets = (out / "tables" / "targets.csv").read_text()
    assert "50.0,--target-top1" in targets
    # the common rule: by default the lowest median best (random's 70 in known_suite), the dense median on request
    for flag, target, source in (((), "70.0", "lowest median best: random"),
                                 (("--common-target", "dense"), "80.0", "dense median best")):
        out = tmp_path / f"rule{len(flag)}"
        assert run_cli(root, "--out", out, "--no-figures", *flag) == 0
        assert f"0.5,{target},{source}" in (out / "tables" / "targets.csv").read_text()


def test_index_opens_with_the_verdict_then_figures_then_tables_each_with_how_to_read(flagged_suite, tmp_path):
    out = tmp_path / "report"
    build_report([flagged_suite[0]], out, ReportOptions(n_boot=200, figures=False), log=lambda m: None)
    index = (out / "index.md").read_text()
    sections = [line for line in index.splitlines() if line.startswith("## ")]
    assert sections[:3] == ["## Verdict", "## Figures", "## Detailed tables"]
    assert sections[3:] == ["## Skipped"]  # what was not drawn (no figures, no analysis files), last
    verdict = index.split("## Verdict")[1].split("## Figures")[0]
    assert verdict.index("How to read:") < verdict.index("| C | comparison | seeds |")
    # known_suite: amod reaches every target before mod, isoflop and dense on all 3 (noiseless) seeds
    assert "| 0.5 | A-MoD vs MoD | 3 paired |" in verdict and "A-MoD faster" in verdict
    tables = index.split("## Detailed tables")[1]
    titles = [line for line in tables.splitlines() if line.startswith("### ")]
    assert titles[0] == "### Zero-shot adaptation (paper Table 3)" and "### Flagged cells" in titles
    for block in tables.split("### ")[1:]:
        assert block.splitlines()[2].startswith("How to read: "), block.splitlines()[0]


def test_regenerating_gives_identical_tables_and_index(flagged_suite, tmp_path):
    out = tmp_path / "report"
    options = ReportOptions(n_boot=500, figures=False)  # figures: see test_report_with_figures_... below
    build_report([flagged_suite[0]], out, options, log=lambda m: None)
    before = snapshot(out)
    build_report([flagged_suite[0]], out, options, log=lambda m: None)
    assert snapshot(out) == before
    assert sorted(before) == sorted([*TABLE_FILES, "index.md"])
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # no temporary files left behind


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "table.csv"
    atomic_write_text(target, "old\n")

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, "new, but never finished\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_report_with_figures_in_a_fresh_process_never_imports_ray_or_torch(tmp_path):
    cells = [Cell("dense", None, s, DENSE_KNOTS) for s in range(2)]
    cells += [Cell(r, 0.5, s, DENSE_KNOTS) for r in ("mod", "amod") for s in range(2)]
    root = write_suite(tmp_path, "noray", cells)
    code = textwrap.dedent(f"""
        import sys
        from amod_bench.cli import main
        rc = main(["report", {str(root)!r}, "--bootstrap", "100"])
        assert rc == 0, rc
        assert "amod_bench.report.figures" in sys.modules  # the figures really were drawn
        bad = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray.") or m == "torch")
        print("IMPORTED", bad)
        sys.exit(1 if bad else 0)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "IMPORTED []" in proc.stdout
    index = (root / "report" / "index.md").read_text()
    for name in ("forest", "convergence_epoch", "convergence_gmacs", "convergence_seconds", "isoflop_accuracy",
                 "speedup", "performance_profile"):
        png, pdf = root / "report" / "figures" / f"{name}.png", root / "report" / "figures" / f"{name}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5_000
        assert f"(figures/{name}.png)" in index
    # no checkpoint anywhere: the routing maps are skipped with a message, not a failure; no step-0 eval: no
    # zero-shot figure
    assert "routing maps: no amod/mod/cls cell kept a checkpoint" in index
    assert "zero-shot figure: no routed cell starts from a checkpoint; skipped" in index


def test_report_of_a_suite_whose_every_cell_failed_says_what_it_left_out(tmp_path, capsys):
    # e.g. a suite whose storage was full: each cell failed at its first checkpoint, after one eval
    cells = [Cell(router, 0.5, seed, [(0, 10.0), (10, 60.0)], status="failed")
             for router in ("mod", "amod") for seed in (0, 1)]
    root = write_suite(tmp_path, "all_failed", cells)
    out = tmp_path / "report"
    assert run_cli(root, "--out", out, "--no-routing-maps") == 0
    printed = capsys.readouterr().out
    assert "convergence curves: no finished cell with evals; skipped" in printed
    flagged = (out / "index.md").read_text().split("## Flagged cells")[1].split("## ")[0]
    assert all(c.id in flagged for c in cells)
