"""The best checkpoint by the in-training eval metric is saved, named in best.json and never pruned."""

from __future__ import annotations

import json

import pytest

from vlm_opd.config import config_from_dict
from vlm_opd.errors import ConfigError
from vlm_opd.train import checkpoint as ckpt
from vlm_opd.train.best import BEST_FILE, BestTracker, protected_steps, read_best
from vlm_opd.train.trainer import train


def _scripted_eval(monkeypatch, values: dict[int, float]):
    """Replace the student eval by scripted accuracies per step (the trainer's eval seed encodes the step)."""
    import vlm_opd.train.evaluate as ev
    import vlm_opd.train.trainer as tr

    calls: list[int] = []
    real_log = tr._log_eval

    def log_eval(ctx, examples, step, wall_s, metrics, accelerator):
        calls.append(step)
        monkeypatch.setattr(ev, "evaluate_student",
                            lambda *a, **k: {"accuracy": values[step], "completion_len": 3.0, "n_prompts": 2.0})
        return real_log(ctx, examples, step, wall_s, metrics, accelerator)

    monkeypatch.setattr(tr, "_log_eval", log_eval)
    return calls


def _cfg(tmp_path, student_dir, **extra):
    cfg = {
        "method": "sft", "output_dir": str(tmp_path / "run"), "student": {"path": str(student_dir)},
        "data": {"train": "synthetic:8", "eval": "synthetic:2"}, "optim": {"lr": 1e-3, "schedule": "constant"},
        "prompts_per_step": 2, "steps": 5, "sft": {"max_length": 16},
        "eval": {"every": 1, "k": 1, "max_new_tokens": 4, "measure_va": False},
    }
    cfg.update(extra)
    return config_from_dict(cfg)


def _steps(run):
    return [s for s, _ in ckpt.list_checkpoints(run)]


def test_best_is_kept_besides_keep_last_and_recorded(tmp_path, tiny_qwen2vl_dir, monkeypatch):
    """Accuracy peaks at step 2: step-2 survives keep_last=1 pruning next to the newest checkpoint (4);
    the step-0 eval (0.9, the initial student) is not a candidate; the final model (0.1) is not best."""
    calls = _scripted_eval(monkeypatch, {0: 0.9, 1: 0.2, 2: 0.5, 3: 0.4, 4: 0.5, 5: 0.1})
    cfg = _cfg(tmp_path, tiny_qwen2vl_dir, checkpoint_every=1, keep_last=1)
    train(cfg, progress=False)
    run = tmp_path / "run"
    assert calls == [0, 1, 2, 3, 4, 5]
    assert _steps(run) == [2, 4]  # 4 is the newest kept by keep_last; 2 the best (a tie at 4 keeps 2)
    best = json.loads((run / BEST_FILE).read_text())
    assert best == {"metric": "eval/accuracy", "mode": "max", "step": 2, "value": 0.5,
                    "checkpoint": "checkpoints/step-000002"}
    assert (run / best["checkpoint"] / "COMPLETE").is_file()


def test_best_is_saved_without_periodic_checkpoints_and_moves_to_final(tmp_path, tiny_qwen2vl_dir, monkeypatch):
    """checkpoint_every=0: only improving evals write checkpoints; when the final eval is the best,
    best.json names final/ and the earlier best checkpoint is pruned past keep_last."""
    _scripted_eval(monkeypatch, {0: 0.0, 1: 0.3, 2: 0.2, 3: 0.6, 4: 0.1, 5: 0.7})
    cfg = _cfg(tmp_path, tiny_qwen2vl_dir, checkpoint_every=0, keep_last=1)
    train(cfg, progress=False)
    run = tmp_path / "run"
    best = read_best(run)
    assert best["checkpoint"] == "final" and best["step"] == 5 and best["value"] == pytest.approx(0.7)
    assert _steps(run) == [3]  # 1 was pruned when 3 became best; 3 is still the newest checkpoint
    assert protected_steps(run) == set()


def test_min_mode_and_other_metric(tmp_path, tiny_qwen2vl_dir, monkeypatch):
    _scripted_eval(monkeypatch, {0: 0.0, 1: 0.3, 2: 0.2, 3: 0.6, 4: 0.1, 5: 0.7})
    cfg = _cfg(tmp_path, tiny_qwen2vl_dir, keep_last=1,
               eval={"every": 1, "k": 1, "max_new_tokens": 4, "measure_va": False, "best_mode": "min"})
    train(cfg, progress=False)
    assert read_best(tmp_path / "run")["step"] == 4
    assert _steps(tmp_path / "run") == [4]


def test_best_metric_validation():
    with pytest.raises(ConfigError, match="eval.best_metric"):
        config_from_dict({"student": {"path": "x"}, "method": "sft", "data": {"train": "synthetic:2"},
                          "eval": {"best_metric": "eval/acuracy"}})
    with pytest.raises(ConfigError, match="eval.best_mode"):
        config_from_dict({"student": {"path": "x"}, "method": "sft", "data": {"train": "synthetic:2"},
                          "eval": {"best_mode": "largest"}})


def test_va_metric_without_a_vision_teacher_is_refused(tmp_path, tiny_qwen2vl_dir):
    cfg = _cfg(tmp_path, tiny_qwen2vl_dir, eval={"every": 1, "best_metric": "eval/mean_va"})
    with pytest.raises(ConfigError, match="eval.best_metric: eval/mean_va"):
        train(cfg, progress=False)


def test_stale_best_is_discarded_and_prune_protects_best(tmp_path):
    run = tmp_path / "run"
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint(run, step, lambda d: (d / "w").write_text("x"), keep_last=10)
    tracker = BestTracker(run, "eval/accuracy", "max", start_step=4)
    tracker.commit(2, 0.5, run / "checkpoints" / "step-000002")
    ckpt.prune_checkpoints(run, keep_last=1)
    assert _steps(run) == [2, 4]
    # resuming from step 1 (before the recorded best): the replay decides again
    again = BestTracker(run, "eval/accuracy", "max", start_step=1)
    assert again.record is None and not (run / BEST_FILE).exists()
    assert again.improves({"accuracy": 0.0}, 2) and not again.improves({"accuracy": 0.9}, 0)
    assert not again.improves({"accuracy": float("nan")}, 3)
    # another metric in the config: the old record does not apply
    tracker.commit(2, 0.5, run / "checkpoints" / "step-000002")
    assert BestTracker(run, "eval/completion_len", "min", start_step=4).record is None


@pytest.mark.slow
def test_two_process_ddp_saves_the_best_checkpoint_collectively(tmp_path, tiny_qwen2vl_dir, launch):
    """Every process evaluates its share; the main process decides the best and shares it, so every process joins the save
    (a process left out would hang the run at the checkpoint barrier)."""
    import yaml

    cfg = {"method": "sft", "student": {"path": str(tiny_qwen2vl_dir)},
           "data": {"train": "synthetic:8", "eval": "synthetic:2"}, "prompts_per_step": 4, "steps": 3,
           "sft": {"max_length": 16}, "eval": {"every": 1, "k": 1, "max_new_tokens": 4, "best_mode": "min",
                                               "best_metric": "eval/completion_len"}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = launch(["train", path, f"output_dir={tmp_path / 'two'}", "--no-progress"])
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "two"
    best = read_best(run)
    evals = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if "eval/completion_len" in l]
    candidates = [(e["eval/completion_len"], e["step"]) for e in evals if e["step"] >= 1]
    value, step = min(candidates)  # min value, earliest step on ties
    assert (best["step"], best["value"]) == (step, pytest.approx(value))
    if best["checkpoint"] != "final":
        assert (run / best["checkpoint"] / "COMPLETE").is_file()
        assert (run / best["checkpoint"] / "state" / "model.safetensors").is_file()


def test_stop_at_accuracy_makes_the_stopping_model_the_best(tmp_path, tiny_qwen2vl_dir, monkeypatch):
    _scripted_eval(monkeypatch, {0: 0.0, 1: 0.3, 2: 0.95})
    cfg = _cfg(tmp_path, tiny_qwen2vl_dir, keep_last=1,
               eval={"every": 1, "k": 1, "max_new_tokens": 4, "measure_va": False, "stop_at_accuracy": 0.9})
    result = train(cfg, progress=False)
    assert result.steps == 2
    best = read_best(tmp_path / "run")
    assert (best["checkpoint"], best["step"], best["value"]) == ("final", 2, 0.95)
    assert _steps(tmp_path / "run") == [1]  # the earlier best, still the newest checkpoint (keep_last=1)
