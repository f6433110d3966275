"""Accuracy over seeds: flagged cells stay out, t intervals, FLOP ratios beside the accuracies."""
import numpy as np
import pytest

from amod_bench.report.accuracy import accuracy_table, t_interval
from amod_bench.report.groups import add_variant_columns
from amod_bench.report.load import load_results
from fixtures_report import GMACS_DENSE, Cell, gmacs_of, write_suite


def knots(peak, final=None):
    """Rises to `peak` at epoch 5, then linearly to `final` at epoch 10."""
    return [(0, 20.0), (5, peak), (10, peak if final is None else final)]


@pytest.fixture
def table_inputs(tmp_path):
    cells = [Cell("dense", None, s, knots(p, p - 1)) for s, p in enumerate((80.0, 81.0, 82.0))]
    cells += [Cell("isoflop", 0.5, s, knots(p)) for s, p in enumerate((74.0, 75.0, 76.0))]
    cells += [Cell("amod", 0.5, s, knots(p, p - 2)) for s, p in enumerate((78.0, 79.0, 80.0))]
    # flagged cells with extreme values: if they entered the means, the amod mean would move
    cells += [Cell("amod", 0.5, 7, knots(99.0), status="failed"), Cell("amod", 0.5, 8, knots(99.0), status="diverged"),
              Cell("amod", 0.5, 9, knots(99.0), status="running")]
    res = load_results(write_suite(tmp_path, "acc", cells))
    frame, _, _ = add_variant_columns(res.cells)
    return frame


def test_best_and_final_means_exclude_flagged_cells(table_inputs):
    best = accuracy_table(table_inputs, "best").set_index("router")
    final = accuracy_table(table_inputs, "final").set_index("router")
    assert best.loc["amod", "n"] == 3 and best.loc["amod", "top1_mean"] == pytest.approx(79.0)
    assert final.loc["amod", "top1_mean"] == pytest.approx(77.0)
    assert best.loc["dense", "top1_mean"] == pytest.approx(81.0)
    assert final.loc["dense", "top1_mean"] == pytest.approx(80.0)
    assert best.loc["amod", "top1_std"] == pytest.approx(1.0)
    assert (best["which"] == "best").all() and (final["which"] == "final").all()
    # 95% t interval, n = 3: mean +- 4.303 * 1 / sqrt(3)
    half = 4.302652729749462 / np.sqrt(3)
    assert best.loc["amod", "top1_ci_low"] == pytest.approx(79.0 - half)
    assert best.loc["amod", "top1_ci_high"] == pytest.approx(79.0 + half)
    assert best.loc["amod", "top5_mean"] == pytest.approx(94.0)


def test_flop_ratios_sit_beside_the_accuracies(table_inputs):
    best = accuracy_table(table_inputs, "best").set_index("router")
    amod, iso = gmacs_of("amod", 0.5), gmacs_of("isoflop", 0.5)
    assert best.loc["amod", "gmacs"] == pytest.approx(amod)
    assert best.loc["amod", "flop_ratio_isoflop"] == pytest.approx(amod / iso)  # the mismatched pair shows
    assert best.loc["amod", "flop_ratio_dense"] == pytest.approx(amod / GMACS_DENSE)
    assert best.loc["isoflop", "flop_ratio_isoflop"] == pytest.approx(1.0)
    assert best.loc["dense", "flop_ratio_dense"] == pytest.approx(1.0)
    assert np.isnan(best.loc["dense", "flop_ratio_isoflop"])


def test_t_interval():
    low, high = t_interval([1.0, 2.0, 3.0])
    assert (low + high) / 2 == pytest.approx(2.0) and high - low == pytest.approx(2 * 4.302652729749462 / np.sqrt(3))
    assert all(np.isnan(t_interval([5.0])))
    assert t_interval([2.0, 2.0]) == (2.0, 2.0)


def test_unknown_choice_raises(table_inputs):
    with pytest.raises(ValueError, match="best"):
        accuracy_table(table_inputs, "mean")
