"""`eval.stop_at_accuracy`, which the demo's cold start relies on: the trainer stops at the first
periodic eval that reaches the threshold and saves that step's model as final."""

from __future__ import annotations

import json

import pytest

from vlm_opd.config import config_from_dict
from vlm_opd.errors import ConfigError


def _cfg(tmp_path, student_dir, **eval_cfg):
    return config_from_dict({
        "method": "sft", "output_dir": str(tmp_path / "run"), "student": {"path": str(student_dir)},
        "data": {"train": "synthetic:8", "eval": "synthetic:2"}, "optim": {"lr": 1e-3, "schedule": "constant"},
        "prompts_per_step": 2, "steps": 6, "sft": {"max_length": 48},
        "eval": {"every": 2, "k": 1, "greedy": True, "max_new_tokens": 4, **eval_cfg},
    })


def test_stops_at_the_first_eval_reaching_the_threshold(tmp_path, tiny_qwen2vl_dir, monkeypatch):
    from vlm_opd.train import evaluate
    from vlm_opd.train.trainer import train

    accuracies = iter([0.0, 0.1, 0.6, 0.9, 0.9])  # evals at steps 0, 2, 4, ...

    def fake_eval(ctx, examples, seed, batch_prompts=16, **_):
        return {"accuracy": next(accuracies), "completion_len": 1.0, "n_prompts": float(len(examples))}

    monkeypatch.setattr(evaluate, "evaluate_student", fake_eval)
    result = train(_cfg(tmp_path, tiny_qwen2vl_dir, stop_at_accuracy=0.5), progress=False)
    assert result.steps == 4
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in lines if "eval/accuracy" in r]
    assert [r["step"] for r in evals] == [0, 2, 4]  # no extra final eval after the stop
    assert max(r["step"] for r in lines if "loss" in r) == 4
    assert json.loads((tmp_path / "run" / "trainer_state.json").read_text())["step"] == 4
    assert (result.final_dir / "config.json").is_file()


def test_threshold_needs_periodic_eval_and_a_fraction(tmp_path, tiny_qwen2vl_dir):
    with pytest.raises(ConfigError, match="eval.stop_at_accuracy"):
        _cfg(tmp_path, tiny_qwen2vl_dir, every=0, stop_at_accuracy=0.5)
    with pytest.raises(ConfigError, match="eval.stop_at_accuracy"):
        _cfg(tmp_path, tiny_qwen2vl_dir, stop_at_accuracy=1.5)
