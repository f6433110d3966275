"""Time-to-target, speedups and performance profiles against analytically known answers.

known_suite (tests/fixtures_report.py): noiseless piecewise-linear curves, evals at
epochs 1..10, step = 100 e, train_macs = 3 x gmacs x 1e9 x 6400 e, seconds =
spe x e (amod spe 5, the others 10):

    dense   20 -> 80 at epoch 6 (slope 10)      isoflop 20 -> 80 at 5 (slope 12)
    mod     20 -> 80 at 4 (slope 15)            amod    20 -> 80 at 3 (slope 20)
    random  20 -> 70 at 10 (slope 5): never reaches the common target 80
"""
import math

import numpy as np
import pytest

from amod_bench.report import convergence
from amod_bench.report.groups import add_variant_columns
from amod_bench.report.load import load_results
from fixtures_report import AMOD_KNOTS, DENSE_KNOTS, Cell, gmacs_of, known_suite, synthetic_suite, write_suite

SLOPE = {"dense": 10.0, "isoflop": 12.0, "mod": 15.0, "amod": 20.0, "random": 5.0}
PEAK = {"dense": 80.0, "isoflop": 80.0, "mod": 80.0, "amod": 80.0, "random": 70.0}
SECONDS_PER_EPOCH = {"amod": 5.0}


def expected_epoch(router: str, target: float) -> float:
    if target > PEAK[router]:
        return math.inf
    return (target - 20.0) / SLOPE[router]


def expected_units(router: str, capacity, epoch: float) -> dict:
    return {"epoch": epoch, "step": 100 * epoch, "train_macs": 3 * gmacs_of(router, capacity) * 1e9 * 6400 * epoch,
            "train_seconds": SECONDS_PER_EPOCH.get(router, 10.0) * epoch}


def _ttt(root, **kw):
    res = load_results(root)
    cells, _, _ = add_variant_columns(res.cells)
    return cells, res, convergence.times_to_target(cells, res.evals, **kw)


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    return known_suite(tmp_path_factory.mktemp("known"))


@pytest.mark.parametrize("peak_mode,common_rule", [("points", "lowest"), ("relative", "dense")])
def test_time_to_target_matches_the_analytic_value_in_every_unit(known, peak_mode, common_rule):
    _, _, ttt = _ttt(known, peak_mode=peak_mode, common_rule=common_rule)
    assert len(ttt) == 15 * 2  # one capacity compared: the dense cells have one row per rule too
    for row in ttt.itertuples():
        cap = None if row.router == "dense" else row.capacity
        if row.rule == "peak":
            peak = PEAK[row.router]
            target = peak - 2.0 if peak_mode == "points" else peak * 0.98
        else:
            # lowest: random's median best (70), the lowest of the arms at C=0.5; dense: the dense median best
            target = 70.0 if common_rule == "lowest" else 80.0
        assert row.target == pytest.approx(target)
        expected = expected_units(row.router, cap, expected_epoch(row.router, target))
        for unit, value in expected.items():
            assert getattr(row, unit) == pytest.approx(value, rel=1e-9), (row.cell, row.rule, unit)


def test_never_reaching_cell_is_infinite_and_not_reached(known):
    _, _, ttt = _ttt(known, common_rule="dense")
    slow = ttt[(ttt["router"] == "random") & (ttt["rule"] == "common")]
    assert len(slow) == 3 and not slow["reached"].any()
    for unit in ("epoch", "step", "train_macs", "train_seconds"):
        assert np.isinf(slow[unit]).all()
    med = convergence.median_times(ttt)
    row = med[(med["router"] == "random") & (med["rule"] == "common")].iloc[0]
    assert np.isinf(row["epoch"]) and row["reached"] == 0 and row["n"] == 3


def test_within_and_target_overrides(known):
    _, _, ttt = _ttt(known, within=5.0, common_top1=50.0)
    dense = ttt[ttt["router"] == "dense"].set_index("rule")
    assert dense.loc["peak", "target"].iloc[0] == 75.0
    assert dense.loc["peak", "epoch"].iloc[0] == pytest.approx(5.5)
    assert dense.loc["common", "epoch"].iloc[0] == pytest.approx(3.0)
    rnd = ttt[(ttt["router"] == "random") & (ttt["rule"] == "common")]
    assert rnd["epoch"].iloc[0] == pytest.approx(6.0)  # now reachable


def test_first_crossing_rule():
    units = np.array([[1, 10], [2, 20], [3, 30], [4, 40]], dtype=float)
    # first crossing wins even though the curve dips and crosses again later
    np.testing.assert_allclose(convergence.first_crossing(units, np.array([50, 70, 60, 90.0]), 65), [1.75, 17.5])
    # already above target at the first eval: that eval's value, no extrapolation
    np.testing.assert_allclose(convergence.first_crossing(units, np.array([70, 71, 72, 73.0]), 65), [1, 10])
    # a non-finite eval is skipped, interpolation runs between its finite neighbours
    np.testing.assert_allclose(convergence.first_crossing(units, np.array([50, np.nan, 70, 80.0]), 60), [2, 20])
    assert np.isinf(convergence.first_crossing(units, np.array([1, 2, 3, 4.0]), 65)).all()
    assert np.isnan(convergence.first_crossing(units, np.array([1, 2, 3, 4.0]), np.nan)).all()


def test_peak_target_modes():
    assert convergence.peak_target(80.0, 2.0, "points") == 78.0
    assert convergence.peak_target(80.0, 2.0, "relative") == pytest.approx(78.4)
    with pytest.raises(ValueError, match="peak mode"):
        convergence.peak_target(80.0, 2.0, "percent")


def test_common_target_uses_dense_median_and_lower_middle_for_even_seeds(tmp_path):
    cells = [Cell("dense", None, s, [(0, 20.0), (6, p), (10, p)]) for s, p in enumerate((70.0, 72.0, 74.0, 76.0))]
    res = load_results(write_suite(tmp_path, "even", cells))
    frame, _, _ = add_variant_columns(res.cells)
    targets = convergence.common_targets(frame, rule="dense")
    assert targets["common_target"].tolist() == [72.0]  # lower of the two middle bests (72, 74)
    assert targets.equals(convergence.common_targets(frame, rule="lowest").assign(
        target_source=targets["target_source"]))  # dense alone: both rules agree
    ttt = convergence.times_to_target(frame, res.evals, common_rule="dense")
    med = convergence.median_times(ttt)
    assert np.isfinite(med.loc[med["rule"] == "common", "epoch"]).all()  # 3 of 4 dense seeds reach it
    assert convergence.median_low([3.0, 1.0, 2.0]) == 2.0 and convergence.median_low([4.0, 1.0, 3.0, 2.0]) == 2.0


def test_speedups_are_ratios_of_medians_with_degenerate_cis_for_noiseless_data(known):
    _, _, ttt = _ttt(known, common_rule="dense")
    sp = convergence.speedups(ttt, n_boot=500, seed=0)
    # amod vs each baseline, common rule, epochs: 6/3, 5/3, 4/3
    amod = sp[(sp["router"] == "amod") & (sp["rule"] == "common") & (sp["unit"] == "epoch")].set_index("baseline")
    for base, ratio in (("dense", 2.0), ("isoflop", 5 / 3), ("mod", 4 / 3)):
        assert amod.loc[base, "speedup"] == pytest.approx(ratio)
        assert amod.loc[base, "ci_low"] == pytest.approx(ratio) and amod.loc[base, "ci_high"] == pytest.approx(ratio)
    # wall-clock: amod runs epochs twice as fast as dense
    secs = sp[(sp["router"] == "amod") & (sp["rule"] == "common") & (sp["unit"] == "train_seconds")]
    assert secs.set_index("baseline").loc["dense", "speedup"] == pytest.approx(4.0)
    # a router that never reaches the target: speedup 0 (router inf), CI at 0 as well
    rnd = sp[(sp["router"] == "random") & (sp["rule"] == "common")]
    assert (rnd["speedup"] == 0).all()
    assert set(sp["baseline"]) == {"dense", "isoflop", "mod"}
    assert not ((sp["router"] == sp["baseline"])).any() and "dense" not in set(sp["router"])


def test_bootstrap_ci_contains_the_true_ratio_and_is_deterministic(tmp_path):
    # per seed: dense reaches 80 at epoch 4, 6, 8; amod at 2, 3, 4 -> true median ratio 2, and 2 in every seed
    cells = []
    for s, (d, a) in enumerate(((4, 2), (6, 3), (8, 4))):
        cells.append(Cell("dense", None, s, [(0, 20.0), (d, 80.0), (10, 80.0)]))
        cells.append(Cell("amod", 0.5, s, [(0, 20.0), (a, 80.0), (10, 80.0)]))
        # the same arm under seeds that match no dense seed: the unpaired path
        cells.append(Cell("amod", 0.5, 10 + s, [(0, 20.0), (a, 80.0), (10, 80.0)], cell_id=f"amod-unpaired-s{10 + s}"))
    _, _, ttt = _ttt(write_suite(tmp_path, "spread", cells))
    ttt = ttt.assign(variant=np.where(ttt["cell"].str.startswith("amod-unpaired"), "unpaired", ttt["variant"]))
    sp = convergence.speedups(ttt, n_boot=2000, seed=0)
    rows = sp[(sp["rule"] == "common") & (sp["unit"] == "epoch") & (sp["baseline"] == "dense")].set_index("variant")
    paired, unpaired = rows.loc[rows.index != "unpaired"].iloc[0], rows.loc["unpaired"]
    assert paired["method"] == convergence.PAIRED_BOOTSTRAP and unpaired["method"] == convergence.UNPAIRED_BOOTSTRAP
    assert paired["speedup"] == pytest.approx(2.0) and unpaired["speedup"] == pytest.approx(2.0)
    # paired: every resample of seeds keeps ratio 2 exactly; unpaired: seeds spread the CI around 2
    assert paired["ci_low"] == pytest.approx(2.0) and paired["ci_high"] == pytest.approx(2.0)
    assert unpaired["ci_low"] < 2.0 < unpaired["ci_high"]
    again = convergence.speedups(ttt, n_boot=2000, seed=0)
    assert again[["speedup", "ci_low", "ci_high"]].equals(sp[["speedup", "ci_low", "ci_high"]])


def test_bootstrap_seed_fixes_the_ci():
    rng = np.random.default_rng(5)
    router, baseline = rng.uniform(1, 2, 8), rng.uniform(2, 4, 8)
    first = convergence.bootstrap_speedup(router, baseline, seed=3)
    assert convergence.bootstrap_speedup(router, baseline, seed=3) == first
    assert convergence.bootstrap_speedup(router, baseline, seed=4)[1:] != first[1:]
    assert first[1] < first[0] < first[2]


def test_bootstrap_speedup_on_arrays():
    point, low, high = convergence.bootstrap_speedup([1.0, 1.0], [3.0, 3.0], n_boot=100)
    assert (point, low, high) == (3.0, 3.0, 3.0)
    point, low, high = convergence.bootstrap_speedup([np.inf], [np.inf], n_boot=100)
    assert math.isnan(point) and math.isnan(low)  # neither reached: undefined, not a number
    point, low, high = convergence.bootstrap_speedup(np.array([[1.0, 2.0]]), np.array([[2.0, np.inf]]), n_boot=10)
    np.testing.assert_array_equal(point, [2.0, np.inf])


def test_dense_is_the_baseline_of_every_capacity(tmp_path):
    cells = [Cell("dense", None, s, DENSE_KNOTS) for s in range(2)]
    for cap in (0.25, 0.5):
        cells += [Cell("amod", cap, s, AMOD_KNOTS) for s in range(2)]
        cells += [Cell("mod", cap, s, DENSE_KNOTS) for s in range(2)]
    _, _, ttt = _ttt(write_suite(tmp_path, "caps", cells))
    sp = convergence.speedups(ttt, n_boot=100)
    amod = sp[(sp["router"] == "amod") & (sp["unit"] == "epoch") & (sp["rule"] == "common")]
    assert sorted(zip(amod["capacity"], amod["baseline"])) == [(0.25, "dense"), (0.25, "mod"), (0.5, "dense"),
                                                               (0.5, "mod")]
    assert amod["speedup"].tolist() == pytest.approx([2.0, 2.0, 2.0, 2.0])


def test_performance_profile_known_fractions(tmp_path):
    # two capacities; at 0.25 amod is fastest (3 vs dense 6), at 0.5 mod is (4 vs amod 8)
    fast, slow = [(0, 20.0), (3, 80.0), (10, 80.0)], [(0, 20.0), (8, 80.0), (10, 80.0)]
    mid = [(0, 20.0), (4, 80.0), (10, 80.0)]
    cells = [Cell("dense", None, 0, DENSE_KNOTS), Cell("amod", 0.25, 0, fast), Cell("amod", 0.5, 0, slow),
             Cell("mod", 0.5, 0, mid)]
    _, _, ttt = _ttt(write_suite(tmp_path, "profile", cells))
    med = convergence.median_times(ttt)
    prof = convergence.performance_profile(med, taus=[1.0, 1.5, 2.0, 4.0])
    got = prof[(prof["rule"] == "common") & (prof["unit"] == "epoch")]
    frac = {(r, t): f for r, t, f in zip(got["router_label"], got["tau"], got["fraction"])}
    # amod: ratio 1 at C=0.25, 8/4 = 2 at C=0.5; dense: 6/3 = 2 and 6/4 = 1.5; mod: absent at 0.25 (inf), 1 at 0.5
    assert [frac[("amod", t)] for t in (1.0, 1.5, 2.0, 4.0)] == [0.5, 0.5, 1.0, 1.0]
    assert [frac[("dense", t)] for t in (1.0, 1.5, 2.0, 4.0)] == [0.0, 0.5, 1.0, 1.0]
    assert [frac[("mod", t)] for t in (1.0, 1.5, 2.0, 4.0)] == [0.5, 0.5, 0.5, 0.5]
    assert got["n_workloads"].eq(2).all()


def test_default_common_target_is_reached_by_every_arm_on_most_seeds(tmp_path):
    """synthetic_suite: 2 capacities x 7 arms x 4 noisy seeds, peaks 72-82: the dense median best
    (~80) is out of reach for isoflop/random, the default (lowest) target is within every arm's reach."""
    root = synthetic_suite(tmp_path, models=("vit_tiny",), seeds=(0, 1, 2, 3), epochs=20)
    frame, res, ttt = _ttt(root)
    common = ttt[ttt["rule"] == "common"]
    per_arm = common.groupby(["workload", "capacity", "variant"])["reached"].agg(["sum", "size"])
    assert len(per_arm) == 2 * 7 and (per_arm["size"] == 4).all()
    assert (per_arm["sum"] >= 3).all(), per_arm[per_arm["sum"] < 3]  # most of 4 seeds: 3 (median_low)
    med = convergence.median_times(ttt)
    assert np.isfinite(med.loc[med["rule"] == "common", list(convergence.UNITS)].to_numpy()).all()
    targets = convergence.common_targets(frame)
    assert len(targets) == 2 and targets["target_source"].str.startswith("lowest median best: random").all()
    # the old rule stays available: there the weakest arms never reach the target
    _, _, dense_ttt = _ttt(root, common_rule="dense")
    reached = dense_ttt[(dense_ttt["rule"] == "common") & (dense_ttt["router"] == "random")]["reached"]
    assert not reached.any()


@pytest.mark.parametrize("common_rule", convergence.COMMON_RULES)
def test_explicit_targets_win_over_either_rule(tmp_path, common_rule):
    cells = [Cell("dense", None, s, DENSE_KNOTS, extra={"targets": {"within_peak_pct": 2.0, "top1": 60.0}})
             for s in (0, 1)]
    cells += [Cell("amod", 0.5, s, AMOD_KNOTS, extra={"targets": {"within_peak_pct": 2.0, "top1": 60.0}})
              for s in (0, 1)]
    res = load_results(write_suite(tmp_path, "explicit", cells))
    frame, _, _ = add_variant_columns(res.cells)
    suite = convergence.common_targets(frame, rule=common_rule)
    assert suite["common_target"].tolist() == [60.0] and suite["target_source"].tolist() == ["targets.top1"]
    cli = convergence.common_targets(frame, 55.0, rule=common_rule)
    assert cli["common_target"].tolist() == [55.0] and cli["target_source"].tolist() == ["--target-top1"]
    ttt = convergence.times_to_target(frame, res.evals, common_top1=55.0, common_rule=common_rule)
    dense = ttt[(ttt["rule"] == "common") & (ttt["router"] == "dense")]
    assert dense["epoch"].tolist() == pytest.approx([3.5, 3.5])  # 20 + 10 e = 55
    with pytest.raises(ValueError, match="common target rule"):
        convergence.common_targets(frame, rule="median")


def test_every_run_rule_is_reached_by_every_run_and_bounds_every_speedup_ci(tmp_path):
    root = synthetic_suite(tmp_path, models=("vit_tiny",), seeds=(0, 1, 2, 3), epochs=20)
    frame, res, ttt = _ttt(root, common_rule="every_run")
    common = ttt[ttt["rule"] == "common"]
    assert common["reached"].all() and np.isfinite(common[list(convergence.UNITS)].to_numpy()).all()
    targets = convergence.common_targets(frame, rule="every_run").set_index("capacity")
    for capacity, target in targets["common_target"].items():
        compared = frame[frame["ok"] & ((frame["capacity"] == capacity) | (frame["router"] == "dense"))]
        assert target == compared["best_top1"].min()
    assert targets["target_source"].str.startswith("lowest best of any run: ").all()
    sp = convergence.speedups(ttt, n_boot=200, seed=0)
    common_sp = sp[sp["rule"] == "common"]
    assert np.isfinite(common_sp[["speedup", "ci_low", "ci_high"]].to_numpy()).all()
    assert (common_sp["ci_low"] > 0).all()


def test_the_suites_common_rule_applies_unless_the_cli_gives_one(tmp_path):
    every_run = {"targets": {"within_peak_pct": 2.0, "top1": None, "common_rule": "every_run"}}
    bests = (70.0, 72.0, 74.0)
    cells = [Cell(router, cap, s, [(0, 20.0), (6, p), (10, p)], extra=every_run)
             for router, cap in (("dense", None), ("amod", 0.5)) for s, p in enumerate(bests)]
    res = load_results(write_suite(tmp_path, "rule", cells))
    frame, _, _ = add_variant_columns(res.cells)
    assert convergence.rules_in_use(frame) == ["every_run"]
    suite = convergence.common_targets(frame)
    assert suite["common_target"].tolist() == [70.0]
    assert suite["target_source"].iloc[0].startswith("lowest best of any run")
    cli = convergence.common_targets(frame, rule="lowest")
    assert cli["common_target"].tolist() == [72.0] and convergence.rules_in_use(frame, rule="lowest") == ["lowest"]
