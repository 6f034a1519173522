"""VA statistics against hand-computed values; plots and heatmap produced and readable; bad input."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from PIL import Image

from vlm_opd.analysis import (
    gini,
    mask_ablation_configs,
    plot_accuracy_vs_time,
    plot_mask_ablation,
    plot_trajectory,
    plot_va_hist,
    render_heatmap_html,
    sorted_mass_curve,
    top_share,
    va_summary,
)
from vlm_opd.analysis.plots import load_run_metrics
from vlm_opd.errors import DataError


def test_summary_hand_computed():
    va = torch.tensor([[0.0, 0.0, 0.0, 10.0], [2.0, 0.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])  # valid: 0,0,0,10,2,0  -> N=6, mass 12
    s = va_summary(va, mask)
    assert s["mean_va"] == pytest.approx(2.0)
    assert s["n_tokens"] == 6 and s["total_mass"] == pytest.approx(12.0)
    assert s["top10_va_share"] == pytest.approx(10 / 12)  # ceil(0.6) = 1 token
    assert s["top20_va_share"] == pytest.approx(12 / 12)  # ceil(1.2) = 2 tokens
    assert s["frac_positive"] == pytest.approx(2 / 6)
    # gini of sorted [0,0,0,0,2,10]: 2*(5*2 + 6*10)/(6*12) - 7/6
    assert s["gini"] == pytest.approx(2 * (5 * 2 + 6 * 10) / (6 * 12) - 7 / 6)


def test_top_share_gini_edges():
    assert top_share(np.array([0, 0, 0, 10.0]), 0.25) == 1.0
    assert top_share(np.zeros(5), 0.1) == 0.0
    assert gini(np.ones(7)) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 1.0])) == pytest.approx(3 / 4)
    assert gini(np.zeros(3)) == 0.0
    ties = np.array([5.0, 5.0, 5.0, 5.0, 0.0])
    assert top_share(ties, 0.2) == pytest.approx(0.25)


def test_sorted_mass_curve_monotone_to_one():
    frac, mass = sorted_mass_curve(np.array([[3.0, 1.0, 0.0, 6.0]]))
    assert np.all(np.diff(mass) >= 0) and mass[-1] == pytest.approx(1.0)
    assert mass[0] == 0.0 and mass[1] == pytest.approx(0.6)  # starts at the origin; the largest token first


@pytest.mark.parametrize("bad, fragment", [([], "empty"), ([[-1.0, 2.0]], ">= 0"), ([[float("nan")]], "finite")])
def test_bad_va_inputs(bad, fragment):
    with pytest.raises(DataError, match=fragment):
        va_summary([np.array(r) for r in bad] if bad else bad)


def test_plots_render(tmp_path):
    rng = np.random.default_rng(0)
    heavy = np.concatenate([rng.exponential(3.0, 20), np.zeros(180)])
    for name, path in [("hist", plot_va_hist({"base": heavy, "va_opd": heavy * 2}, tmp_path / "h.png"))]:
        with Image.open(path) as im:
            assert im.size[0] > 300 and im.size[1] > 200
    runs = {"opd": [{"step": s, "wall_s": 5.0 * s, "eval/accuracy": 0.2 + 0.03 * s, "eval/mean_va": 0.05 + 0.001 * s}
                    for s in range(0, 11, 5)],
            "va_opd": [{"step": s, "wall_s": 6.0 * s, "eval/accuracy": 0.2 + 0.04 * s, "eval/mean_va": 0.05 + 0.01 * s}
                       for s in range(0, 11, 5)]}
    for fn, name in ((plot_trajectory, "t.png"), (plot_accuracy_vs_time, "a.png")):
        Image.open(fn(runs, tmp_path / name)).verify()
    masks = {f"opd-mask-{w}": runs["opd"] for w in ("top", "bottom", "random")} | {"opd": runs["opd"]}
    Image.open(plot_mask_ablation(masks, tmp_path / "m.png")).verify()
    with pytest.raises(DataError):
        plot_trajectory({"x": [{"step": 0, "eval/accuracy": 0.1}]}, tmp_path / "bad.png")  # no mean_va


def test_heatmap_escapes_and_orders(tmp_path):
    tokens = ["The", " side", " is", " <script>", " &", ' "7"', " 'x'"]
    va = [0.0, 0.0, 0.1, 3.0, 0.2, 0.0, 0.5]
    path = render_heatmap_html([{"label": "base <b>", "prompt": "a & b", "tokens": tokens, "va": va, "correct": True},
                                {"label": "va_opd", "prompt": "a & b", "tokens": tokens, "va": [v * 2 for v in va],
                                 "correct": False}], tmp_path / "h.html")
    html = path.read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html and "&amp;" in html
    assert "base &lt;b&gt;" in html and "http://" not in html and "https://" not in html
    positions = [html.find(t) for t in ("The", " side".strip(), "&lt;script&gt;")]
    assert positions == sorted(positions) and -1 not in positions


def test_load_run_metrics_errors(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\nnot json\n')
    with pytest.raises(DataError, match="metrics.jsonl:2"):
        load_run_metrics(run)
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    with pytest.raises(DataError):
        load_run_metrics(run)  # no eval lines
    with pytest.raises(DataError):
        load_run_metrics(tmp_path / "missing")


def test_mask_ablation_configs_are_valid_training_configs():
    from vlm_opd.config import config_from_dict

    base = {"method": "va_opd", "output_dir": "runs/x", "student": {"path": "s"}, "teacher": {"path": "t"},
            "data": {"train": "d"}}
    cfgs = {k: config_from_dict(v) for k, v in mask_ablation_configs(base).items()}
    assert sorted(c.token_mask.which for c in cfgs.values()) == ["bottom", "none", "random", "top"]
    assert all(c.method == "opd" and c.token_mask.frac == 0.1 for c in cfgs.values())
    assert len({c.run_name for c in cfgs.values()}) == 4 and len({c.output_dir for c in cfgs.values()}) == 4


def test_method_colours_are_stable_across_figures():
    from vlm_opd.analysis.plots import _colour_for

    assert _colour_for("opd", 0) == _colour_for("Standard OPD", 3)
    assert _colour_for("va_opd", 0) == _colour_for("VA-OPD (run)", 2)
    assert _colour_for("va_opd", 0) != _colour_for("opd", 1)
