"""Trainer features and bad input: LoRA, samples log, NaN policy, missing data, corrupt rows, vocab mismatch."""

from __future__ import annotations

import json
import math

import pytest
import torch

from vlm_opd.cli import main
from vlm_opd.config import config_from_dict
from vlm_opd.errors import ConfigError, DataError, ModelError, NumericsError
from vlm_opd.train import trainer as trainer_mod
from vlm_opd.train.checkpoint import list_checkpoints
from vlm_opd.train.metrics import read_metrics


def _cfg(tmp_path, student, **extra):
    base = {"method": "sft", "output_dir": str(tmp_path / "run"), "student": {"path": str(student)},
            "data": {"train": "synthetic:6"}, "prompts_per_step": 2, "steps": 2, "sft": {"max_length": 24},
            "optim": {"lr": 1e-2}}
    for k, v in extra.items():
        base[k] = v
    return config_from_dict(base)


def test_lora_trains_adapter_and_saves_merged_model(tmp_path, tiny_qwen2vl_dir):
    from vlm_opd.models import load_model

    cfg = _cfg(tmp_path, tiny_qwen2vl_dir, lora={"enabled": True, "r": 4, "alpha": 8}, optim={"lr": 0.1})
    result = trainer_mod.train(cfg, progress=False)
    assert (result.final_dir / "adapter" / "adapter_config.json").is_file()
    before = load_model(tiny_qwen2vl_dir).model.state_dict()
    after = load_model(result.final_dir).model.state_dict()
    assert before.keys() == after.keys()  # a plain (merged) model, loadable without peft
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all("proj" in k for k in changed)  # only adapted linear layers moved
    assert not any("visual" in k for k in changed)


def test_sample_log_and_generate_traces(tmp_path, tiny_qwen2vl_dir, tiny_qwen25vl_dir):
    cfg = _cfg(tmp_path, tiny_qwen2vl_dir, method="opd", teacher={"path": str(tiny_qwen25vl_dir)},
               rollout={"k": 2, "max_new_tokens": 5}, sample_every=1)
    trainer_mod.train(cfg, progress=False)
    samples = [json.loads(l) for l in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {1, 2} and all("completion" in s for s in samples)

    out = tmp_path / "traces"
    assert main(["generate-traces", "--teacher", str(tiny_qwen25vl_dir), "--data", "synthetic:3", "--out", str(out),
                 "--k", "2", "--max-new-tokens", "6"]) == 0
    rows = [json.loads(l) for l in (out / "traces.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(isinstance(r["solution"], str) for r in rows)
    # the traces are a training dataset: SFT on them runs
    cfg = _cfg(tmp_path / "sft", tiny_qwen2vl_dir, data={"train": str(out / "traces.jsonl")})
    assert trainer_mod.train(cfg, progress=False).steps == 2


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, tiny_qwen2vl_dir, nan_loss_at):
    calls = nan_loss_at("sft", 3)
    cfg = _cfg(tmp_path, tiny_qwen2vl_dir, steps=4, checkpoint_every=1, keep_last=5)
    with pytest.raises(NumericsError, match=r"step 3: loss=nan.*step-000002"):
        trainer_mod.train(cfg, progress=False)
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [1, 2]

    calls["n"] = 0
    cfg = _cfg(tmp_path / "skip", tiny_qwen2vl_dir, steps=4, nan_policy="skip")
    result = trainer_mod.train(cfg, progress=False)
    assert result.skipped_steps == 1
    rows = read_metrics(result.metrics_path)
    assert [r.get("skipped", False) for r in rows if "loss" in r] == [False, False, True, False]


def test_nan_in_one_of_several_updates_drops_only_that_update(tmp_path, tiny_qwen2vl_dir, monkeypatch):
    monkeypatch.setattr(trainer_mod, "_reward_fn", lambda cfg, get: lambda text, ex: float(sum(map(ord, text)) % 2))
    real = trainer_mod.policy_update_loss
    calls = {"n": 0, "nan": {2}}

    def nan_on_some(ctx, batch, rows=None, **kw):
        calls["n"] += 1
        loss, diags = real(ctx, batch, rows, **kw)
        return (loss * float("nan") if calls["n"] in calls["nan"] else loss), diags

    monkeypatch.setattr(trainer_mod, "policy_update_loss", nan_on_some)
    common = dict(method="grpo", steps=1, nan_policy="skip", prompts_per_step=4, log_every=1,
                  rollout={"k": 2, "max_new_tokens": 6}, grpo={"mini_batches": 2}, optim={"lr": 5e-2})
    result = trainer_mod.train(_cfg(tmp_path / "one", tiny_qwen2vl_dir, **common), progress=False)
    (row,) = [r for r in read_metrics(result.metrics_path) if "loss" in r]
    assert result.skipped_steps == 0 and not row.get("skipped")
    assert row["ppo_updates"] == 1.0 and row["skipped_updates"] == 1.0 and math.isfinite(row["loss"])
    assert math.isfinite(row["clip_frac"])  # the dropped update's diagnostics are not averaged in

    calls.update(n=0, nan={1, 2})  # every update non-finite: the step is skipped, as with one update
    result = trainer_mod.train(_cfg(tmp_path / "all", tiny_qwen2vl_dir, **common), progress=False)
    assert result.skipped_steps == 1
    assert [r.get("skipped", False) for r in read_metrics(result.metrics_path) if "loss" in r] == [True]


def test_bad_inputs_name_the_culprit(tmp_path, tiny_qwen2vl_dir, tiny_qwen25vl_dir):
    with pytest.raises(DataError, match="nope.jsonl"):
        trainer_mod.train(_cfg(tmp_path, tiny_qwen2vl_dir, data={"train": str(tmp_path / "nope.jsonl")}), progress=False)
    # a corrupt image row: an error naming file and row, or a counted skip with skip_bad_rows
    from PIL import Image

    Image.new("RGB", (56, 56), "white").save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    rows = [{"problem": "<image> What?", "images": ["ok.png"], "answer": "1", "solution": "The answer is \\boxed{1}."}] * 3
    rows.insert(1, {"problem": "<image> What?", "images": ["bad.png"], "answer": "2", "solution": "x"})
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"d\.jsonl line 2: .*bad\.png"):
        trainer_mod.train(_cfg(tmp_path, tiny_qwen2vl_dir, data={"train": str(data)}), progress=False)
    result = trainer_mod.train(_cfg(tmp_path, tiny_qwen2vl_dir, data={"train": str(data), "skip_bad_rows": True}),
                               progress=False)
    skipped = (tmp_path / "run" / "skipped_rows.jsonl").read_text().splitlines()
    assert len(skipped) == 1 and "bad.png" in skipped[0] and result.steps == 2
    # a missing model
    with pytest.raises(ModelError, match="missing-model"):
        trainer_mod.train(_cfg(tmp_path / "m", tmp_path / "missing-model"), progress=False)


def test_vocab_mismatch_is_refused(tmp_path, tiny_qwen2vl_dir):
    from vlm_opd.models import build_tiny

    other = tmp_path / "other"
    build_tiny("qwen2_vl", other, seed=7)  # another tokenizer
    cfg = _cfg(tmp_path, tiny_qwen2vl_dir, method="opd", teacher={"path": str(other)})
    with pytest.raises(ModelError, match="vocab|token"):
        trainer_mod.train(cfg, progress=False)


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "c.yaml"
    bad.write_text("methd: opd\n")
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean method" in err[0]
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_lora_runs_are_reproducible(tmp_path, tiny_qwen2vl_dir):
    from vlm_opd.models import load_model

    states = []
    for name in ("a", "b"):
        cfg = _cfg(tmp_path / name, tiny_qwen2vl_dir, lora={"enabled": True, "r": 4, "alpha": 8}, optim={"lr": 0.1})
        states.append(load_model(trainer_mod.train(cfg, progress=False).final_dir).model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_chat_template_kwargs_reach_the_loader(monkeypatch, tmp_path):
    import vlm_opd.models as models

    seen = {}
    monkeypatch.setattr(models, "load_model", lambda path, **kw: seen.update(kw) or "loaded")
    cfg = config_from_dict({"method": "vold", "student": {"path": "s"}, "data": {"train": "d"},
                            "teacher": {"path": "t", "kind": "lm", "chat_template_kwargs": {"enable_thinking": False}}})
    assert trainer_mod._load(cfg.teacher, "cpu") == "loaded"
    assert seen["chat_template_kwargs"] == {"enable_thinking": False} and seen["kind"] == "lm"


def test_unsupported_parallelisms_are_refused_with_a_reason():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from vlm_opd.train.trainer import _check_distributed

    with pytest.raises(ConfigError, match="accelerate FSDP launch config is not used.*parallel.strategy=fsdp"):
        _check_distributed(SimpleNamespace(distributed_type=DistributedType.FSDP))
    with pytest.raises(ConfigError, match="DeepSpeed is not supported.*once per micro-batch"):
        _check_distributed(SimpleNamespace(distributed_type=DistributedType.DEEPSPEED))
    for kind in (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU):
        _check_distributed(SimpleNamespace(distributed_type=kind))


def test_tensorboard_tracker_receives_the_logged_metrics(tmp_path, tiny_qwen2vl_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = _cfg(tmp_path, tiny_qwen2vl_dir, steps=2, log_every=1, trackers=["tensorboard"], run_name="tb-run")
    result = trainer_mod.train(cfg, progress=False)
    logged = {r["step"]: r["loss"] for r in read_metrics(result.metrics_path) if "loss" in r}
    events = EventAccumulator(str(tmp_path / "run" / "tb-run"))
    events.Reload()
    assert "loss" in events.Tags()["scalars"]
    got = {e.step: e.value for e in events.Scalars("loss")}
    assert got.keys() == logged.keys() == {1, 2}
    assert all(got[s] == pytest.approx(logged[s], rel=1e-6) for s in got)
