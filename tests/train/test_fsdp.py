"""FSDP2 (`parallel.strategy: fsdp`): 2 CPU processes (gloo) against 1 process, shards, resume, final/.

Weight comparisons use AdamW with eps=1, whose update is proportional to the gradient (see
test_trainer), so equal gradients mean equal weights. The tolerance: a sharded run sums gradients in
another order (reduce-scatter over 2 processes instead of one backward), which changes gradients by
float32 rounding (~1e-7 relative); that reaches the weights as ~1e-7 of the update, plus one rounding of
the weight itself (w + update lands on a neighbouring float32: 1 ulp of |w|). So a run passes with
|difference| <= 1e-4 x (largest update) + 4 ulp(max |w|); a wrong gradient (a missing reduction, a
shard applied twice, a lost micro-batch) is off by a large fraction of the update.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from vlm_opd.config import config_from_dict
from vlm_opd.errors import ConfigError

HERE = Path(__file__).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1", "PYTHONWARNINGS": "ignore"}
ENTRY = HERE / "fsdp_entry.py"  # the CLI with test hooks (varied rewards, a simulated crash)


def _state(path):
    from vlm_opd.models import load_model

    return load_model(path).model.state_dict()


def _compare(a_dir, b_dir, before):
    """(largest update of a over `before`, largest |a - b|, the tolerance of the module doc)."""
    a, b = _state(a_dir), _state(b_dir)
    assert a.keys() == b.keys()
    moved = max((a[k].float() - before[k].float()).abs().max().item() for k in a)
    diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    ulp = torch.finfo(torch.float32).eps * max(a[k].float().abs().max().item() for k in a)
    return moved, diff, 1e-4 * moved + 4 * ulp


def _base(student, **extra):
    cfg = {"student": {"path": str(student)}, "data": {"train": "synthetic:8"},
           "rollout": {"k": 2, "max_new_tokens": 6}, "sft": {"max_length": 24},
           "optim": {"lr": 0.1, "eps": 1.0, "schedule": "constant", "max_grad_norm": None},
           "prompts_per_step": 4, "steps": 2}
    cfg.update(extra)
    return cfg


@pytest.mark.slow
def test_two_process_fsdp_matches_one_process_for_every_method_family(tmp_path, tiny_qwen2vl_dir, tiny_qwen25vl_dir,
                                                                     tiny_qwen3_lm_dir, launch):
    """One chained config runs every method (one launch instead of six): SFT, KD (teacher sampling on
    gathered weights), VA-OPD (real + degraded teacher passes, 2 micro-batches, gradient clipping on sharded
    gradients), GRPO with the KL to a sharded reference, PAPO (masked pass, 2 PPO epochs), VOLD (a sharded
    text-only teacher), OPD with a LoRA student. Each stage starts from the previous one's final/, so final/ is
    also loaded each time."""
    cfg = _base(tiny_qwen2vl_dir, method="sft", teacher={"path": str(tiny_qwen25vl_dir)}, stages=[
        {"method": "sft"},
        {"method": "kd"},
        # + periodic evaluation with the teacher's VA (every process evaluates) and best-checkpoint saves
        {"method": "va_opd", "grad_accum": 2, "optim": {"max_grad_norm": 0.05},
         "data": {"eval": "synthetic:2"}, "eval": {"every": 1, "k": 2, "max_new_tokens": 6}},
        {"method": "grpo", "grpo": {"kl_coef": 0.1}},
        # mini_batches=1: with several, each process shuffles its own prompt groups into mini-batches, so
        # the updates of 1 and 2 processes see different groups (as under DDP), whatever the sharding.
        {"method": "papo", "grpo": {"ppo_epochs": 2, "mini_batches": 1}},
        {"method": "vold", "teacher": {"path": str(tiny_qwen3_lm_dir)}},
        # a LoRA student stays whole on every process (DDP-style); only the teacher is sharded
        {"method": "opd", "lora": {"enabled": True, "r": 4}, "optim": {"max_grad_norm": 1.0}},
    ])
    path = tmp_path / "stages.yaml"
    path.write_text(yaml.safe_dump(cfg))
    two = launch(["train", path, f"output_dir={tmp_path / 'two'}", "parallel.strategy=fsdp", "--no-progress"],
                 script=ENTRY)
    assert two.returncode == 0, two.stderr[-3000:]
    one = launch(["train", str(path), f"output_dir={tmp_path / 'one'}", "--no-progress"], nproc=1, script=ENTRY)
    assert one.returncode == 0, one.stderr[-3000:]
    before = _state(tiny_qwen2vl_dir)
    stages = sorted(p.name for p in (tmp_path / "one").iterdir() if p.name.startswith("stage"))
    assert len(stages) == 7
    for name in stages:
        moved, diff, tol = _compare(tmp_path / "one" / name / "final", tmp_path / "two" / name / "final", before)
        assert moved > 1e-4, f"{name}: the update is trivially small ({moved})"
        assert diff <= tol, f"{name}: 2-process FSDP differs from 1 process by {diff} (update {moved}, tolerance {tol})"
        before = _state(tmp_path / "one" / name / "final")
        lines = (tmp_path / "two" / name / "metrics.jsonl").read_text().splitlines()
        assert len([line for line in lines if '"loss"' in line]) == 2  # one writer
    evals = {run: [json.loads(line) for line in (tmp_path / run / stages[2] / "metrics.jsonl").read_text().splitlines()
                   if "eval/accuracy" in line] for run in ("one", "two")}
    assert [e["step"] for e in evals["two"]] == [0, 1, 2]
    for a, b in zip(evals["one"], evals["two"], strict=True):
        assert a["eval/accuracy"] == b["eval/accuracy"]
        assert a["eval/mean_va"] == pytest.approx(b["eval/mean_va"], rel=1e-4, abs=1e-6)
    assert (tmp_path / "two" / stages[2] / "best.json").exists()

    # final/ of an FSDP run is a normal model directory: it loads and evaluates
    bench = tmp_path / "bench"
    for args in (["eval", "--write-fixtures", str(bench)],
                 ["eval", "--model", str(tmp_path / "two" / stages[-1] / "final"), "--benchmarks", "mmstar",
                  "--data-dir", str(bench), "--k", "1", "--max-new-tokens", "8", "--out", str(tmp_path / "ev")]):
        res = launch(args, nproc=1)
        assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert "mmstar" in json.dumps(results)


@pytest.mark.slow
def test_each_process_holds_half_of_every_parameter_and_sampling_needs_no_collective(tmp_path, tiny_qwen2vl_dir):
    out = subprocess.run([str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2",
                          str(HERE / "fsdp_shard_worker.py"), str(tiny_qwen2vl_dir), str(tmp_path)],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    a, b = (r["fractions"] for r in ranks)
    numel = ranks[0]["numel"]
    assert set(a) == set(numel)  # every parameter is sharded (decoder layers and the root unit)
    for name, frac in a.items():
        assert a[name] + b[name] == pytest.approx(1.0)  # the two shards are the whole parameter
        assert abs(frac - 0.5) <= 0.5 / max(1, numel[name] ** 0.5)  # about half each (dim-0 split)
    # what `vlm-opd plan` assumes for the FSDP column: params / N per process; the root unit is what is
    # outside the decoder layers
    from vlm_opd.train.plan import model_shape

    shape = model_shape(str(tiny_qwen2vl_dir))
    assert sum(a[n] * numel[n] for n in a) == pytest.approx(shape.params / 2)
    assert sum(v for n, v in numel.items() if ".layers." not in n or "visual" in n) == shape.root_params
    for r in ranks:
        # after a forward: the root unit (lm_head) stays whole for the chunked losses, layers are resharded
        assert r["after_forward"] == {"lm_head_whole": True, "layer_sharded": True}
        assert r["after_release_lm_head_sharded"]
        assert r["gathered_all_whole"]  # and 1 vs 4 forwards inside `gathered` did not hang
        assert r["after_gathered"] == {"lm_head_sharded": True, "layer_sharded": True}
        assert r["after_gathered_forward"] == {"lm_head_whole": True, "layer_sharded": True}


@pytest.fixture(scope="module")
def tied_qwen3vl_dir(tmp_path_factory):
    """A tiny Qwen3-VL whose lm_head is its input embedding, as in the released 2B and 4B."""
    from vlm_opd.models import build_tiny

    out = tmp_path_factory.mktemp("tied_qwen3vl")
    lm = build_tiny("qwen3_vl", out, seed=0, eos_boost=3.0, tie_word_embeddings=True)
    assert lm.model.get_output_embeddings().weight is lm.model.get_input_embeddings().weight
    return out


@pytest.mark.slow
def test_fsdp_crash_and_resume_matches_an_uninterrupted_run(tmp_path, tied_qwen3vl_dir, tiny_qwen3vl_dir, launch):
    """Also: a tied-embedding student (one parameter, two uses, one FSDP unit) with gradient checkpointing."""
    cfg = _base(tied_qwen3vl_dir, method="va_opd", teacher={"path": str(tiny_qwen3vl_dir)}, steps=3,
                checkpoint_every=1, keep_last=3, parallel={"strategy": "fsdp"})
    cfg["student"]["gradient_checkpointing"] = True
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    full = launch(["train", str(path), f"output_dir={tmp_path / 'full'}", "--no-progress"], script=ENTRY)
    assert full.returncode == 0, full.stderr[-3000:]
    cut = launch(["train", str(path), f"output_dir={tmp_path / 'cut'}", "--no-progress"], script=ENTRY,
                 env={"VLM_OPD_TEST_CRASH_AT": "3"})
    assert cut.returncode != 0 and "simulated crash" in cut.stderr
    step2 = tmp_path / "cut" / "checkpoints" / "step-000002"
    assert (step2 / "COMPLETE").exists() and (step2 / "state" / ".metadata").exists()
    assert len(list((step2 / "state").glob("*.distcp"))) == 2  # one shard file per process
    shutil.copytree(tmp_path / "cut", tmp_path / "one")  # the same crashed run, to resume on one process
    resumed = launch(["train", path, f"output_dir={tmp_path / 'cut'}", "resume=latest", "--no-progress"],
                     script=ENTRY)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = _state(tmp_path / "full" / "final"), _state(tmp_path / "cut" / "final")
    assert all(torch.equal(a[k], b[k]) for k in a)  # same processes, same order: bit-identical

    # A sharded checkpoint loads on another number of processes: resume the 2-process run on one.
    one = launch(["train", str(path), f"output_dir={tmp_path / 'one'}", "resume=latest", "--no-progress"], nproc=1,
                 script=ENTRY)
    assert one.returncode == 0, one.stderr[-3000:]
    moved, diff, tol = _compare(tmp_path / "full" / "final", tmp_path / "one" / "final", _state(tied_qwen3vl_dir))
    assert moved > 1e-4 and diff <= tol, (diff, moved, tol)
    from vlm_opd.models import load_model

    final = load_model(tmp_path / "one" / "final").model  # still tied when loaded back
    assert final.get_output_embeddings().weight is final.get_input_embeddings().weight


def test_one_process_fsdp_equals_the_plain_run_and_checkpoints_are_sharded(tmp_path, tiny_qwen2vl_dir,
                                                                           tiny_qwen25vl_dir):
    from vlm_opd.train.trainer import train

    common = _base(tiny_qwen2vl_dir, method="va_opd", teacher={"path": str(tiny_qwen25vl_dir)}, checkpoint_every=1)
    plain = train(config_from_dict({**common, "output_dir": str(tmp_path / "plain")}), progress=False)
    sharded = train(config_from_dict({**common, "output_dir": str(tmp_path / "fsdp"),
                                      "parallel": {"strategy": "fsdp", "teacher_offload": True}}), progress=False)
    assert not torch.distributed.is_initialized()  # the one-process group is torn down again
    moved, diff, tol = _compare(plain.final_dir, sharded.final_dir, _state(tiny_qwen2vl_dir))
    assert moved > 1e-4 and diff <= tol, (moved, diff, tol)
    ckpt = tmp_path / "fsdp" / "checkpoints" / "step-000001"
    assert (ckpt / "state" / ".metadata").exists() and (ckpt / "scheduler.pt").exists()
    # the strategy is part of what a run is (its checkpoints' format): it cannot change on resume
    with pytest.raises(ConfigError, match="parallel.strategy"):
        train(config_from_dict({**common, "output_dir": str(tmp_path / "fsdp"), "resume": "latest"}), progress=False)


def test_fsdp_bf16_moves_the_float32_master_weights(tmp_path, tiny_qwen2vl_dir, tiny_qwen25vl_dir):
    """bf16 compute (the gathered copies) with float32 shards, float32 reduction: updates far below a bf16
    ulp (eps=1 keeps them ~lr x gradient, ~1e-4 against a bf16 half-ulp of ~2e-4 at |w| = 0.1) land in
    the master weights and point where the float32 run's do."""
    from vlm_opd.train.trainer import train

    common = _base(tiny_qwen2vl_dir, method="va_opd", teacher={"path": str(tiny_qwen25vl_dir)},
                   optim={"lr": 1e-2, "eps": 1.0, "schedule": "constant", "max_grad_norm": None})
    ref = train(config_from_dict({**common, "output_dir": str(tmp_path / "fp32")}), progress=False)
    bf = train(config_from_dict({**common, "output_dir": str(tmp_path / "bf16"), "mixed_precision": "bf16",
                                 "parallel": {"strategy": "fsdp"}}), progress=False)
    s, a, b = _state(tiny_qwen2vl_dir), _state(ref.final_dir), _state(bf.final_dir)
    da = torch.cat([(a[k].float() - s[k].float()).flatten() for k in s])
    db = torch.cat([(b[k].float() - s[k].float()).flatten() for k in s])
    assert (db != 0).float().mean() > 0.5 * (da != 0).float().mean()
    assert torch.nn.functional.cosine_similarity(da, db, dim=0) > 0.95


@pytest.mark.parametrize("extra, key", [
    ({"rollout": {"backend": "vllm"}}, "parallel.strategy"),
    ({"teacher": {"path": "t", "device": "cuda:1"}}, "teacher.device"),
])
def test_fsdp_refuses_what_it_does_not_support(extra, key):
    cfg = {"method": "opd", "student": {"path": "s"}, "teacher": {"path": "t"}, "data": {"train": "d"},
           "parallel": {"strategy": "fsdp"}, **extra}
    with pytest.raises(ConfigError, match=key):
        config_from_dict(cfg)
    with pytest.raises(ConfigError, match="parallel.teacher_offload: needs parallel.strategy=fsdp"):
        config_from_dict({**cfg, "parallel": {"teacher_offload": True}, "lora": {}, "rollout": {},
                          "teacher": {"path": "t"}})


def test_fsdp_nan_policy_skips_the_step_like_the_plain_run(tmp_path, tiny_qwen2vl_dir, nan_loss_at):
    from vlm_opd.train import trainer

    calls = nan_loss_at("sft", 2)
    results = {}
    for strategy in ("ddp", "fsdp"):
        calls["n"] = 0
        cfg = _base(tiny_qwen2vl_dir, method="sft", steps=3, nan_policy="skip", output_dir=str(tmp_path / strategy),
                    parallel={"strategy": strategy})
        results[strategy] = trainer.train(config_from_dict(cfg), progress=False)
        assert results[strategy].skipped_steps == 1
    moved, diff, tol = _compare(results["ddp"].final_dir, results["fsdp"].final_dir, _state(tiny_qwen2vl_dir))
    assert moved > 1e-4 and diff <= tol, (moved, diff, tol)


def test_sharded_teacher_runs_the_same_forwards_with_or_without_images(tiny_qwen2vl, tiny_qwen25vl_dir):
    """A process whose rollouts have no image must still make the degraded pass of a sharded teacher (its
    forwards are collectives; one process skipping one would hang the others). VA stays 0 there."""
    from vlm_opd.data.example import Example
    from vlm_opd.models import load_model
    from vlm_opd.rollout import sample
    from vlm_opd.scoring import teacher_signals
    from vlm_opd.train import fsdp

    rollout = sample(tiny_qwen2vl, [Example("What is 2 + 3?", [], answer="5", id="t")], k=2, max_new_tokens=5, seed=0)
    teacher = load_model(tiny_qwen25vl_dir)
    plain = teacher_signals(teacher, rollout, degrade=lambda im: im)
    created = fsdp.init_single_process_group(torch.device("cpu"))
    try:
        fsdp.shard_model(teacher.model, torch.device("cpu"))
        calls = []
        teacher.model.register_forward_hook(lambda *a: calls.append(1))
        sharded = teacher_signals(teacher, rollout, degrade=lambda im: im, batch_real_and_degraded=False)
    finally:
        if created:
            torch.distributed.destroy_process_group()
    assert len(calls) == 2  # real and degraded, as for a batch with images
    assert torch.allclose(sharded.logprobs_real, plain.logprobs_real, atol=1e-5)
    assert torch.equal(sharded.logprobs_degraded, sharded.logprobs_real)


def test_fsdp_upcasts_a_bf16_stored_student_like_the_plain_run(tmp_path, bf16_student_dir, tiny_qwen25vl_dir):
    """A bf16 checkpoint trains on float32 master weights under FSDP too (upcast unit by unit while sharding) and
    final/ is written back in bf16: the same final weights as the plain run's, up to a bf16 rounding flip."""
    from vlm_opd.models import load_model
    from vlm_opd.train.trainer import train

    common = _base(bf16_student_dir, method="opd", teacher={"path": str(tiny_qwen25vl_dir)},
                   optim={"lr": 1e-3, "eps": 1.0, "schedule": "constant", "max_grad_norm": None})
    plain = train(config_from_dict({**common, "output_dir": str(tmp_path / "plain")}), progress=False)
    sharded = train(config_from_dict({**common, "output_dir": str(tmp_path / "fsdp"), "parallel": {"strategy": "fsdp"}}),
                    progress=False)
    a, b = load_model(plain.final_dir).model, load_model(sharded.final_dir).model
    assert a.dtype == b.dtype == torch.bfloat16
    start = load_model(bf16_student_dir).model.state_dict()
    sa, sb = a.state_dict(), b.state_dict()
    moved = sum(int((sa[k] != start[k]).sum()) for k in sa)
    assert moved > 0.1 * sum(v.numel() for v in sa.values())  # updates far below a bf16 ulp still land
    for k in sa:
        differ = sa[k] != sb[k]
        if differ.any():  # a float32 master weight on a rounding boundary: one bf16 ulp apart
            ulp = sa[k][differ].float().abs() * 2**-7
            assert ((sa[k][differ].float() - sb[k][differ].float()).abs() <= ulp + 1e-30).all(), k
    assert sum(int((sa[k] != sb[k]).sum()) for k in sa) <= 1e-3 * moved
