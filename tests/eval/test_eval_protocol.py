"""The papers' protocol around `vlm-opd eval`: the generation length defaults to what the run trained
with, --lenient reaches the scorer, and --all-checkpoints evaluates every kept checkpoint and picks the
best."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from vlm_opd.cli import main
from vlm_opd.errors import ConfigError
from vlm_opd.eval import evaluate
from vlm_opd.eval.checkpoints import (
    SELECTION_NOTE,
    check_select_by,
    checkpoint_rows,
    render_checkpoints,
    run_checkpoints,
    select_best,
)
from vlm_opd.eval.fixtures import oracle_generate_fn, write_all_fixtures
from vlm_opd.eval.generate import trained_generation_length

FAST = ["--k", "0", "--greedy", "--no-progress", "--benchmarks", "local"]


@pytest.fixture(scope="module")
def fixtures_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench") / "fixtures"
    assert main(["eval", "--write-fixtures", str(d)]) == 0
    return d


@pytest.fixture
def length_spy(monkeypatch):
    """Record the max_new_tokens `vlm-opd eval` asks for, and generate with 2 tokens to stay fast."""
    import vlm_opd.eval.generate as gen

    used = []
    real = gen.make_generate_fn

    def spy(lm, **kwargs):
        used.append(kwargs["max_new_tokens"])
        return real(lm, **{**kwargs, "max_new_tokens": 2})

    monkeypatch.setattr(gen, "make_generate_fn", spy)
    return used


def _run(tmp_path, model_dir, name, **cfg):
    run = tmp_path / name
    shutil.copytree(model_dir, run / "final")
    (run / "config.yaml").write_text(yaml.safe_dump({"student": {"path": str(model_dir)}, **cfg}))
    return run


def test_trained_generation_length():
    assert trained_generation_length(None) is None
    assert trained_generation_length({"method": "va_opd", "rollout": {"max_new_tokens": 2048}}) == (
        2048, "rollout.max_new_tokens of the training run (method va_opd)")
    assert trained_generation_length({"method": "sft", "sft": {"max_length": 4096},
                                      "rollout": {"max_new_tokens": 512}})[0] == 4096
    assert trained_generation_length({"method": "grpo", "rollout": {}}) is None


def test_eval_length_defaults_to_the_runs_rollout_length(tiny_qwen2vl_dir, fixtures_dir, tmp_path, length_spy,
                                                          capsys):
    """A 2048-token run is evaluated with 2048-token answers unless --max-new-tokens says otherwise; the
    length used and where it came from are printed and recorded in results.json and report.md."""
    run = _run(tmp_path, tiny_qwen2vl_dir, "opd", method="opd", rollout={"max_new_tokens": 2048})
    sft = _run(tmp_path, tiny_qwen2vl_dir, "sft", method="sft", sft={"max_length": 777})
    common = [*FAST, "--data-dir", str(fixtures_dir)]
    assert main(["eval", "--model", str(run), "--out", str(tmp_path / "a"), *common]) == 0
    assert "max_new_tokens=2048 (rollout.max_new_tokens of the training run (method opd))" in capsys.readouterr().err
    assert main(["eval", "--model", str(run), "--out", str(tmp_path / "b"), "--max-new-tokens", "64", *common]) == 0
    assert main(["eval", "--model", str(sft), "--out", str(tmp_path / "c"), *common]) == 0
    assert main(["eval", "--model", str(tiny_qwen2vl_dir), "--out", str(tmp_path / "d"), *common]) == 0
    assert length_spy == [2048, 64, 777, 1024]
    model = json.loads((tmp_path / "a" / "results.json").read_text())["settings"]["model"]
    assert model["max_new_tokens"] == 2048 and model["max_new_tokens_source"].startswith("rollout.max_new_tokens")
    assert json.loads((tmp_path / "a" / "eval_run.json").read_text())["max_new_tokens"] == 2048
    assert "max_new_tokens 2048 (rollout.max_new_tokens" in (tmp_path / "a" / "report.md").read_text()
    d = json.loads((tmp_path / "d" / "results.json").read_text())["settings"]["model"]
    assert d["max_new_tokens"] == 1024 and d["max_new_tokens_source"].startswith("default")
    # the cache of "a" was made with 2048 tokens: reusing it with another length is refused
    assert main(["eval", "--model", str(run), "--out", str(tmp_path / "a"), "--max-new-tokens", "64", *common]) != 0


def test_lenient_flag_reaches_the_scorer(tiny_qwen2vl_dir, fixtures_dir, tmp_path, length_spy):
    out = tmp_path / "len"
    assert main(["eval", "--model", str(tiny_qwen2vl_dir), "--out", str(out), "--lenient", "--data-dir",
                 str(fixtures_dir), "--k", "0", "--greedy", "--no-progress", "--benchmarks", "mmstar"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["lenient"] is True
    r = res["benchmarks"]["mmstar"]["results"]["greedy"]
    assert set(r["rules"]) == {"lenient"} and r["comparable_with_papers"] is False
    assert "\u2021" in (out / "report.md").read_text()


def test_select_best_on_real_results(tmp_path):
    """Three 'checkpoints' answering different items: each selection rule picks the one it should."""
    specs = write_all_fixtures(tmp_path / "fx", ["mmstar", "ocrbench", "mathverse"])
    right = {  # which ids each checkpoint answers correctly
        "step-000010": {"mmstar": {"0", "1", "2"}, "ocrbench": set(), "mathverse": set()},
        "step-000020": {"mmstar": set(), "ocrbench": {"0", "1", "2", "3"}, "mathverse": {"1"}},
        "final": {"mmstar": {"0"}, "ocrbench": {"0", "1"}, "mathverse": {"1", "2", "3", "4"}},
    }
    evaluated = []
    for step, (label, ids) in zip((10, 20, 30), right.items()):
        gen = oracle_generate_fn(lambda ex, ids=ids: ex.id in ids[ex.meta["benchmark"]])
        res = evaluate(specs, gen, k=1, out_dir=tmp_path / label, progress=False)
        evaluated.append({"label": label, "path": tmp_path / label, "step": step, "out": tmp_path / label,
                          "results": res})
    picks = {}
    for select_by in ("mean", "mmstar", "ocrbench", "Math", "Visual"):
        rows, mode = checkpoint_rows(evaluated, select_by)
        assert mode == "avg@1"
        picks[select_by] = rows[select_best(rows)]["label"]
    assert picks == {"mean": "final", "mmstar": "step-000010", "ocrbench": "step-000020", "Math": "final",
                     "Visual": "step-000010"}  # Visual: mmstar 100 + ocrbench 0 ties step-20's 0 + 100: earlier wins
    rows, mode = checkpoint_rows(evaluated, "mean")
    text = render_checkpoints(rows, evaluated[0]["results"], "mean", mode, select_best(rows),
                              {"metric": "eval/accuracy", "mode": "max", "step": 20, "value": 0.5,
                               "checkpoint": "checkpoints/step-000020"})
    assert "| **final** (best) | 30 |" in text and "Best checkpoint: **final** (step 30)" in text
    assert SELECTION_NOTE in text and "checkpoints/step-000020 (step 20" in text
    assert "\u2020" in text  # MathVerse without a judge is not comparable
    with pytest.raises(ConfigError, match="--select-by 'mmmu'"):
        check_select_by("mmmu", ["mmstar", "ocrbench"])


def test_all_checkpoints_of_a_trained_run(tiny_qwen2vl_dir, fixtures_dir, tmp_path, monkeypatch, capsys):
    """A real training run (best checkpoint kept by the trainer) evaluated checkpoint by checkpoint."""
    import vlm_opd.train.evaluate as ev
    from vlm_opd.config import config_from_dict
    from vlm_opd.train.trainer import train

    accuracies = iter([0.0, 0.5, 0.2, 0.1])  # evals at steps 0, 1, 2, 3 (final)
    monkeypatch.setattr(ev, "evaluate_student", lambda *a, **k: {"accuracy": next(accuracies)})
    run = tmp_path / "run"
    train(config_from_dict({
        "method": "sft", "output_dir": str(run), "student": {"path": str(tiny_qwen2vl_dir)},
        "data": {"train": "synthetic:8", "eval": "synthetic:2"}, "optim": {"lr": 1e-3}, "prompts_per_step": 2,
        "steps": 3, "sft": {"max_length": 5}, "checkpoint_every": 1, "keep_last": 1,
        "eval": {"every": 1, "measure_va": False}}), progress=False)
    run_dir, entries = run_checkpoints(run)
    assert run_dir == run and [(label, step) for label, _, step in entries] == [
        ("step-000001", 1), ("step-000002", 2), ("final", 3)]  # step 1 is the trainer's best, kept besides keep_last

    out = tmp_path / "ckpts"
    assert main(["eval", "--model", str(run), "--all-checkpoints", "--out", str(out), "--data-dir",
                 str(fixtures_dir), *FAST]) == 0
    printed = capsys.readouterr()
    assert printed.err.count("max_new_tokens=5 (sft.max_length of the training run") == 3
    summary = json.loads((out / "checkpoints.json").read_text())
    assert [r["label"] for r in summary["checkpoints"]] == ["step-000001", "step-000002", "final"]
    values = [r["selection_value"] for r in summary["checkpoints"]]
    assert summary["best"]["selection_value"] == max(values)
    assert summary["best"]["label"] == summary["checkpoints"][values.index(max(values))]["label"]
    assert summary["training_best"]["checkpoint"] == "checkpoints/step-000001"
    for label in ("step-000001", "step-000002", "final"):
        res = json.loads((out / label / "results.json").read_text())
        assert res["settings"]["model"]["max_new_tokens"] == 5
    assert "Best checkpoint: **" in printed.out and SELECTION_NOTE in (out / "checkpoints.md").read_text()
    # not a run directory: one clear error
    assert main(["eval", "--model", str(tiny_qwen2vl_dir), "--all-checkpoints", "--out", str(tmp_path / "x"),
                 "--data-dir", str(fixtures_dir), *FAST]) != 0
    assert "holds no complete checkpoint" in capsys.readouterr().err
