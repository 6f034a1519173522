"""GPU acceptance run: paper-shape VA-OPD and OPD steps on Qwen3-VL-8B -> Qwen3-VL-2B, one command, one JSON.

    python benchmarks/gpu_acceptance.py                          # random-init full-depth models from the real configs
    python benchmarks/gpu_acceptance.py --student /ckpt/Qwen3-VL-2B-Instruct --teacher /ckpt/Qwen3-VL-8B-Instruct
    python benchmarks/gpu_acceptance.py --device cpu --tiny      # same code path on tiny models (for tests)
    python benchmarks/gpu_acceptance.py --parallel fsdp          # the same runs under FSDP2 (one GPU: a group of one)

What it runs (everything through the library's public API, so it measures whatever the trainer does):
1. Models: `--student/--teacher` checkpoint directories, or full-depth random models built from the real
   configs (`vlm_opd.models.real_width`, presets qwen3_vl_2b / qwen3_vl_8b) in bfloat16 on the GPU and
   saved to a scratch directory (nothing is downloaded). `--tiny`: the tiny Qwen3-VL builders instead.
2. Three short `vlm_opd.train.train` runs on the same prompts (448 x 448 images, K=4, `--new` tokens):
   VA-OPD and OPD with the student stored in bfloat16 (`dtype: bfloat16`, `mixed_precision: bf16`, what the
   paper configs' `auto` resolves to on a GPU), and a float32 reference (VA-OPD, `dtype: float32`, `mixed_precision: "no"`).
3. Weights moved: for a slice of the student (the attention and MLP matrices of the first and last text
   layers) the bf16 run's update `d_bf16 = W_final - W_0` is compared with the float32 reference's update
   rounded to the same bf16 grid, `d_ref`: `update_norm_ratio_vs_fp32 = ||d_bf16|| / ||d_ref||`. Both
   runs start from the same bf16-grid weights and store bf16, so with float32 master weights their
   updates have the same size and the ratio is near 1; if updates below half a bf16 ulp round away
   at every step, most of `d_bf16` is 0 and the ratio falls well below 1. (Element-wise agreement is
   not expected: the two runs sample different rollouts once their logits differ by bf16 noise, and
   Adam's first steps are sign-like, so individual weights move in different directions.)
   `moved_frac` is the fraction of slice weights whose stored value changed. `weights_moved` requires
   the norm ratio above 0.8 and `moved_frac` at least 0.8 x the reference's. Measured on the CPU tiny
   path (2 steps, lr 1e-5): with float32 master weights 0.99 and 0.25 vs 0.25; with plain AdamW on bf16
   parameters (the trainer before master weights) 0.71 and 0.15 vs 0.25. One step cannot tell the two
   apart (a single update is rounded once either way): use --steps >= 2.
4. Step costs on one pre-sampled rollout (step functions, no optimizer): rollout tokens/s of the sampler,
   the OPD and VA-OPD step bodies (teacher scoring, student forward, loss, backward) and one teacher
   forward; `va_opd_extra_over_teacher_forward = (t_va_opd - t_opd) / t_teacher_forward` (target <= 1.1).
5. Loss memory at real width: peak extra memory of the chunked reverse KL vs full `[N, V]` logits for
   N = K x new tokens rows, the student's and teacher's hidden sizes and the student's vocabulary.

The last line printed is one JSON object (keys listed in `JSON_KEYS`). Without a GPU it refuses in one
line with exit code 2, unless `--device cpu --tiny` is given.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

JSON_KEYS = (
    "device", "tiny", "parallel", "student", "teacher", "k", "new_tokens", "prompts", "steps", "lr",
    "weights_moved", "moved_frac", "moved_frac_fp32_ref", "update_norm_ratio_vs_fp32", "slice_params",
    "peak_memory_gb", "peak_memory_gb_by_run", "step_time_s", "rollout_tokens_per_s",
    "t_opd_step_s", "t_va_opd_step_s", "t_teacher_forward_s", "va_opd_extra_over_teacher_forward",
    "loss_memory_ratio", "loss_memory", "wall_s",
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (only with --tiny)")
    p.add_argument("--tiny", action="store_true", help="tiny Qwen3-VL stand-ins instead of full-depth 2B/8B")
    p.add_argument("--student", help="student checkpoint directory (default: random Qwen3-VL-2B from its config)")
    p.add_argument("--teacher", help="teacher checkpoint directory (default: random Qwen3-VL-8B from its config)")
    p.add_argument("--student-preset", default="qwen3_vl_2b", help="real-width preset of the random student")
    p.add_argument("--teacher-preset", default="qwen3_vl_8b",
                   help="real-width preset of the random teacher (qwen3_vl_2b fits smaller GPUs)")
    p.add_argument("--k", type=int, default=4, help="rollouts per prompt (paper: 4)")
    p.add_argument("--new", type=int, default=256, help="max new tokens per rollout (paper: 2048)")
    p.add_argument("--prompts", type=int, default=2, help="prompts per training step")
    p.add_argument("--steps", type=int, default=3, help="optimizer steps per training run")
    p.add_argument("--lr", type=float, default=1e-5,
                   help="learning rate of the three runs (the paper configs use 1e-6; 1e-5 moves more weights "
                        "across bf16 rounding boundaries in 3 steps, so the comparison has more signal)")
    p.add_argument("--image-size", type=int, default=448, help="side of the synthetic square images")
    p.add_argument("--repeats", type=int, default=3, help="timing repeats of each step body (median)")
    p.add_argument("--work-dir", help="scratch directory (default: a temporary one, removed at the end)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--parallel", choices=("ddp", "fsdp"), default="ddp",
                   help="parallel.strategy of the training runs (fsdp: sharded, bf16 compute via FSDP's policy)")
    args = p.parse_args(argv)
    for name in ("k", "new", "prompts", "steps", "repeats", "image_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.lr <= 0:
        p.error(f"--lr must be > 0, got {args.lr}")
    return args


def refusal(args: argparse.Namespace, cuda_available: bool) -> str | None:
    """One-line reason this machine cannot run the requested configuration, or None."""
    if args.device.startswith("cpu"):
        if not args.tiny:
            return ("gpu_acceptance: --device cpu runs only with --tiny (full-depth Qwen3-VL-2B/8B on a CPU "
                    "measures nothing useful); add --tiny, or run on a GPU")
        return None
    if not args.device.startswith("cuda"):
        return f"gpu_acceptance: --device {args.device!r} is not supported; use cuda, cuda:N, or cpu with --tiny"
    if not cuda_available:
        return ("gpu_acceptance: no CUDA GPU found; this script measures a GPU run "
                "(use --device cpu --tiny to run the same code path on tiny stand-in models)")
    return None


# ------------------------------------------------------------------------------------------------ helpers


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device):
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device) -> float:
    import resource

    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # process high-water mark (KiB -> GiB)


def _free(device):
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def write_prompts(out: Path, n: int, size: int, seed: int) -> Path:
    """`n` prompts with a `size` x `size` image of a two-digit number each, as a JSONL the loaders read."""
    import random

    from PIL import Image, ImageDraw, ImageFont

    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        value = rng.randint(10, 99)
        img = Image.new("RGB", (size, size), (rng.randint(200, 255), rng.randint(200, 255), rng.randint(200, 255)))
        ImageDraw.Draw(img).text((size // 3, size // 3), str(value), fill=(0, 0, 0),
                                 font=ImageFont.load_default(size=size // 4))
        img.save(out / f"img{i}.png")
        rows.append({"id": f"acc-{i}", "problem": "<image>What is the number shown in the image? "
                     "Think step by step, then put the answer in \\boxed{}.", "images": [f"img{i}.png"],
                     "answer": str(value)})
    path = out / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def build_models(args, work: Path, device) -> tuple[str, str]:
    """Checkpoint directories of the student and teacher (given, or built now from configs)."""
    import torch

    if args.tiny:
        from vlm_opd.models import build_tiny

        s, t = work / "student", work / "teacher"
        lm = build_tiny("qwen3_vl", s, seed=0, eos_boost=3.0, max_image_tokens=64)
        # Stored in bfloat16 like the real checkpoints, so the bf16 run and the float32 reference start
        # from the same bf16-grid weights (an off-grid float32 start crosses rounding boundaries sooner).
        lm.model.to(torch.bfloat16).save_pretrained(s)
        build_tiny("qwen3_vl", t, seed=0, text_hidden=96, text_layers=2, max_image_tokens=64)
        return str(s), str(t)
    from vlm_opd.models.real_width import build_real_width

    out = []
    for path, preset, seed in ((args.student, args.student_preset, 0), (args.teacher, args.teacher_preset, 1)):
        if path:
            out.append(path)
            continue
        d = work / preset
        lm = build_real_width(preset, d, text_layers=None, vision_layers=None, seed=seed, dtype="bfloat16",
                              device=device)
        del lm
        _free(device)
        out.append(str(d))
    return out[0], out[1]


def train_config(args, method: str, student: str, teacher: str, data: Path, out: Path, reference: bool):
    from vlm_opd.config import config_from_dict

    return config_from_dict({
        "method": method, "seed": args.seed, "output_dir": str(out), "run_name": out.name,
        "student": {"path": student, "dtype": "float32" if reference else "bfloat16",
                    "gradient_checkpointing": not args.tiny},
        "teacher": {"path": teacher, "dtype": "bfloat16"},
        "data": {"train": str(data)},
        "rollout": {"k": args.k, "max_new_tokens": args.new, "temperature": 1.0, "top_p": 1.0},
        "optim": {"lr": args.lr, "weight_decay": 0.0, "schedule": "constant", "warmup_steps": 0,
                  "max_grad_norm": 1.0},
        "loss": {"divergence": "reverse_kl", "chunk_size": 256},
        "prompts_per_step": args.prompts, "grad_accum": 1, "steps": args.steps,
        # "bf16" is what the paper configs' "auto" resolves to on a GPU; spelled out so the CPU --tiny path
        # runs the same autocast (and the accelerate state reset between runs below is exercised).
        "mixed_precision": "no" if reference else "bf16",
        "parallel": {"strategy": args.parallel},
    })


def _safetensors_index(d: Path) -> dict[str, Path]:
    idx = d / "model.safetensors.index.json"
    if idx.exists():
        return {k: d / v for k, v in json.loads(idx.read_text())["weight_map"].items()}
    from safetensors import safe_open

    f = d / "model.safetensors"
    with safe_open(str(f), "pt") as h:
        return {k: f for k in h.keys()}


def read_tensors(d: Path, names: list[str]) -> dict:
    from safetensors import safe_open

    where = _safetensors_index(d)
    out = {}
    for name in names:
        with safe_open(str(where[name]), "pt") as h:
            out[name] = h.get_tensor(name)
    return out


def slice_names(d: Path) -> list[str]:
    """Attention and MLP matrices of the first and last text layers."""
    import re

    keys = list(_safetensors_index(d))
    layer_re = re.compile(r"language_model\.layers\.(\d+)\.(self_attn|mlp)\.[a-z_]+\.weight$")
    layers = sorted({int(m.group(1)) for k in keys if (m := layer_re.search(k))})
    if not layers:
        raise SystemExit(f"gpu_acceptance: no text-layer weights found in {d}")
    keep = {layers[0], layers[-1]}
    return sorted(k for k in keys if (m := layer_re.search(k)) and int(m.group(1)) in keep)


def compare_updates(init_dir: Path, bf16_dir: Path, ref_dir: Path) -> dict:
    """`moved_frac`, `moved_frac_fp32_ref`, `update_norm_ratio_vs_fp32` on the slice (see module docstring)."""
    import torch

    names = slice_names(bf16_dir)
    w0, wb, wr = read_tensors(init_dir, names), read_tensors(bf16_dir, names), read_tensors(ref_dir, names)
    moved = total = moved_ref = 0
    norm_b = norm_r = 0.0
    for n in names:
        base = w0[n].to(torch.bfloat16).double()
        d_b = wb[n].to(torch.bfloat16).double() - base
        d_r = wr[n].to(torch.bfloat16).double() - base  # the exact update, rounded to the grid the run stores
        moved += int((d_b != 0).sum())
        moved_ref += int((d_r != 0).sum())
        total += d_b.numel()
        norm_b += float(d_b.pow(2).sum())
        norm_r += float(d_r.pow(2).sum())
    ratio = (norm_b / norm_r) ** 0.5 if norm_r > 0 else float("nan")
    return {"moved_frac": moved / total, "moved_frac_fp32_ref": moved_ref / total,
            "update_norm_ratio_vs_fp32": ratio, "slice_params": total}


def _median_time(fn, device, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def step_costs(args, student_dir: str, teacher_dir: str, data: Path, device) -> dict:
    """Rollout tokens/s and the OPD / VA-OPD step bodies vs one teacher forward, on one rollout."""
    import torch

    from vlm_opd.config import config_from_dict
    from vlm_opd.data import load_examples
    from vlm_opd.data.degrade import pixelate
    from vlm_opd.models import load_model
    from vlm_opd.rollout import sample
    from vlm_opd.scoring import teacher_signals
    from vlm_opd.train import step as step_mod

    examples = load_examples(str(data))[: args.prompts]
    student = load_model(student_dir, dtype="bfloat16", device=device)
    teacher = load_model(teacher_dir, dtype="bfloat16", device=device)
    _sync(device)
    t = time.perf_counter()
    rollout = sample(student, examples, k=args.k, max_new_tokens=args.new, seed=args.seed)
    _sync(device)
    gen_s = time.perf_counter() - t
    tokens = float(rollout.completion_mask.sum())

    student.model.train()
    if not args.tiny:
        student.model.gradient_checkpointing_enable()
    orig = step_mod.sample_rollouts
    step_mod.sample_rollouts = lambda ctx, ex, seed, k=None: rollout
    try:
        def body(method):
            cfg = config_from_dict({"method": method, "student": {"path": student_dir}, "teacher": {"path": teacher_dir},
                                    "data": {"train": str(data)}, "rollout": {"k": args.k, "max_new_tokens": args.new},
                                    "loss": {"chunk_size": 256}})
            ctx = step_mod.StepContext(cfg=cfg, student=student, student_for_generation=lambda: student,
                                       teacher=teacher, degrade=pixelate)

            def run():
                loss, _ = step_mod.distill_loss(ctx, examples, 0)
                loss.backward()
                student.model.zero_grad(set_to_none=True)
            return run

        opd, va = body("opd"), body("va_opd")
        opd(), va()  # warm-up (kernels, allocator)
        t_opd, t_va = [], []
        for _ in range(args.repeats):  # interleaved, like benchmarks/step_time.py
            t_opd.append(_median_time(opd, device, 1))
            t_va.append(_median_time(va, device, 1))

        def teacher_forward():
            with torch.no_grad():
                teacher_signals(teacher, rollout, degrade=None, need_hidden=True, chunk_size=256)
        teacher_forward()
        t_teacher = _median_time(teacher_forward, device, args.repeats)
    finally:
        step_mod.sample_rollouts = orig
    med_opd, med_va = statistics.median(t_opd), statistics.median(t_va)
    out = {"rollout_tokens_per_s": tokens / gen_s, "t_opd_step_s": med_opd, "t_va_opd_step_s": med_va,
           "t_teacher_forward_s": t_teacher, "va_opd_extra_over_teacher_forward": (med_va - med_opd) / t_teacher,
           "_dims": (student.vocab_size, student.hidden_size, teacher.hidden_size)}
    del student, teacher, rollout
    _free(device)
    return out


def loss_memory(n: int, v: int, hs: int, ht: int, device) -> dict:
    """Peak extra memory of chunked vs naive reverse KL (forward + backward into hidden and lm_head)."""
    import torch

    from vlm_opd.algorithms import chunked_divergence, reverse_kl
    from vlm_opd.memprobe import cpu_peak_allocated

    g = torch.Generator(device=device).manual_seed(0)
    h_s = torch.randn(n, hs, device=device, generator=g).requires_grad_()
    w_s = (torch.randn(v, hs, device=device, generator=g) * (2.0 / hs**0.5)).requires_grad_()
    h_t = torch.randn(n, ht, device=device, generator=g)
    w_t = torch.randn(v, ht, device=device, generator=g) * (2.0 / ht**0.5)
    weights = torch.rand(n, device=device, generator=g) + 0.5

    def naive():
        (reverse_kl(h_s @ w_s.T, h_t @ w_t.T) * weights).sum().backward()

    def chunked():
        (chunked_divergence(h_s, w_s, h_t, w_t, chunk_size=256) * weights).sum().backward()

    peaks = {}
    for name, fn in (("naive", naive), ("chunked", chunked)):
        h_s.grad = w_s.grad = None
        _free(device)
        if device.type == "cuda":
            _sync(device)
            before = torch.cuda.memory_allocated(device)
            _reset_peak(device)
            fn()
            _sync(device)
            peaks[name] = torch.cuda.max_memory_allocated(device) - before
        else:
            peaks[name] = cpu_peak_allocated(fn).peak_bytes
    del h_s, w_s, h_t, w_t
    _free(device)
    return {"ratio": peaks["chunked"] / peaks["naive"], "naive_mib": peaks["naive"] / 2**20,
            "chunked_mib": peaks["chunked"] / 2**20, "n": n, "v": v, "hs": hs, "ht": ht}


# ------------------------------------------------------------------------------------------------ main


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    reason = refusal(args, torch.cuda.is_available())
    if reason:
        print(reason, file=sys.stderr)
        return 2
    from vlm_opd.train.trainer import train

    device = torch.device(args.device)
    start = time.time()
    tmp = None
    if args.work_dir:
        work = Path(args.work_dir)
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="vlm_opd_gpu_acceptance_")
        work = Path(tmp.name)
    try:
        student_dir, teacher_dir = build_models(args, work, device)
        data = write_prompts(work / "data", max(args.prompts, 2), args.image_size, args.seed)

        runs = {"va_opd": ("va_opd", False), "opd": ("opd", False), "va_opd_fp32_ref": ("va_opd", True)}
        peaks, step_time, finals = {}, {}, {}
        for name, (method, ref) in runs.items():
            # accelerate keeps one process-wide state and refuses a second Accelerator with another
            # mixed_precision (the float32 reference): start each run from a clean state.
            from accelerate.state import AcceleratorState

            AcceleratorState._reset_state(True)
            _free(device)
            _reset_peak(device)
            res = train(train_config(args, method, student_dir, teacher_dir, data, work / "runs" / name, ref),
                        progress=False)
            peaks[name] = _peak_gb(device)
            records = [json.loads(line) for line in Path(res.metrics_path).read_text().splitlines() if line.strip()]
            times = [r["step_time_s"] for r in records if "step_time_s" in r]
            step_time[name] = statistics.median(times[1:] or times)  # the first step pays warm-up
            finals[name] = Path(res.final_dir)
            for child in Path(res.final_dir).parent.iterdir():  # resumable state (optimizer, master weights):
                if child.is_dir() and child != finals[name]:     # tens of GB at this size, not needed here
                    shutil.rmtree(child, ignore_errors=True)
        moved = compare_updates(Path(student_dir), finals["va_opd"], finals["va_opd_fp32_ref"])

        costs = step_costs(args, student_dir, teacher_dir, data, device)
        v, hs, ht = costs.pop("_dims")
        mem = loss_memory(args.k * args.new, v, hs, ht, device)
    finally:
        if tmp is not None:
            tmp.cleanup()

    summary = {
        "device": str(device), "tiny": args.tiny, "parallel": args.parallel,
        "student": "tiny:qwen3_vl" if args.tiny else args.student or f"random:{args.student_preset}",
        "teacher": "tiny:qwen3_vl" if args.tiny else args.teacher or f"random:{args.teacher_preset}", "k": args.k, "new_tokens": args.new,
        "prompts": args.prompts, "steps": args.steps, "lr": args.lr,
        # Moved, and as much as the float32 reference (updates rounding away move fewer weights, less).
        "weights_moved": bool(moved["moved_frac"] > 0 and moved["update_norm_ratio_vs_fp32"] > 0.8
                              and moved["moved_frac"] >= 0.8 * moved["moved_frac_fp32_ref"]),
        **moved,
        "peak_memory_gb": max(peaks.values()), "peak_memory_gb_by_run": peaks, "step_time_s": step_time,
        **costs,
        "loss_memory_ratio": mem["ratio"], "loss_memory": mem,
        "wall_s": time.time() - start,
    }
    assert set(summary) == set(JSON_KEYS), set(summary) ^ set(JSON_KEYS)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
