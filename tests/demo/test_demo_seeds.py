"""`vlm-opd demo --seeds`: Student-t intervals, paired differences to OPD, and the quick path end to end."""

from __future__ import annotations

import json
import math

import pytest

from vlm_opd.cli import main
from vlm_opd.demo.seeds import parse_seeds, summarize_seeds, t_interval, t_quantile
from vlm_opd.errors import ConfigError


@pytest.mark.parametrize("df, expected", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (29, 2.0452)])
def test_t_quantile_matches_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


def test_t_interval_by_hand():
    # mean 2, sd 1 (unbiased), n 3: half-width = 4.3027 / sqrt(3) = 2.4842
    ci = t_interval([1.0, 2.0, 3.0])
    assert ci["mean"] == 2.0 and ci["sd"] == pytest.approx(1.0)
    assert ci["half_width"] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert t_interval([0.5])["low"] is None and t_interval([])["mean"] is None


def _metrics(opd, va, va_opd_va=0.5):
    return {"student_init": {"accuracy": 0.2, "mean_va": 0.1},
            "methods": {"opd": {"accuracy": opd, "mean_va": 0.4}, "va_opd": {"accuracy": va, "mean_va": va_opd_va}}}


def test_paired_differences_and_separation():
    # VA-OPD ahead by 5, 6, 7 points: the paired interval 6 +- 2.48 excludes 0 although the unpaired
    # accuracies overlap widely across seeds.
    per_seed = {0: _metrics(0.50, 0.55), 1: _metrics(0.80, 0.86), 2: _metrics(0.65, 0.72)}
    s = summarize_seeds(per_seed, ["opd", "va_opd"])
    p = s["paired_to_opd"]["va_opd"]
    assert p["accuracy_diff"]["per_seed"] == pytest.approx([0.05, 0.06, 0.07])
    assert p["accuracy_diff"]["mean"] == pytest.approx(0.06)
    assert p["accuracy_diff"]["half_width"] == pytest.approx(4.302653 * 0.01 / math.sqrt(3), rel=1e-4)
    assert p["separates"] and p["wins"] == 3 and p["losses"] == 0
    assert s["methods"]["opd"]["accuracy"]["mean"] == pytest.approx(0.65)
    assert s["methods"]["va_opd"]["mean_va"]["mean"] == pytest.approx(0.5)
    # Mixed signs: no separation.
    mixed = summarize_seeds({0: _metrics(0.5, 0.55), 1: _metrics(0.8, 0.75), 2: _metrics(0.6, 0.61)}, ["opd", "va_opd"])
    assert not mixed["paired_to_opd"]["va_opd"]["separates"]


def test_parse_seeds():
    assert parse_seeds("0,1,2") == [0, 1, 2]
    for bad in ("0", "0,0", "a,b", ""):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)


@pytest.mark.slow
def test_quick_demo_with_seeds_end_to_end(tmp_path, capsys):
    """`--seeds` with the study's options (--setting shortcut, a VA-OPD variant): the plain `--seeds` path is
    the same code with the default recipe and methods."""
    out, cache = tmp_path / "report", tmp_path / "cache"
    assert main(["demo", "--quick", "--seeds", "0,1", "--out", str(out), "--cache-dir", str(cache),
                 "--setting", "shortcut", "--methods", "opd,va_opd_shift"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("training the teacher from scratch") == 1  # the second seed reuses the cached teacher
    assert "reusing the cached teacher" in printed
    for seed in (0, 1):
        single = json.loads((out / f"seed-{seed}" / "metrics.json").read_text())
        assert single["seed"] == seed and single["recipe"] == "quick-shortcut" and single["study"]
        assert set(single["methods"]) == {"opd", "va_opd_shift"}
        cfg = (out / f"seed-{seed}" / "configs" / "va_opd_shift.yaml").read_text()
        assert "method: va_opd" in cfg and "va_kind: teacher_shift" in cfg and "shortcut: 0.6" in cfg
        a = single["analysis"]
        for model in ("student_init", "opd", "va_opd_shift"):
            assert 0 <= a[model]["main_split"]["accuracy"] <= 1 and a[model]["main_split"]["n"] == 8 * 2
            assert 0 <= a[model]["blind_main"]["accuracy"] <= 1
        shares = a["student_init"]["objective_share"]
        assert set(shares) == {"opd", "va_opd_shift"}
        assert all(sum(v.values()) == pytest.approx(1.0) for v in shares.values())
    m = json.loads((out / "metrics.json").read_text())
    assert m["seeds"] == [0, 1] and m["n_seeds"] == 2
    for method in ("student_init", "opd", "va_opd_shift"):
        acc = m["methods"][method]["accuracy"]
        assert len(acc["per_seed"]) == 2 and acc["low"] <= acc["mean"] <= acc["high"]
        assert len(m["methods"][method]["accuracy_main"]["per_seed"]) == 2
    assert len(m["methods"]["va_opd_shift"]["digit_share_end"]["per_seed"]) == 2
    d = m["paired_to_opd"]["va_opd_shift"]["accuracy_diff"]
    assert d["per_seed"] == pytest.approx([m["methods"]["va_opd_shift"]["accuracy"]["per_seed"][i]
                                           - m["methods"]["opd"]["accuracy"]["per_seed"][i] for i in range(2)])
    report = (out / "report.md").read_text()
    assert "final accuracy, held-out split, % (mean [95% CI])" in report and "final mean VA (mean [95% CI])" in report
    assert "accuracy diff, points (mean [95% CI])" in report and "## Verdict" in report
    assert "final accuracy, main split" in report and "objective on read-off digits: start -> end" in report
    assert "accuracy with a blank image, main split" in report
