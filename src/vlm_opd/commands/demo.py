"""`vlm-opd demo`: train a tiny teacher, cold-start a smaller student, compare OPD and VA-OPD, write a report."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the embedded demo: OPD vs VA-OPD on a tiny from-scratch VLM pair (about 10 min on 2 CPU cores)",
        description=(
            "Train a tiny Qwen2-VL teacher from scratch to read printed numbers (cached after the first run), "
            "cold-start a smaller student, run standard OPD and VA-OPD from it for the same number of steps "
            "(two 1-thread runs side by side), and write report.md, metrics.json, trajectory.png, va_hist.png and "
            "heatmap.html into --out. The teacher cache is VLM_OPD_CACHE, else ~/.cache/vlm-opd."
        ),
    )
    p.add_argument("--out", default="demo-report", help="report directory (default: demo-report)")
    p.add_argument("--quick", action="store_true", help="tiny step counts: checks the pipeline in about a minute "
                   "(the numbers mean nothing)")
    p.add_argument("--seed", type=int, default=0, help="seed of the student's cold start, distillation and evaluation")
    p.add_argument("--seeds", default=None, help="comma-separated seeds, e.g. 0,1,2: one full demo per seed in "
                   "--out/seed-N (teacher trained once and shared), plus a summary report with per-method means, "
                   "95%% t-intervals and paired differences to OPD (overrides --seed)")
    p.add_argument("--grpo", action="store_true", help="also run GRPO from the same student for the same steps")
    p.add_argument("--setting", default=None, choices=["default", "dilution", "shortcut"],
                   help="the task setting (the study of docs/va_opd_study.md): default (the demo's task), dilution "
                   "(3 image-independent filler sentences, 60 new tokens), shortcut (the question states a hint that "
                   "is the answer with probability 0.6 in training; accuracy reported on the held-out split where "
                   "it is uninformative and on the main split where it holds). Each setting caches its own teacher")
    p.add_argument("--methods", default=None, help="comma-separated distillation methods, OPD included: opd, va_opd "
                   "(the paper), va_opd_shift (VA-OPD with va_kind=teacher_shift, high_group=positive, "
                   "va_floor=0.01), va_opd_positive (high_group=positive, va_floor=0.01); default opd,va_opd. "
                   "With --setting or --methods the analysis also measures each method's objective share on the "
                   "read-off digits at the start and the end (and, on the shortcut task, the main split and a "
                   "blank-image check)")
    p.add_argument("--cache-dir", default=None, help="teacher cache root (default: VLM_OPD_CACHE or ~/.cache/vlm-opd)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vlm_opd.demo import run_demo
    from vlm_opd.demo.recipe import FULL, QUICK, parse_methods, setting_recipe

    study = args.setting is not None or args.methods is not None
    recipe = setting_recipe(QUICK if args.quick else FULL, args.setting or "default")
    methods = parse_methods(args.methods) if args.methods is not None else None
    if args.seeds is not None:
        from pathlib import Path

        from vlm_opd.demo.seeds import parse_seeds, run_demo_seeds

        seeds = parse_seeds(args.seeds)
        run_demo_seeds(args.out, seeds, quick=args.quick, with_grpo=args.grpo, cache_dir=args.cache_dir,
                       recipe=recipe, methods=methods, study=study)
        print(f"report: {Path(args.out).resolve() / 'report.md'}")
        return 0

    result = run_demo(args.out, quick=args.quick, seed=args.seed, with_grpo=args.grpo, cache_dir=args.cache_dir,
                      recipe=recipe, methods=methods, study=study)
    print(f"report: {result.report_path}")
    return 0
