"""The verdict: effects with CIs and words read off the CIs, on synthetic folders with known answers.

Curves are piecewise linear (tests/fixtures_report.py): each arm rises from its step-0 value at epoch 0 to a
plateau at a knee epoch, so the time to any target below the plateau, the best top-1 and step 0 are known.
"""
import warnings

import matplotlib
import numpy as np
import pytest
from scipy import stats

from amod_bench.report import convergence, figures, verdict, zero_shot
from amod_bench.report.groups import add_variant_columns
from amod_bench.report.load import load_results
from fixtures_report import Cell, write_suite

SEEDS = (0, 1, 2, 3)


def arm(router, capacity, seed, start, knee, plateau, **kw):
    return Cell(router, capacity, seed, [(0, start), (knee, plateau), (10, plateau)], step0=True, **kw)


def frames(root, n_boot=1000):
    res = load_results(root)
    cells, _, _ = add_variant_columns(res.cells)
    ttt = convergence.times_to_target(cells, res.evals)
    speed = convergence.speedups(ttt, n_boot=n_boot, seed=0)
    return cells, res, verdict.effects(cells, zero_shot.step0_top1(cells, res.evals), speed)


def pick(effects, router, baseline, measure):
    rows = effects[(effects["router"] == router) & (effects["baseline"] == baseline) & (effects["measure"] == measure)]
    assert len(rows) == 1, (router, baseline, measure, len(rows))
    return rows.iloc[0]


KNEE = {"dense": lambda s: 6 + s, "mod": lambda s: 6 + s, "amod": lambda s: 3 + s // 2}  # integer knees: every
START = {"dense": lambda s: 30.0, "mod": lambda s: 5.0 + s, "amod": lambda s: 20.0}  # crossing is between evals
PLATEAU = {"dense": lambda s: 84.0, "mod": lambda s: 80.0 + 0.5 * s, "amod": lambda s: 82.0 + 0.5 * s}  # on a line


def knee_arm(router, seed, capacity=0.5, **kw):
    curve = router if router in KNEE else "mod"  # isoflop and mod_tanh follow mod's curve
    return arm(router, capacity, seed, START[curve](seed), KNEE[curve](seed), PLATEAU[curve](seed), **kw)


def time_to(target, router, s):
    """Epoch at which the straight rise from START to PLATEAU at KNEE crosses `target`."""
    start, knee, plateau = START[router](s), KNEE[router](s), PLATEAU[router](s)
    return (target - start) * knee / (plateau - start)


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    """Per seed s = 0..3 at C=0.5: mod rises from 5 + s to 80 + s/2 at epoch 6 + s; amod from 20 (every seed) to
    82 + s/2 (2 points better) at epoch 3 + s//2 (sooner than mod on every seed) at half mod's seconds per epoch;
    dense from 30 to 84 at 6 + s; isoflop runs mod's curves exactly; mod_tanh runs mod's curves one point lower
    under seeds 4-7, which pair with no other arm's."""
    cells = []
    for s in SEEDS:
        cells += [knee_arm("dense", s, None), knee_arm("mod", s), knee_arm("isoflop", s),
                  knee_arm("amod", s, seconds_per_epoch=5.0)]
        cells.append(arm("mod_tanh", 0.5, s + 4, START["mod"](s), KNEE["mod"](s), PLATEAU["mod"](s) - 1.0))
    return frames(write_suite(tmp_path_factory.mktemp("verdict"), "verdict", cells))


def test_comparisons_are_the_issues_pairs(known):
    _, _, effects = known
    pairs = effects.drop_duplicates(["router", "baseline"])[["router", "baseline"]].apply(tuple, axis=1).tolist()
    assert pairs == [("amod", "mod"), ("amod", "isoflop"), ("amod", "dense"), ("mod_tanh", "mod")]
    assert set(effects["measure"]) == set(verdict.MEASURES)


def test_a_router_faster_by_construction_is_faster_with_a_ci_excluding_1(known):
    _, _, effects = known
    for unit in ("epoch", "train_macs", "train_seconds"):
        row = pick(effects, "amod", "mod", unit)
        assert row["ci_low"] > 1.0 and row["word"] == "A-MoD faster", (unit, row["ci_low"])
        assert row["method"] == convergence.PAIRED_BOOTSTRAP and row["paired"] and row["n_router"] == 4
    # common target at C=0.5: the lowest median best, mod_tanh's (79, 79.5, 80, 80.5 -> lower middle 79.5)
    mod = [time_to(79.5, "mod", s) for s in SEEDS]
    amod = [time_to(79.5, "amod", s) for s in SEEDS]
    assert pick(effects, "amod", "mod", "epoch")["estimate"] == pytest.approx(np.median(mod) / np.median(amod))
    assert pick(effects, "amod", "mod", "train_seconds")["estimate"] == pytest.approx(
        2 * np.median(mod) / np.median(amod))


def test_differences_have_the_known_sign_and_value(known):
    _, _, effects = known
    best = pick(effects, "amod", "mod", "best_top1")
    assert best["estimate"] == pytest.approx(2.0) and best["word"] == "A-MoD better"
    assert best["ci_low"] == pytest.approx(2.0) and best["ci_high"] == pytest.approx(2.0)  # 2 points on every seed
    worse = pick(effects, "amod", "dense", "best_top1")  # 82 + s/2 against 84: -2, -1.5, -1, -0.5
    assert worse["estimate"] == pytest.approx(-1.25) and worse["ci_high"] < 0 and worse["word"] == "A-MoD worse"
    step0 = pick(effects, "amod", "mod", "step0_top1")  # 20 against 5 + s
    assert step0["estimate"] == pytest.approx(13.5) and step0["word"] == "A-MoD better"
    # paired t: exactly scipy's CI on the per-seed differences
    low, high = stats.ttest_rel([20.0] * 4, [5.0 + s for s in SEEDS]).confidence_interval(0.95)
    assert (step0["ci_low"], step0["ci_high"]) == pytest.approx((low, high))
    assert step0["method"] == verdict.PAIRED_T
    # isoflop runs mod's exact curves: A-MoD against either gets the same effects, but in training MACs
    # (the fixture's isoflop is a little cheaper per epoch than mod)
    amod = effects[(effects["router"] == "amod") & (effects["measure"] != "train_macs")].set_index("measure")
    assert amod.loc[amod["baseline"] == "isoflop", "estimate"].to_numpy() == pytest.approx(
        amod.loc[amod["baseline"] == "mod", "estimate"].to_numpy())


def test_identical_arms_give_no_effect_and_not_resolved(tmp_path):
    cells = [knee_arm(r, s) for s in SEEDS for r in ("mod", "random")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # zero-width CIs: no NaN, no RuntimeWarning
        _, _, effects = frames(write_suite(tmp_path, "same", cells))
    assert len(effects) == len(verdict.MEASURES)
    for row in effects.itertuples():
        assert row.estimate == pytest.approx(row.no_effect) and row.ci_low == pytest.approx(row.no_effect)
        assert row.ci_high == pytest.approx(row.no_effect) and row.word == "not resolved", row.measure


def test_unpaired_seeds_fall_back_to_welch_and_an_unpaired_bootstrap(known):
    cells, res, effects = known
    rows = effects[(effects["router"] == "mod_tanh") & (effects["baseline"] == "mod")].set_index("measure")
    assert not rows["paired"].any()
    assert set(rows.loc[list(verdict.DIFFERENCES), "method"]) == {verdict.WELCH_T}
    assert set(rows.loc[list(verdict.SPEEDUPS), "method"]) == {convergence.UNPAIRED_BOOTSTRAP}
    mod = [PLATEAU["mod"](s) for s in SEEDS]
    tanh = [m - 1.0 for m in mod]
    best = rows.loc["best_top1"]
    assert best["estimate"] == pytest.approx(-1.0)
    # Welch: scipy's interval (both samples vary here, so scipy has no zero-variance trouble to warn about)
    low, high = stats.ttest_ind(tanh, mod, equal_var=False).confidence_interval(0.95)
    assert (best["ci_low"], best["ci_high"]) == pytest.approx((low, high))
    assert best["word"] == "not resolved"  # -1 point against a spread of 1.5 points in 4 unpaired seeds


def test_word_reads_the_ci_only():
    assert verdict.word("epoch", 1.01, 3.0, "A-MoD") == "A-MoD faster"
    assert verdict.word("epoch", 0.2, 0.99, "A-MoD") == "A-MoD slower"
    assert verdict.word("epoch", 0.5, np.inf, "A-MoD") == "not resolved"
    assert verdict.word("best_top1", -0.1, 5.0, "MoD-tanh") == "not resolved"  # point estimate would say better
    assert verdict.word("best_top1", 0.1, 0.1, "MoD-tanh") == "MoD-tanh better"
    assert verdict.word("best_top1", 1.0, 2.0, "A-MoD", n_seeds=1) == "too few seeds"
    assert verdict.word("epoch", np.nan, np.nan, "A-MoD") == "no estimate"


def test_zero_shot_table_holds_the_step0_rows_and_the_fraction_kept(known):
    cells, res, _ = known
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = zero_shot.zero_shot_table(cells, res.evals).set_index("router")
    assert table.loc["amod", "step0_mean"] == pytest.approx(20.0)
    assert table.loc["amod", "step0_ci_low"] == table.loc["amod", "step0_ci_high"] == pytest.approx(20.0)
    assert table.loc["mod", "step0_mean"] == pytest.approx(np.mean([5.0 + s for s in SEEDS]))
    step0 = res.evals[res.evals["step"] == 0].merge(cells[["cell", "router"]], on="cell")
    for router, group in step0.groupby("router"):
        assert table.loc[router, "step0_mean"] == pytest.approx(group["val_top1"].mean())
        assert table.loc[router, "n"] == len(group)
    assert (table["parent_top1"] == 30.0).all()  # the dense cells' step 0: the parent's weights, unrouted
    assert table.loc["amod", "kept"] == pytest.approx(20.0 / 30.0) and table.loc["dense", "kept"] == 1.0
    # cells without a step-0 eval have none; a cell without init_from has none even with one
    assert zero_shot.step0_top1(cells.assign(init_from=None), res.evals).isna().all()


def test_forest_figure_rows_ci_bars_and_no_effect_lines(known):
    _, _, effects = known
    fig = figures.forest_figure(effects, verdict.MEASURES)
    try:
        axes = [ax for ax in fig.axes if ax.get_title()]
        assert len(axes) == len(verdict.MEASURES)
        n_rows = len(effects.drop_duplicates(["router", "baseline", "capacity"]))
        assert len(axes[0].get_yticklabels()) == n_rows == 4
        assert axes[0].get_yticklabels()[0].get_text() == "C=0.5 · A-MoD vs MoD"
        for ax, measure in zip(axes, verdict.MEASURES):
            line = [ln for ln in ax.lines if ln.get_gid() == "no_effect"]
            assert len(line) == 1
            assert line[0].get_xdata()[0] == (1.0 if measure in verdict.SPEEDUPS else 0.0)
            assert ax.get_xscale() == ("log" if measure in verdict.SPEEDUPS else "linear")
            bars = [c for c in ax.collections if c.get_gid() == "ci"]
            assert len(bars) == 1 and len(bars[0].get_segments()) == n_rows
        colors = {matplotlib.colors.to_hex(c) for c in [c for c in axes[0].collections if c.get_gid() == "ci"][0]
                  .get_colors()}
        assert colors == {figures.router_color("amod"), figures.router_color("mod_tanh")}
    finally:
        figures.close(fig)


def test_zero_shot_parent_reference_without_a_dense_arm(tmp_path):
    """No dense cell: the parent's own final eval serves when it was on the same dataset, else none."""
    def suite(name, parent_dataset):
        parent = Cell("dense", None, 0, [(0, 10.0), (10, 60.0)], stage="pretrain", dataset=parent_dataset,
                      cell_id="parent", extra={"init_from": None}, step0=True)
        cells = [parent] + [arm("amod", 0.5, s, 15.0, 4, 70.0, extra={"init_from": "parent"}) for s in (0, 1)]
        res = load_results(write_suite(tmp_path / name, name, cells))
        frame, _, _ = add_variant_columns(res.cells)
        return zero_shot.zero_shot_table(frame, res.evals).set_index("router")

    same = suite("same", "digits")
    assert list(same.index) == ["amod"]  # the parent logs step 0 too, but without init_from it is no zero-shot
    assert same.loc["amod", "parent_top1"] == 60.0 and same.loc["amod", "kept"] == pytest.approx(0.25)
    assert same.loc["amod", "parent_source"].startswith("parent's final eval")
    other = suite("other", "mnist")
    assert np.isnan(other.loc["amod", "parent_top1"]) and np.isnan(other.loc["amod", "kept"])
    assert other.loc["amod", "parent_source"].startswith("none")


def test_a_zero_speedup_says_whether_the_router_never_got_there_or_the_baseline_started_there():
    from types import SimpleNamespace

    from amod_bench.report.markdown import effect_text

    row = dict(measure="epoch", estimate=0.0, ci_low=0.0, ci_high=0.0, word="A-MoD slower")
    started_there = SimpleNamespace(**row, router_median=1.2, baseline_median=0.0)
    never_reached = SimpleNamespace(**row, router_median=float("inf"), baseline_median=3.0)
    assert effect_text(started_there).startswith("baseline at target from step 0")
    assert effect_text(never_reached).startswith("router not reached")
