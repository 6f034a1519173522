"""The demo's task and recipe: deterministic generator, the `holdout: images` knob, configs in sync,
and (the premise of visual advantage) pixelation really destroys the printed digits for a teacher that
has learned to read them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlm_opd.data.synthetic import generate
from vlm_opd.demo.recipe import FULL, QUICK, config_files, method_configs

REPO = Path(__file__).resolve().parents[2]


def test_generator_is_deterministic_under_a_seed():
    a = generate(6, 3, split="eval", **FULL.task)
    b = generate(6, 3, split="eval", **FULL.task)
    c = generate(6, 4, split="eval", **FULL.task)
    assert [e.images[0].tobytes() for e in a] == [e.images[0].tobytes() for e in b]
    assert [(e.problem, e.solution, e.answer) for e in a] == [(e.problem, e.solution, e.answer) for e in b]
    assert [e.images[0].tobytes() for e in a] != [e.images[0].tobytes() for e in c]


def test_holdout_images_splits_share_values_but_not_images():
    knobs = {**FULL.task, "value_range": [1, 2]}  # 4 combinations: both splits must see all of them
    train = generate(64, 0, split="train", **knobs)
    held = generate(64, 0, split="eval", **knobs)
    assert {tuple(e.meta["values"]) for e in train} == {tuple(e.meta["values"]) for e in held} == {
        (1, 1), (1, 2), (2, 1), (2, 2)}
    assert not {e.images[0].tobytes() for e in train} & {e.images[0].tobytes() for e in held}
    # The default still holds out whole (task, values) combinations.
    train_v = generate(64, 0, split="train", tasks=["bar-sum"], num_values=2)
    held_v = generate(64, 0, split="eval", tasks=["bar-sum"], num_values=2)
    assert not {tuple(e.meta["values"]) for e in train_v} & {tuple(e.meta["values"]) for e in held_v}


def test_checked_in_configs_match_the_recipe():
    files = config_files(FULL)
    directory = REPO / "configs" / "demo"
    assert sorted(p.name for p in directory.glob("*.yaml")) == sorted(files)
    for name, text in files.items():
        assert (directory / name).read_text() == text, f"configs/demo/{name} is stale: run write_configs"


def test_demo_configs_validate_and_share_student_and_seed():
    from vlm_opd.config import config_from_dict

    runs = method_configs(QUICK, teacher_init="t0", student_init="s0", teacher="t", student="s", runs_dir="r",
                          seed=5, with_grpo=True)
    cfgs = {name: config_from_dict(c) for name, c in runs.items()}
    for m in ("opd", "va_opd", "grpo"):
        assert (cfgs[m].student.path, cfgs[m].teacher.path, cfgs[m].seed, cfgs[m].steps) == ("s", "t", 5, QUICK.distill_steps)
        assert cfgs[m].eval.temperature == 1.0 and not cfgs[m].eval.greedy and cfgs[m].eval.measure_va
    assert cfgs["teacher_sft"].eval.greedy and cfgs["teacher_sft"].method == "sft"


def test_student_task_overrides_only_the_cold_start():
    import dataclasses

    variant = dataclasses.replace(FULL, task={**FULL.task, "filler_sentences": 3},
                                  student_task={"filler_skew": 2.0})
    runs = method_configs(variant, teacher_init="t0", student_init="s0", teacher="t", student="s", runs_dir="r", seed=0)
    assert runs["student_sft"]["data"]["synthetic"] == {**variant.task, "filler_skew": 2.0}
    for name in ("teacher_sft", "opd", "va_opd"):
        assert runs[name]["data"]["synthetic"] == variant.task
    # the cached teacher depends on the task, not on how the student is cold-started
    assert dataclasses.replace(variant, student_task={}).teacher_key() == variant.teacher_key() != FULL.teacher_key()


@pytest.mark.slow
def test_pixelation_destroys_the_digits_a_trained_teacher_reads(tmp_path):
    """Train a tiny teacher (printed values 1 or 2 only, so it learns to read them in ~250 SFT steps, about
    half a minute), then compare its log-prob of the read-off digits under the real and the pixelated image."""
    import dataclasses

    from vlm_opd.config import config_from_dict
    from vlm_opd.data.degrade import pixelate
    from vlm_opd.demo.analysis import reading_positions
    from vlm_opd.demo.pipeline import build_model
    from vlm_opd.models import load_model
    from vlm_opd.rollout import rollout_from_texts
    from vlm_opd.scoring import teacher_signals
    from vlm_opd.train.trainer import train

    task = {**FULL.task, "value_range": [1, 2]}
    recipe = dataclasses.replace(FULL, task=task, teacher_size=dataclasses.replace(FULL.student_size))
    build_model(recipe, "teacher", tmp_path / "init")
    cfg = config_from_dict({
        "method": "sft", "output_dir": str(tmp_path / "run"), "student": {"path": str(tmp_path / "init")},
        "data": {"train": "synthetic:4096", "synthetic": task},
        "optim": {"lr": 2e-3, "betas": [0.9, 0.98], "warmup_steps": 20, "schedule": "cosine", "min_lr_ratio": 0.05},
        "prompts_per_step": 32, "steps": 400, "log_every": 50,
    })
    result = train(cfg, progress=False)
    teacher = load_model(result.final_dir)
    held = generate(32, 1, split="eval", **task)
    rollout = rollout_from_texts(teacher, held, [e.solution for e in held])
    with torch.no_grad():
        sig = teacher_signals(teacher, rollout, degrade=pixelate, need_hidden=False)
    real, degraded, other_real, other_degraded = [], [], [], []
    for b in range(rollout.batch_size):
        n = int(rollout.completion_mask[b].sum())
        tokens = [teacher.tokenizer.decode([i]) for i in rollout.completion_ids[b, :n].tolist()]
        pos = reading_positions(tokens)
        assert len(pos) == 2
        rest = [j for j in range(n) if j not in pos]
        real += sig.logprobs_real[b, pos].tolist()
        degraded += sig.logprobs_degraded[b, pos].tolist()
        other_real += sig.logprobs_real[b, rest].tolist()
        other_degraded += sig.logprobs_degraded[b, rest].tolist()
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    # The teacher reads the digits (close to certain) and cannot read them once pixelated...
    print(f"digits: {mean(real):.3f} real vs {mean(degraded):.3f} pixelated; "
          f"other tokens: {mean(other_real):.4f} vs {mean(other_degraded):.4f}")
    assert mean(real) > -0.1, mean(real)
    assert mean(real) - mean(degraded) > 0.4, (mean(real), mean(degraded))  # a blind guess between 2 values: ln 2
    # ...while the rest of the chain barely depends on the image.
    assert abs(mean(other_real) - mean(other_degraded)) < 0.05
