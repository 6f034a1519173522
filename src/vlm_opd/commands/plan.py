"""`vlm-opd plan CONFIG [--gpus N] [--gpu-mem GiB] [key=value ...]`: per-GPU memory under DDP and FSDP."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan", help="what fits where: per-GPU memory of a training config under DDP and FSDP (no weights loaded)",
        description="Estimate per-GPU memory of `vlm-opd train CONFIG` from the models' config.json (built on the "
                    "meta device: nothing is downloaded or loaded) and the config's batch and lengths, for DDP "
                    "and FSDP (parallel.strategy: ddp | fsdp). Sizes in GiB. "
                    "Accounting: trainable student parameters 16 bytes (fp32 master weights 4, fp32 gradients 4, "
                    "AdamW m and v 4 + 4); frozen teacher / reference in their stored dtype (bf16: 2); "
                    "activations estimated per micro-batch (see vlm_opd.train.plan).",
    )
    p.add_argument("config", help="YAML config file (the same one `vlm-opd train` takes; base: and stages: work)")
    p.add_argument("overrides", nargs="*", help="key=value overrides (dotted keys), as for train")
    p.add_argument("--gpus", type=int, default=1, help="processes / GPUs (data parallel), default 1")
    p.add_argument("--gpu-mem", type=float, default=80.0, help="memory per GPU in GiB (default 80)")
    p.add_argument("--headroom", type=float, default=0.1,
                   help="fraction of --gpu-mem kept free for the CUDA context, NCCL and fragmentation (default 0.1)")
    p.add_argument("--text-tokens", type=int, default=512,
                   help="text tokens of the longest prompt (template + system + question; default 512), used "
                        "unless data.max_prompt_tokens is set")
    p.add_argument("--image-size", default=None, metavar="WxH",
                   help="largest image (e.g. 1024x768); default: the processor's max_pixels (worst case)")
    p.add_argument("--images-per-prompt", type=int, default=1, help="images in the longest prompt (default 1)")
    p.add_argument("--offload-teacher", action="store_true", help="FSDP column: frozen teacher offloaded to the CPU "
                   "(also on when the config sets parallel.teacher_offload)")
    p.add_argument("--fp32", action="store_true", help="no bf16 autocast (mixed_precision=no); default: bf16, "
                                                       "what mixed_precision=auto picks on a GPU")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(func=run)


def _size(text: str | None) -> tuple[int, int] | None:
    from vlm_opd.errors import ConfigError

    if text is None:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--image-size {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 1024x768") from None
    if w < 1 or h < 1:
        raise ConfigError(f"--image-size {text!r}: sides must be >= 1")
    return w, h


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def plan_config(cfg, *, gpus: int, gpu_mem: float, headroom: float, text_tokens: int, image_size, images_per_prompt: int,
                offload_teacher: bool, bf16: bool, shapes: dict | None = None) -> list[dict]:
    """One result dict per stage of `cfg` (models, workload, DDP and FSDP plans)."""
    from dataclasses import asdict

    from vlm_opd.config import stage_configs
    from vlm_opd.errors import ConfigError
    from vlm_opd.train import plan as P

    shapes = {} if shapes is None else shapes
    if gpus < 1:
        raise ConfigError(f"--gpus: must be >= 1, got {gpus}")
    if not 0 <= headroom < 1:
        raise ConfigError(f"--headroom: must be in [0, 1), got {headroom}")

    def shape(mcfg, role: str, previous):
        key = (mcfg.path, mcfg.kind, mcfg.dtype)
        if key not in shapes:
            from pathlib import Path

            if previous is not None and Path(mcfg.path).name == "final" and not Path(mcfg.path).exists():
                shapes[key] = previous  # a later stage starts from the previous stage's (not yet written) final/
            else:
                try:
                    shapes[key] = P.model_shape(mcfg.path, kind=mcfg.kind, dtype=mcfg.dtype)
                except ConfigError as err:
                    raise ConfigError(f"{role}.path: {err}") from None
        return shapes[key]

    results, previous = [], None
    for stage in stage_configs(cfg):
        student = shape(stage.student, "student", previous)
        previous = student
        teacher = shape(stage.teacher, "teacher", None) if P.needs_teacher(stage) else None
        wl = P.workload(stage, gpus, student, teacher, text_tokens=text_tokens, images_per_prompt=images_per_prompt,
                        image_size=image_size)
        offload = offload_teacher or stage.parallel.teacher_offload
        plans = [P.plan_memory(stage, student, teacher, wl, gpus, par, bf16=bf16, offload_teacher=offload,
                               gpu_mem_gib=gpu_mem) for par in ("ddp", "fsdp")]
        results.append({
            "method": stage.method, "run_name": stage.run_name,
            "models": {"student": P.shape_summary(student), **({"teacher": P.shape_summary(teacher)} if teacher else {})},
            "workload": asdict(wl), "plans": plans,
            "summary": P.report(plans, gpu_mem_gib=gpu_mem, headroom=headroom),
        })
    return results


def run(args: argparse.Namespace) -> int:
    from vlm_opd.config import load_config
    from vlm_opd.train.plan import GIB

    cfg = load_config(args.config, list(args.overrides))
    bf16 = not args.fp32
    results = plan_config(cfg, gpus=args.gpus, gpu_mem=args.gpu_mem, headroom=args.headroom,
                          text_tokens=args.text_tokens, image_size=_size(args.image_size),
                          images_per_prompt=args.images_per_prompt, offload_teacher=args.offload_teacher, bf16=bf16)
    settings = {"config": args.config, "overrides": list(args.overrides), "gpus": args.gpus, "gpu_mem_gib": args.gpu_mem,
                "headroom": args.headroom, "compute": "bf16 autocast" if bf16 else "fp32",
                "text_tokens": args.text_tokens, "image_size": args.image_size or "processor max_pixels",
                "images_per_prompt": args.images_per_prompt, "offload_teacher": args.offload_teacher,
                "units": "GiB (2**30 bytes)"}
    if args.json:
        print(json.dumps({"settings": settings,
                          "stages": [{k: v for k, v in r.items() if k != "plans"} for r in results]}))
        return 0
    budget = args.gpu_mem * (1 - args.headroom)
    # One unit for the whole table: GiB, or MiB when every peak is under 1 GiB (tiny models).
    small = max(p.peak_bytes for r in results for p in r["plans"]) < GIB
    unit, div = ("MiB", 2**20) if small else ("GiB", GIB)
    print(f"{args.config}: {args.gpus} GPU(s) x {args.gpu_mem:g} GiB, usable {budget:.1f} GiB "
          f"(headroom {args.headroom:g}); compute {settings['compute']}")
    for r in results:
        wl = r["workload"]
        print(f"\n== method {r['method']}" + (f" ({r['run_name']})" if r["run_name"] else ""))
        for role, m in r["models"].items():
            print(f"  {role:8s} {m['name']}: {_count(m['params'])} params, {m['dtype_bytes']} B/param stored "
                  f"[{m['source']}]")
        print(f"  per process and micro-batch: {wl['rows']} rows ({wl['prompts']} prompts), prompt {wl['prompt_tokens']} "
              f"tokens ({wl['images_per_prompt']} x {wl['image_tokens']} image tokens), completion "
              f"{wl['completion_tokens']}" + (f", teacher rows {wl['teacher_rows']}" if wl["teacher_rows"] else ""))
        ddp, fsdp = r["plans"]
        print(f"  {unit + ' per GPU':56s} {'DDP':>9s} {'FSDP':>9s}")
        keys = list(dict.fromkeys([*ddp.static, *fsdp.static]))
        for key in keys:
            print(f"  {key:56s} {ddp.static.get(key, 0) / div:9.2f} {fsdp.static.get(key, 0) / div:9.2f}")
        print(f"  {'static total':56s} {ddp.static_bytes / div:9.2f} {fsdp.static_bytes / div:9.2f}")
        for phase in ddp.phases:
            a, b = ddp.phases[phase], fsdp.phases[phase]
            print(f"  + {phase} (working set)")
            for key in dict.fromkeys([*a, *b]):
                print(f"    {key:54s} {a.get(key, 0) / div:9.2f} {b.get(key, 0) / div:9.2f}")
        s = r["summary"]
        print(f"  {'peak (static + largest phase)':56s} {ddp.peak_bytes / div:9.2f} {fsdp.peak_bytes / div:9.2f}")
        verdict = {k: ("fits" if s[k]["fits"] else "does NOT fit") for k in ("ddp", "fsdp")}
        print(f"  in {budget:.1f} GiB: DDP {verdict['ddp']} (largest phase: {s['ddp']['peak_phase']}); "
              f"FSDP {verdict['fsdp']} (largest phase: {s['fsdp']['peak_phase']})")
    return 0
