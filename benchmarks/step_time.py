"""Per-step cost of VA-OPD over standard OPD, against one teacher forward pass, on the same rollouts.

VA-OPD's only extra work over OPD is the teacher's pass on the degraded image (the same text tokens
and M-RoPE positions as the real-image pass, only the pixels re-processed; one 2B batch with the real
pass or a second forward, see --passes) plus a few [B, T] tensor ops, so the target is

    t_va_opd - t_opd <= 1.1 x t_teacher_forward

All three are measured in one run, interleaved, on the same pre-sampled rollouts (sampling is excluded:
it is identical for both methods), each a full training step body: teacher scoring, student forward,
loss, backward. `t_teacher_forward` is one teacher pass over the rollouts (real image, log-probs).
Models, task and batch shape are the demo's (`vlm_opd.demo.recipe.FULL`: the tiny Qwen2-VL teacher and
student, 16 prompts x 4 samples x 40 tokens), with freshly initialised weights (timing does not depend
on what the weights learned). The machine this runs on is shared and noisy, so the three variants are
interleaved and medians taken; `extra_over_teacher_paired` is the median of the same ratio computed
within each round.

The last line printed is one JSON object with `t_opd`, `t_va_opd`, `t_teacher_forward` (medians, seconds),
`extra_over_teacher` = (t_va_opd - t_opd) / t_teacher_forward, and the setting.

    .venv/bin/python benchmarks/step_time.py [--prompts 16] [--k 4] [--new 40] [--repeats 41]
        [--va-kind sampled|teacher_shift]

`--va-kind teacher_shift` also times VA-OPD with the position-level VA (`va_opd.va_kind`), interleaved
with the others: it keeps the degraded pass's hidden states and adds one chunked full-vocabulary
divergence between the teacher's two distributions. Extra keys: `t_va_opd_shift`,
`shift_over_sampled` (median of the per-round ratio t_va_opd_shift / t_va_opd) and
`shift_extra_over_teacher` = (t_va_opd_shift - t_va_opd) / t_teacher_forward.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from vlm_opd.config import config_from_dict  # noqa: E402
from vlm_opd.data.degrade import pixelate  # noqa: E402
from vlm_opd.data.synthetic import generate  # noqa: E402
from vlm_opd.demo.recipe import FULL  # noqa: E402
from vlm_opd.models import build_tiny, load_model  # noqa: E402
from vlm_opd.rollout import sample  # noqa: E402
from vlm_opd.scoring import teacher_signals  # noqa: E402
from vlm_opd.train import step as step_mod  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=FULL.prompts_per_step)
    ap.add_argument("--k", type=int, default=FULL.rollout_k)
    ap.add_argument("--new", type=int, default=FULL.max_new_tokens, help="max new tokens per rollout")
    ap.add_argument("--repeats", type=int, default=41)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--passes", choices=("auto", "batched", "separate"), default="auto",
                    help="teacher's real and degraded passes as one 2B batch, two forwards, or what the trainer "
                         "does by default (va_opd.batch_real_and_degraded: null; two forwards on CPU)")
    ap.add_argument("--va-kind", choices=("sampled", "teacher_shift"), default="sampled",
                    help="va_opd.va_kind of the VA-OPD variant timed")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    tmp = tempfile.mkdtemp(prefix="vlm-opd-steptime-")
    # The demo's teacher and student sizes, sharing the demo's tokenizer.
    build_tiny(FULL.family, f"{tmp}/teacher", **FULL.build_kwargs("teacher"))
    build_tiny(FULL.family, f"{tmp}/student", **FULL.build_kwargs("student"))
    teacher = load_model(f"{tmp}/teacher")
    teacher.model.eval().requires_grad_(False)
    student = load_model(f"{tmp}/student")
    student.model.train()
    examples = generate(args.prompts, 0, split="train", **FULL.task)
    rollout = sample(student, examples, k=args.k, max_new_tokens=args.new, temperature=1.0, seed=0)
    # Rollouts of fixed length so every repeat does the same work.
    rollout.completion_mask[:] = 1

    batched = {"auto": None, "batched": True, "separate": False}[args.passes]

    def ctx_for(method: str, va_kind: str = "sampled"):
        cfg = config_from_dict({"method": method, "student": {"path": "s"}, "teacher": {"path": "t"},
                                "data": {"train": "d"}, "rollout": {"k": args.k},
                                "va_opd": {"batch_real_and_degraded": batched, "va_kind": va_kind}})
        return step_mod.StepContext(cfg=cfg, student=student, student_for_generation=lambda: student,
                                    teacher=teacher, degrade=pixelate)

    step_mod.sample_rollouts = lambda ctx, ex, seed, k=None: rollout  # same rollouts for every variant
    ctxs = {m: ctx_for(m) for m in ("opd", "va_opd")}
    ctxs["va_opd_shift"] = ctx_for("va_opd", "teacher_shift")

    def run_step(method):
        loss, _ = step_mod.distill_loss(ctxs[method], examples, 0)
        loss.backward()
        student.model.zero_grad(set_to_none=True)

    def teacher_forward():
        with torch.no_grad():
            teacher_signals(teacher, rollout, degrade=None, need_hidden=False)

    variants = [("opd", lambda: run_step("opd")), ("va_opd", lambda: run_step("va_opd")), ("teacher", teacher_forward)]
    if args.va_kind == "teacher_shift":
        variants.append(("va_opd_shift", lambda: run_step("va_opd_shift")))
    timings = {name: [] for name, _ in variants}
    for name, fn in variants:
        fn()  # warm-up
    for _ in range(args.repeats):
        for name, fn in variants:
            t0 = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in timings.items()}
    paired = [(va - opd) / t for va, opd, t in zip(timings["va_opd"], timings["opd"], timings["teacher"])]
    result = {
        "t_opd": med["opd"], "t_va_opd": med["va_opd"], "t_teacher_forward": med["teacher"],
        "extra_over_teacher": (med["va_opd"] - med["opd"]) / med["teacher"],
        "extra_over_teacher_paired": statistics.median(paired),
        "target_met": (med["va_opd"] - med["opd"]) <= 1.1 * med["teacher"],
        "rows": args.prompts * args.k, "tokens_per_row": int(rollout.completion_mask.shape[1]),
        "threads": args.threads, "repeats": args.repeats, "passes": args.passes,
    }
    if args.va_kind == "teacher_shift":
        result["t_va_opd_shift"] = med["va_opd_shift"]
        result["shift_over_sampled"] = statistics.median(
            s_ / v for s_, v in zip(timings["va_opd_shift"], timings["va_opd"]))
        result["shift_extra_over_teacher"] = (med["va_opd_shift"] - med["va_opd"]) / med["teacher"]
    print(json.dumps(result), file=sys.stdout)


if __name__ == "__main__":
    main()
