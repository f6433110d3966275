"""Figures: inspect the matplotlib objects (facets, titles, lines, target line), then the files."""
import matplotlib
import numpy as np
import pytest

from amod_bench.report import convergence, figures
from amod_bench.report.accuracy import accuracy_table
from amod_bench.report.groups import add_variant_columns
from amod_bench.report.load import load_results
from amod_bench.routers.traits import routers_in_display_order
from fixtures_report import Cell, write_suite

MODELS = ("vit_a", "vit_b")
CAPS = (0.25, 0.5)
SPEED = {"dense": 6, "mod": 4, "amod": 3}  # epoch at which each router reaches 80


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    cells = []
    for model in MODELS:
        for s in (0, 1):
            cells.append(Cell("dense", None, s, [(0, 20.0), (SPEED["dense"], 80.0), (10, 80.0)], model=model))
            for cap in CAPS:
                for router in ("mod", "amod"):
                    cells.append(Cell(router, cap, s, [(0, 20.0), (SPEED[router], 80.0 + s), (10, 80.0 + s)],
                                      model=model))
    return write_suite(tmp_path_factory.mktemp("fig"), "fig", cells)


@pytest.fixture(scope="module")
def frames(suite):
    res = load_results(suite)
    cells, _, _ = add_variant_columns(res.cells)
    ttt = convergence.times_to_target(cells, res.evals)
    return cells, res, ttt


def _curves(ax):
    return [line for line in ax.lines if line.get_gid() is None and len(line.get_xdata()) > 1]


def _title(model, cap, stage="finetune", dataset="digits"):
    return f"{stage} · {model} · {dataset}\nC = {cap:g}"


def _assert_no_empty_axes(fig, expected):
    """Exactly `expected` visible axes, each with data drawn on it (no empty facet)."""
    visible = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert len(visible) == expected
    for ax in visible:
        assert ax.has_data(), f"empty facet {ax.get_title()!r}"
        assert _curves(ax) or ax.collections or ax.patches, f"nothing drawn in {ax.get_title()!r}"


def _titles_do_not_overlap(fig):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_visible() and ax.get_title()]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), "facet titles overlap"


@pytest.mark.parametrize("x", ["epoch", "gmacs", "seconds"])
def test_convergence_facets_lines_bands_and_target(frames, x):
    cells, res, _ = frames
    data = figures.convergence_data(cells, res.evals)
    grid = figures.convergence_figure(data, convergence.common_targets(cells), x)
    try:
        axes = list(grid.axes.flat)
        combos = data[["stage", "model", "dataset", "recipe", "capacity"]].drop_duplicates()
        assert len(axes) == len(combos) == len(MODELS) * len(CAPS)
        _assert_no_empty_axes(grid.figure, len(combos))
        _titles_do_not_overlap(grid.figure)
        titles = sorted(ax.get_title() for ax in axes)
        assert titles == sorted(_title(m, c) for m in MODELS for c in CAPS)
        for ax in axes:
            curves = _curves(ax)
            assert len(curves) == 3  # dense (repeated in every capacity column), mod, amod
            colors = {matplotlib.colors.to_hex(line.get_color()) for line in curves}
            assert colors == {figures.router_color(r) for r in ("dense", "mod", "amod")}
            targets = [line for line in ax.lines if line.get_gid() == "target"]
            assert len(targets) == 1 and targets[0].get_ydata()[0] == pytest.approx(80.0)
            bands = [c for c in ax.collections if c.get_gid() == "band"]
            assert len(bands) == 3
        assert x in ("epoch",) or "GMACs" in axes[-1].get_xlabel() or "seconds" in axes[-1].get_xlabel()
    finally:
        figures.close(grid)


def test_convergence_mean_over_seeds(frames):
    cells, res, _ = frames
    data = figures.convergence_data(cells, res.evals)
    grid = figures.convergence_figure(data, convergence.common_targets(cells), "epoch")
    try:
        ax = grid.axes_dict[_title("vit_a", 0.5)]
        amod = [line for line in _curves(ax)
                if matplotlib.colors.to_hex(line.get_color()) == figures.router_color("amod")][0]
        # seeds plateau at 80 and 81: the mean curve ends at 80.5
        assert amod.get_ydata()[-1] == pytest.approx(80.5)
        assert list(amod.get_xdata()) == list(range(1, 11))
    finally:
        figures.close(grid)


def test_convergence_facets_only_existing_combinations(tmp_path):
    """A dense-only pretraining workload next to a routed fine-tuning one: one facet per existing
    (stage, model, dataset, capacity), at most 3 columns, dense repeated only in the routed capacities."""
    cells = [Cell("dense", None, s, [(0, 10.0), (10, 90.0)], stage="pretrain", dataset="mnist") for s in (0, 1)]
    for s in (0, 1):
        cells.append(Cell("dense", None, s, [(0, 20.0), (6, 80.0), (10, 80.0)]))
        for cap in (0.125, 0.25, 0.5):
            cells.append(Cell("mod", cap, s, [(0, 20.0), (4, 80.0), (10, 80.0)]))
    res = load_results(write_suite(tmp_path, "mixed", cells))
    frame, _, _ = add_variant_columns(res.cells)
    data = figures.convergence_data(frame, res.evals)
    for x in ("epoch", "gmacs", "seconds"):
        grid = figures.convergence_figure(data, convergence.common_targets(frame), x)
        try:
            expected = {_title("vit_tiny", c) for c in (0.125, 0.25, 0.5)} | {
                _title("vit_tiny", 1, stage="pretrain", dataset="mnist")}
            assert set(grid.axes_dict) == expected
            assert len(grid.axes.flat) == 4 and grid._ncol == 3  # wrapped at 3 columns, no padding axes
            _assert_no_empty_axes(grid.figure, 4)
            _titles_do_not_overlap(grid.figure)
            for title, ax in grid.axes_dict.items():
                colors = {matplotlib.colors.to_hex(line.get_color()) for line in _curves(ax)}
                routers = {"dense"} if title.startswith("pretrain") else {"dense", "mod"}
                assert colors == {figures.router_color(r) for r in routers}
        finally:
            figures.close(grid)


def test_isoflop_figure_has_points_error_bars_and_pareto(frames):
    cells = frames[0]
    fig = figures.isoflop_figure(accuracy_table(cells, "best"))
    try:
        axes = [ax for ax in fig.axes if ax.get_title()]
        assert sorted(ax.get_title() for ax in axes) == [f"{m} / digits" for m in MODELS]
        _assert_no_empty_axes(fig, len(MODELS))
        _titles_do_not_overlap(fig)
        for ax in axes:
            points = ax.collections[0].get_offsets()
            assert len(points) == 1 + len(CAPS) * 2  # dense + (mod, amod) per capacity
            pareto = [line for line in ax.lines if line.get_gid() == "pareto"]
            assert len(pareto) == 1
            # frontier: cheapest point first, accuracy never decreasing along it
            ys = pareto[0].get_ydata()
            assert np.all(np.diff(ys) > 0)
            assert len([c for c in ax.containers if isinstance(c, matplotlib.container.ErrorbarContainer)]) == 3
        assert fig.legends, "legend with routers and capacities"
    finally:
        figures.close(fig)


def test_pareto_front():
    x, y = figures.pareto_front(np.array([1.0, 2.0, 3.0, 2.5]), np.array([70.0, 75.0, 74.0, 80.0]))
    assert x.tolist() == [1.0, 2.0, 2.5] and y.tolist() == [70.0, 75.0, 80.0]


def test_speedup_and_profile_figures(frames):
    ttt = frames[2]
    sp = convergence.speedups(ttt, n_boot=200)
    grid = figures.speedup_figure(sp)
    try:
        axes = list(grid.axes.flat)
        assert len(axes) == 4 * 2  # units x rules
        _assert_no_empty_axes(grid.figure, 4 * 2)
        grid.figure.canvas.draw()
        renderer = grid.figure.canvas.get_renderer()
        ticks = [t.get_window_extent(renderer) for t in axes[-1].get_xticklabels()]
        assert ticks and not any(a.overlaps(b) for a, b in zip(ticks, ticks[1:])), "x tick labels overlap"
        assert {ax.get_title() for ax in axes} >= {"epochs | peak target", "wall-clock seconds | common target"}
        for ax in axes:
            assert [line.get_gid() for line in ax.lines].count("parity") == 1
            # x: per model and capacity, amod vs (dense, mod) and mod vs dense; bars = 3 per (model, cap)
            bars = [p for c in ax.containers if isinstance(c, matplotlib.container.BarContainer) for p in c]
            assert len([b for b in bars if b.get_height() > 0]) == len(MODELS) * len(CAPS) * 3
        amod_vs_dense = sp[(sp["router"] == "amod") & (sp["baseline"] == "dense") & (sp["unit"] == "epoch")
                           & (sp["rule"] == "common")]["speedup"]
        # dense reaches 80 at epoch 6; amod seed 0 at 3, seed 1 (plateau 81) at 60 / (61 / 3)
        assert amod_vs_dense.tolist() == pytest.approx([6 / np.median([3.0, 180 / 61])] * 4)
    finally:
        figures.close(grid)
    med = convergence.median_times(ttt)
    grid = figures.profile_figure(convergence.performance_profile(med, taus=np.linspace(1, 4, 13)))
    try:
        axes = list(grid.axes.flat)
        assert [ax.get_title() for ax in axes] == ["epoch", "step", "train_macs", "train_seconds"]
        _assert_no_empty_axes(grid.figure, 4)
        for ax in axes:
            assert len(_curves(ax)) == 3 * 2  # routers x target rules
    finally:
        figures.close(grid)


def test_router_colors_are_fixed():
    declared = routers_in_display_order()
    assert [t.name for t in declared] == ["dense", "isoflop", "mod", "amod", "mod_tanh", "random", "cls"]
    assert [figures.router_color(t.name) for t in declared] == [t.colour for t in declared]  # each its own
    assert len({figures.router_color(t.name) for t in declared}) == 7
    assert figures.router_color("new_router") == figures.router_color("new_router")
