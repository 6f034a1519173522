"""The study plumbing of `vlm-opd demo`: --setting, --methods (VA-OPD variants), the extra analysis
(objective share on the read-off digits, the shortcut task's two splits) and its summary columns."""

from __future__ import annotations

import json
import math

import pytest
import torch

from vlm_opd.config import config_from_dict
from vlm_opd.demo.recipe import (
    FULL, QUICK, SETTINGS, VA_OPD_VARIANTS, method_configs, method_va_params, parse_methods, setting_recipe,
)
from vlm_opd.demo.seeds import seeds_report_markdown, study_table, summarize_seeds
from vlm_opd.errors import ConfigError


def test_settings_override_only_their_knobs():
    assert setting_recipe(FULL, "default") is FULL
    dil = setting_recipe(FULL, "dilution")
    assert dil.task == {**FULL.task, "filler_sentences": 3} and dil.max_new_tokens == 60
    sc = setting_recipe(QUICK, "shortcut")
    assert sc.task == {**QUICK.task, "shortcut": 0.6} and sc.max_new_tokens == QUICK.max_new_tokens
    # every setting gets its own cached teacher, and names say which setting a report is from
    keys = {setting_recipe(FULL, s).teacher_key() for s in SETTINGS}
    assert len(keys) == len(SETTINGS) and sc.name == "quick-shortcut"
    with pytest.raises(ConfigError, match="--setting"):
        setting_recipe(FULL, "shortcuts")


def test_parse_methods():
    assert parse_methods("va_opd_shift,opd") == ["opd", "va_opd_shift"]
    for bad in ("va_opd", "opd,opd", "opd,va_opd_typo", ""):
        with pytest.raises(ConfigError, match="--methods"):
            parse_methods(bad)


def test_variant_configs_are_va_opd_with_documented_overrides():
    runs = method_configs(FULL, teacher_init="t0", student_init="s0", teacher="t", student="s", runs_dir="r",
                          seed=3, methods=["opd", "va_opd", "va_opd_shift", "va_opd_positive"])
    assert list(runs) == ["teacher_sft", "student_sft", "opd", "va_opd", "va_opd_shift", "va_opd_positive"]
    cfgs = {name: config_from_dict(c) for name, c in runs.items()}
    paper = cfgs["va_opd"].va_opd
    assert (paper.va_kind, paper.high_group, paper.va_floor) == ("sampled", "fixed", 0.0)
    for name, over in VA_OPD_VARIANTS.items():
        c = cfgs[name]
        assert c.method == "va_opd" and c.output_dir == f"r/{name}" and c.seed == 3
        assert {k: getattr(c.va_opd, k) for k in over} == over
        # everything but the overrides is the paper's VA-OPD run
        assert (c.va_opd.tau, c.va_opd.lam, c.va_opd.top_frac) == (paper.tau, paper.lam, paper.top_frac)
        assert runs[name]["optim"] == runs["va_opd"]["optim"] and runs[name]["data"] == runs["va_opd"]["data"]
        assert method_va_params(runs[name]) == {**method_va_params(runs["va_opd"]), **over}
    assert method_va_params(runs["opd"])["reweight"] is False and method_va_params(runs["opd"])["grouped"] is False
    # without `methods` the demo's runs are exactly the paper's pair
    default = method_configs(FULL, teacher_init="t0", student_init="s0", teacher="t", student="s", runs_dir="r", seed=3)
    assert list(default) == ["teacher_sft", "student_sft", "opd", "va_opd"] and default["va_opd"] == runs["va_opd"]


def test_objective_weights_of_opd_and_of_an_empty_high_group(monkeypatch):
    """OPD's token weight is 1 / (n_b K P) per valid token (mean over prompts of the mean over K rollouts of
    the token mean); a VA-OPD variant whose VA all falls to the floor (empty positive group, uniform rollout
    weights) puts exactly OPD's weight on every token, while the paper's VA-OPD moves it."""
    from types import SimpleNamespace

    import vlm_opd.scoring as S
    from vlm_opd.demo import analysis as DA

    torch.manual_seed(0)
    p, k, t = 2, 2, 5
    mask = torch.ones(p * k, t)
    mask[1, 3:] = 0
    kl = torch.rand(p * k, t) * mask
    va = torch.full((p * k, t), 0.005) * mask
    va[0, 1] = 3.0  # one clearly visual token
    kinds = torch.full((p * k, t), 2, dtype=torch.long)
    kinds[:, 1] = 0  # "read-off digits" at position 1
    monkeypatch.setattr(S, "completion_hidden", lambda *a, **kw: torch.zeros(p * k, t, 1))
    monkeypatch.setattr(S, "per_token_divergence", lambda *a, **kw: kl)
    rollout = SimpleNamespace(view_pk=lambda x: x.reshape(p, k, *x.shape[1:]))
    sig = SimpleNamespace(hidden_real=object(), hidden_degraded=None, lm_head_weight=None)
    opd = method_va_params({"method": "opd"})
    paper = method_va_params({"method": "va_opd"})
    floored = {**paper, "va_floor": 4.0, "high_group": "positive"}
    out = DA.objective_weights(SimpleNamespace(lm_head_weight=None), None, rollout, sig, va, mask, kinds,
                               {"opd": opd, "floored": floored, "paper": paper})
    w = mask / (mask.sum(-1, keepdim=True) * k * p)
    assert out["opd"]["weight"]["right_digit"] == pytest.approx(float(w[:, 1].sum()))
    assert out["opd"]["mass"]["other"] == pytest.approx(float((w * kl)[kinds == 2].sum()))
    for part in ("mass", "weight"):
        assert out["floored"][part] == pytest.approx(out["opd"][part])
    assert out["paper"]["weight"]["right_digit"] > out["opd"]["weight"]["right_digit"] + 0.01


def _study_metrics(opd, va, main_opd, main_va, share_opd=0.8, share_va=0.6):
    def a(acc_main, share_start, share_end, method):
        return {"accuracy": 0.5, "mean_va": 0.3, "main_split": {"accuracy": acc_main},
                "blind_main": {"accuracy": 0.55}, "blind_heldout": {"accuracy": 0.05},
                "heldout_hint": {"hint_follow_when_wrong": 0.4},
                "objective_share": {method: {"right_digit": share_end, "wrong_digit": 0.0, "other": 1 - share_end}}}
    analysis = {
        "teacher": {"accuracy": 1.0, "mean_va": 0.5, "main_split": {"accuracy": 1.0},
                    "heldout_hint": {"hint_follow_when_wrong": 0.0}},
        "student_init": {"accuracy": 0.2, "mean_va": 0.1, "main_split": {"accuracy": 0.6},
                         "blind_main": {"accuracy": 0.58}, "blind_heldout": {"accuracy": 0.04},
                         "objective_share": {"opd": {"right_digit": 0.5, "wrong_digit": share_opd - 0.5, "other": 0.2},
                                             "va_opd_shift": {"right_digit": 0.5, "wrong_digit": share_va - 0.5,
                                                              "other": 0.4}}},
        "opd": a(main_opd, share_opd, 0.9, "opd"),
        "va_opd_shift": a(main_va, share_va, 0.7, "va_opd_shift"),
    }
    return {"student_init": {"accuracy": 0.2, "mean_va": 0.1},
            "methods": {"opd": {"accuracy": opd, "mean_va": 0.4}, "va_opd_shift": {"accuracy": va, "mean_va": 0.45}},
            "analysis": analysis}


def test_study_summary_columns_and_paired_main_split(tmp_path):
    per_seed = {0: _study_metrics(0.50, 0.52, 0.70, 0.75), 1: _study_metrics(0.60, 0.59, 0.72, 0.78),
                2: _study_metrics(0.55, 0.58, 0.71, 0.77)}
    s = summarize_seeds(per_seed, ["opd", "va_opd_shift"])
    row = s["methods"]["va_opd_shift"]
    assert row["accuracy_main"]["per_seed"] == pytest.approx([0.75, 0.78, 0.77])
    assert row["digit_share_start"]["mean"] == pytest.approx(0.6) and row["digit_share_end"]["mean"] == pytest.approx(0.7)
    assert row["mean_va_start"]["mean"] == pytest.approx(0.1) and row["blind_main"]["mean"] == pytest.approx(0.55)
    assert s["methods"]["teacher"]["accuracy_main"]["mean"] == 1.0
    p = s["paired_to_opd"]["va_opd_shift"]
    assert p["accuracy_main_diff"]["per_seed"] == pytest.approx([0.05, 0.06, 0.06])
    assert p["separates_main"] and not p["separates"]  # held-out: +2, -1, +3 points
    assert p["digit_share_start_diff"]["mean"] == pytest.approx(-0.2)
    report = seeds_report_markdown(s, ["opd", "va_opd_shift"], "full-shortcut", 1.0)
    for col in ("final accuracy, held-out split", "final accuracy, main split", "mean VA start",
                "objective on read-off digits: start -> end", "accuracy with a blank image, main split",
                "main-split accuracy diff", "beats OPD by 5.7 points of final accuracy on the main split"):
        assert col in report, col
    assert "60.0 [60.0, 60.0] -> 70.0 [70.0, 70.0]" in report
    assert not math.isnan(p["accuracy_diff"]["mean"])
    (tmp_path / "metrics.json").write_text(json.dumps(s))
    table = study_table({"shortcut": tmp_path}).splitlines()
    assert len(table) == 2 + 3 and "teacher" not in "".join(table)  # cold start, OPD, the variant
    row = [c.strip() for c in table[-1].strip("|").split("|")]
    assert row[:3] == ["shortcut", "VA-OPD shift+pos+floor", "3"]
    assert row[4] == "76.7 [72.9, 80.5]" and row[6] == "60.0 [60.0, 60.0] -> 70.0 [70.0, 70.0]"
    assert row[8].startswith("+5.7 [") and row[8].endswith("*") and not row[7].endswith("*")


def test_summarize_seed_dirs_from_separate_single_seed_runs(tmp_path):
    from vlm_opd.demo.seeds import summarize_seed_dirs

    for seed, (o, v) in enumerate([(0.5, 0.52), (0.6, 0.59)]):
        m = {**_study_metrics(o, v, 0.7, 0.75), "seed": seed, "recipe": "full-shortcut", "wall_s": 10.0}
        (tmp_path / f"seed-{seed}").mkdir()
        (tmp_path / f"seed-{seed}" / "metrics.json").write_text(json.dumps(m))
    s = summarize_seed_dirs(tmp_path)
    assert s["seeds"] == [0, 1] and s["wall_s"] == 20.0 and s["recipe"] == "full-shortcut"
    assert s["paired_to_opd"]["va_opd_shift"]["accuracy_diff"]["per_seed"] == pytest.approx([0.02, -0.01])
    assert json.loads((tmp_path / "metrics.json").read_text())["n_seeds"] == 2
    assert "## Verdict" in (tmp_path / "report.md").read_text()
    # seeds of different runs are refused, not mixed
    bad = json.loads((tmp_path / "seed-1" / "metrics.json").read_text())
    (tmp_path / "seed-1" / "metrics.json").write_text(json.dumps({**bad, "recipe": "full-dilution"}))
    with pytest.raises(ConfigError, match="different recipes"):
        summarize_seed_dirs(tmp_path)
