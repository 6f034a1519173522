"""`vlm-opd plan`: parameter counts, the issue-14 table for the paper settings, and the estimates against
what the trainer allocates on the CPU (exact for weights / gradients / optimizer state, measured peaks for
activations)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vlm_opd.config import config_from_dict, load_config
from vlm_opd.train import plan as P

PAPER = Path(__file__).resolve().parents[2] / "configs" / "paper"

# Parameter counts the model cards report (hub "Model size", safetensors total), rounded as shown there.
MODEL_CARD_PARAMS = {
    "Qwen/Qwen3-VL-2B-Instruct": 2.13e9,
    "Qwen/Qwen3-VL-4B-Instruct": 4.44e9,
    "Qwen/Qwen3-VL-8B-Instruct": 8.77e9,
    "Qwen/Qwen3-VL-32B-Instruct": 33.4e9,
    "Qwen/Qwen2.5-VL-3B-Instruct": 3.75e9,
    "Qwen/Qwen3-8B": 8.19e9,
}


@pytest.fixture(scope="module")
def known_shapes():
    return {name: P.model_shape(name) for name in MODEL_CARD_PARAMS}


def test_builtin_table_matches_model_card_counts(known_shapes):
    for name, card in MODEL_CARD_PARAMS.items():
        shape = known_shapes[name]
        # The cards round to 3 significant digits: half a unit of the last digit.
        assert abs(shape.params - card) <= 0.005e9 * (10 if card >= 10e9 else 1), (name, shape.params)
        assert shape.dtype_bytes == 2 and shape.source.startswith("built-in table")
    assert known_shapes["Qwen/Qwen3-VL-2B-Instruct"].image["max_pixels"] == 16777216
    assert known_shapes["Qwen/Qwen3-8B"].image is None and known_shapes["Qwen/Qwen3-8B"].vision is None


def _plan(cfg, shapes, gpus=1, parallel="ddp", **kw):
    student = shapes[cfg.student.path]
    teacher = shapes.get(cfg.teacher.path) if cfg.teacher.path else None
    wl = P.workload(cfg, gpus, student, teacher, text_tokens=512, images_per_prompt=1, image_size=(1024, 1024))
    return P.plan_memory(cfg, student, teacher, wl, gpus, parallel, **kw)


def test_issue_table_for_the_paper_settings(known_shapes):
    """Issue 14's table (per GPU under DDP, before activations): 2B student full fine-tune ~ 2B x 16 bytes =
    32 GB; + 8B teacher 16 GB; + 32B teacher 64 GB, 96 GB in all. The issue rounds parameter counts to the
    model names (2B, 8B, 32B; real: 2.13B, 8.77B, 33.4B); in GiB, what GPUs report and the planner prints,
    the real counts land within 4% of the table's numbers, so 5% is the tolerance. The bytes per parameter
    are checked exactly."""
    gib = P.GIB
    for file, teacher, table_teacher in (("geo3k-va_opd.yaml", "Qwen/Qwen3-VL-8B-Instruct", 16),
                                         ("geo3k-va_opd-teacher32b.yaml", "Qwen/Qwen3-VL-32B-Instruct", 64)):
        cfg = load_config(PAPER / file)
        assert cfg.teacher.path == teacher and not cfg.lora.enabled
        plan = _plan(cfg, known_shapes)
        s, n_s, n_t = plan.static, known_shapes[cfg.student.path].params, known_shapes[teacher].params
        student_bytes = (s["student trainable weights (fp32 master)"] + s["student gradients (fp32)"]
                         + s["AdamW m + v (fp32)"])
        assert student_bytes == 16 * n_s
        assert s["teacher (stored dtype)"] == 2 * n_t
        assert set(s) == {"student trainable weights (fp32 master)", "student gradients (fp32)",
                          "AdamW m + v (fp32)", "teacher (stored dtype)"}  # one GPU: no DDP buckets
        assert student_bytes / gib == pytest.approx(32, rel=0.05)
        assert s["teacher (stored dtype)"] / gib == pytest.approx(table_teacher, rel=0.05)
        assert plan.static_bytes / gib == pytest.approx(32 + table_teacher, rel=0.05)
        if table_teacher == 64:  # "more than an 80 GB card" before activations
            assert plan.static_bytes > 80 * gib and not P.fits(plan, 80, 0.0)
            # FSDP over 4 GPUs shards all of it.
            fsdp = _plan(cfg, known_shapes, gpus=4, parallel="fsdp")
            assert fsdp.static_bytes == pytest.approx(plan.static_bytes / 4, abs=8)
            ddp4 = _plan(cfg, known_shapes, gpus=4)
            assert ddp4.static["DDP gradient buckets (fp32)"] == 4 * n_s


def test_lora_and_grpo_reference_accounting(known_shapes):
    cfg = load_config(PAPER / "geo3k-grpo.yaml", ["lora.enabled=true", "grpo.kl_coef=0.04"])
    shape = known_shapes[cfg.student.path]
    plan = _plan(cfg, known_shapes)
    adapters = shape.lora_params(cfg.lora.r, cfg.lora.target_modules)
    assert 0 < adapters < shape.params // 50
    assert plan.static["student trainable weights (fp32 master)"] == 4 * adapters
    assert plan.static["AdamW m + v (fp32)"] == 8 * adapters
    assert plan.static["student frozen base (stored dtype)"] == 2 * shape.params
    assert plan.static["GRPO reference (stored dtype)"] == 2 * shape.params
    assert "teacher (stored dtype)" not in plan.static
    # FSDP with a LoRA student: the student stays whole (DDP-style, with gradient buckets), the reference is sharded
    fsdp = _plan(cfg, known_shapes, gpus=4, parallel="fsdp")
    assert fsdp.static["student frozen base (stored dtype)"] == 2 * shape.params
    assert fsdp.static["DDP gradient buckets (fp32)"] == 4 * adapters
    assert fsdp.static["GRPO reference (stored dtype)"] == 2 * shape.params // 4
    assert "FSDP: whole model gathered for sampling" not in fsdp.phases["sampling"]


def test_image_tokens_follow_the_processor():
    image = P.KNOWN_MODELS["Qwen/Qwen3-VL-2B-Instruct"]["image"]
    assert P.image_tokens(image) == 16777216 // 32**2  # max_pixels: 16,384 tokens
    assert P.image_tokens(image, 1024, 1024) == 32 * 32
    assert P.image_tokens(image, 100, 100) == 64  # min_pixels 65,536 = 256 x 256 -> 8 x 8


# ------------------------------------------------------------------------------------------------
# Against the trainer: exact bytes of what it keeps for the whole run


class _SpyAdamW(torch.optim.AdamW):
    """Records, at the first step, the bytes of the parameters it steps, their gradients and (after the step)
    its state."""

    seen: dict = {}

    def step(self, closure=None):
        params = [p for g in self.param_groups for p in g["params"]]
        first = not _SpyAdamW.seen
        if first:
            _SpyAdamW.seen.update(weights=sum(p.numel() * p.element_size() for p in params),
                                  grads=sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None),
                                  dtypes={p.dtype for p in params})
        out = super().step(closure)
        if first:  # AdamW's per-tensor `step` counters are scalars; m and v are the memory
            _SpyAdamW.seen["adam"] = sum(v.numel() * v.element_size() for st in self.state.values()
                                         for k, v in st.items() if k in ("exp_avg", "exp_avg_sq"))
        return out


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_static_accounting_equals_the_trainers_tensors(tmp_path, monkeypatch, tiny_qwen2vl_dir, lora):
    """A bf16-stored student and teacher, one real OPD step: the planner's weights / gradients / AdamW state
    / teacher lines equal the bytes of the tensors the trainer holds (exactly: same counting, no estimate)."""
    from vlm_opd.train import trainer as trainer_mod

    _SpyAdamW.seen = {}
    monkeypatch.setattr(torch.optim, "AdamW", _SpyAdamW)
    loaded = {}
    real_load = trainer_mod._load

    def spy_load(mcfg, device):
        lm = real_load(mcfg, device)
        loaded.setdefault(mcfg.path, []).append(lm)
        return lm

    monkeypatch.setattr(trainer_mod, "_load", spy_load)
    teacher_dir = tmp_path / "teacher"
    import shutil

    shutil.copytree(tiny_qwen2vl_dir, teacher_dir)  # a second path: the trainer loads student and teacher apart
    raw = {"method": "opd", "output_dir": str(tmp_path / "run"),
           "student": {"path": str(tiny_qwen2vl_dir), "dtype": "bfloat16"},
           "teacher": {"path": str(teacher_dir), "dtype": "bfloat16"},
           "data": {"train": "synthetic:4"}, "rollout": {"k": 2, "max_new_tokens": 4},
           "prompts_per_step": 2, "steps": 1, "eval": {"every": 0}, "mixed_precision": "no",
           "lora": {"enabled": lora, "r": 4}}
    cfg = config_from_dict(raw)
    trainer_mod.train(cfg, progress=False)

    student = P.model_shape(str(tiny_qwen2vl_dir), dtype="bfloat16")
    teacher = P.model_shape(str(teacher_dir), dtype="bfloat16")
    wl = P.workload(cfg, 1, student, teacher, text_tokens=64, images_per_prompt=1, image_size=None, accelerator=False)
    plan = P.plan_memory(cfg, student, teacher, wl, 1, "ddp", bf16=False)
    seen = _SpyAdamW.seen
    assert seen["dtypes"] == {torch.float32}
    assert plan.static["student trainable weights (fp32 master)"] == seen["weights"]
    assert plan.static["student gradients (fp32)"] == seen["grads"]
    assert plan.static["AdamW m + v (fp32)"] == seen["adam"]
    t_model = loaded[str(teacher_dir)][0].model
    assert plan.static["teacher (stored dtype)"] == sum(p.numel() * p.element_size() for p in t_model.parameters())
    if lora:
        s_model = loaded[str(tiny_qwen2vl_dir)][0].model
        frozen = sum(p.numel() * p.element_size() for p in s_model.parameters() if not p.requires_grad)
        assert plan.static["student frozen base (stored dtype)"] == frozen
        assert seen["weights"] < frozen


# ------------------------------------------------------------------------------------------------
# Activation estimates against measured CPU peaks


@pytest.mark.parametrize("family,checkpointing,bf16", [("qwen3_vl", False, False), ("qwen2_vl", False, False),
                                                       ("qwen3_vl", True, False), ("qwen3_vl", False, True)],
                         ids=["qwen3_vl", "qwen2_vl", "qwen3_vl-checkpointing", "qwen3_vl-bf16-autocast"])
def test_activation_estimates_bound_measured_cpu_peaks(tmp_path, family, checkpointing, bf16):
    """The student's forward + backward and the teacher's scoring pass, measured with `memprobe.cpu_peak_allocated`
    (torch's CPU allocator records: exact bytes, not RSS) on a small real-family model (hidden 256), float32
    weights, every row at full length, float32 compute or CPU bf16 autocast. The estimate is meant as a bound:
    it must not be below the measured peak by more than 5% and not above it by more than 50% (measured here:
    student +15..+17%, +43% with gradient checkpointing, whose recomputed layer the estimate counts whole while
    backward frees it op by op; teacher +17..+29%: its no-grad layer transients overlap less than assumed).
    At the real Qwen3-VL-2B width (1 layer, 151,936-row vocabulary, 2 rows of 152 tokens) the same
    comparison measured +8% (fp32), +11% (bf16 autocast), +12% (bf16, gradient checkpointing)."""
    import numpy as np
    from PIL import Image

    from vlm_opd.data.example import Example
    from vlm_opd.memprobe import cpu_peak_allocated
    from vlm_opd.models import build_tiny, load_model
    from vlm_opd.rollout import sample
    from vlm_opd.scoring import teacher_signals
    from vlm_opd.train import step as step_mod

    out = tmp_path / family
    build_tiny(family, out, text_hidden=256, text_layers=2, text_heads=4, text_kv_heads=2, vision_embed=64, seed=0)
    student, teacher = load_model(out), load_model(out)
    student.model.train()
    if checkpointing:
        student.model.gradient_checkpointing_enable()
    rng = np.random.default_rng(0)
    examples = [Example("What number is shown? <image>", [Image.fromarray(rng.integers(0, 256, (64, 64, 3),
                                                                                      dtype=np.uint8))],
                        answer="3", id=str(i)) for i in range(2)]
    with torch.no_grad():
        rollout = sample(student, examples, k=2, max_new_tokens=32, temperature=1.0, seed=0)
    rollout.completion_mask[:] = 1  # the planner's worst case: every row runs to max_new_tokens
    cfg = config_from_dict({"method": "opd", "student": {"path": "s", "gradient_checkpointing": checkpointing},
                            "teacher": {"path": "t"}, "data": {"train": "d"}, "prompts_per_step": 2,
                            "rollout": {"k": 2, "max_new_tokens": 32}, "loss": {"chunk_size": 16}})
    ctx = step_mod.StepContext(cfg=cfg, student=student, student_for_generation=lambda: student, teacher=teacher)
    with torch.no_grad():
        scored = cpu_peak_allocated(lambda: teacher_signals(teacher, rollout, degrade=None, need_hidden=True,
                                                            chunk_size=16))
    sig = scored.result

    def forward_backward():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            per_token = step_mod.per_token_divergence(ctx, rollout, sig.hidden_real, sig.logprobs_real,
                                                      sig.lm_head_weight)
        per_token.sum().backward()

    forward_backward()  # the parameter gradients exist from here on (they are static memory in the plan)
    trained = cpu_peak_allocated(forward_backward)

    shape = P.model_shape(str(out))
    prompt, completion = rollout.prompt_ids.shape[1], rollout.completion_ids.shape[1]
    wl = P.Workload(rows=4, prompts=2, prompt_tokens=prompt, completion_tokens=completion,
                    image_tokens=P.image_tokens(shape.image, 64, 64), images_per_prompt=1, teacher_rows=4,
                    teacher_prompt_tokens=prompt, sampler="student")
    assert wl.image_tokens == 4
    plan = P.plan_memory(cfg, shape, shape, wl, 1, "ddp", bf16=bf16)
    student_phase = dict(plan.phases["student forward + backward"])
    student_phase.pop("teacher hidden states kept (+ gathered)")  # allocated before the measured call
    # Here the gradients exist before the measured call, so the chunked backward's [V, H] lm_head gradient is
    # a transient added into them; in training (zero_grad(set_to_none=True)) it becomes the gradient (static).
    est_student = sum(student_phase.values()) + shape.lm_head_params * 4
    est_teacher = sum(P.plan_memory(cfg, shape, shape, wl, 1, "ddp", bf16=False).phases["teacher scoring"].values())
    for what, est, measured in (("student", est_student, trained.peak_bytes), ("teacher", est_teacher, scored.peak_bytes)):
        assert 0.95 <= est / measured <= 1.5, (what, est, measured)


# ------------------------------------------------------------------------------------------------
# The command


def test_plan_command_json_and_table(capsys, tmp_path):
    from vlm_opd.cli import main

    assert main(["plan", str(PAPER / "geo3k-va_opd-teacher32b.yaml"), "grad_accum=2", "--gpus", "8", "--gpu-mem", "80",
                 "--image-size", "1024x1024", "--json", "--offload-teacher"]) == 0
    out = json.loads(capsys.readouterr().out)
    (stage,) = out["stages"]
    assert stage["models"]["teacher"]["name"] == "Qwen/Qwen3-VL-32B-Instruct"
    assert stage["workload"]["prompts"] == 1 and stage["workload"]["rows"] == 4  # 16 prompts / 8 GPUs / 2 micro-batches x K=4
    assert stage["workload"]["teacher_rows"] == 8  # VA-OPD's batched real + degraded teacher pass
    assert stage["summary"]["fsdp"]["static"]["teacher (stored dtype, CPU offload)"] == 0
    assert stage["summary"]["ddp"]["fits"] is False
    assert stage["summary"]["fsdp"]["fits"] is True  # the 32B teacher's setting needs FSDP on 80 GB cards

    assert main(["plan", str(PAPER / "vold-qwen3-8b-to-qwen25vl-3b.yaml"), "--image-size", "512x512"]) == 0
    text = capsys.readouterr().out
    assert "method sft" in text and "method vold" in text and "Qwen/Qwen3-8B" in text
    assert "does NOT fit" in text or "fits" in text

    assert main(["plan", str(PAPER / "geo3k-opd.yaml"), "teacher.path=no/such-model"]) == 2
    assert "teacher.path" in capsys.readouterr().err
    assert main(["plan", str(PAPER / "geo3k-opd.yaml"), "--gpus", "8"]) == 2
    assert "grad_accum=2" in capsys.readouterr().err
