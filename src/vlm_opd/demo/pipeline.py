"""`run_demo`: teacher from scratch -> cold-started student -> OPD vs VA-OPD -> report.

Phases (each a set of ordinary `vlm-opd train` runs, two at a time on 1 thread each):

1. Build a tiny Qwen2-VL teacher and a smaller student (one locally trained tokenizer). Train the
   teacher with SFT to read the printed values (>= 90% greedy exact match on held-out images) and,
   side by side, cold-start the student with a short SFT on the examples whose values are 1-5.
   The teacher is cached under `<cache>/demo-teacher-<recipe hash>` (cache: `VLM_OPD_CACHE`, else
   `$XDG_CACHE_HOME/vlm-opd`, else `~/.cache/vlm-opd`); later demos reuse it and say so.
2. From the same student and seed: standard OPD and VA-OPD for the same number of steps (and GRPO
   with `with_grpo`), each evaluating avg@k at T = 1.0 on held-out images plus the teacher-scored
   mean VA of those rollouts every `eval_every` steps.
3. Analysis and report: `report.md`, `metrics.json`, `trajectory.png` (Figure 4b), `va_hist.png`
   (Figure 2a), `heatmap.html` (Figure 6), all written atomically into `out_dir`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlm_opd.demo.recipe import FULL, METHOD_LABELS, QUICK, DemoRecipe, method_configs, method_va_params
from vlm_opd.demo.runner import Run, run_parallel
from vlm_opd.io_utils import atomic_write_dir, atomic_write_json, atomic_write_text


@dataclass
class DemoResult:
    out_dir: Path
    metrics: dict[str, Any]
    report_path: Path


def default_cache_dir() -> Path:
    """Where the trained demo teacher is cached (see the module docstring)."""
    if os.environ.get("VLM_OPD_CACHE"):
        return Path(os.environ["VLM_OPD_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vlm-opd"


def _console(console):
    if console is not None:
        return console
    from rich.console import Console

    return Console()


# ----------------------------------------------------------------------------------------------
# Models


def build_model(recipe: DemoRecipe, role: str, out_dir: Path) -> Path:
    """Build the random teacher or student with `build_tiny`, re-initialised with fan-in scaling.

    Hugging Face initialises every weight with std 0.02, far below 1/sqrt(fan_in) at these widths
    (0.09-0.18), and the image signal then reaches the digit logits so weakly that the model may sit
    on its blind plateau for 900+ steps; LeCun-scaled weights (std 1/sqrt(fan_in)) escaped it in
    every run measured (see the recipe's notes).
    """
    import torch

    from vlm_opd.models import build_tiny

    lm = build_tiny(recipe.family, out_dir, **recipe.build_kwargs(role))
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.tokenizer_seed * 1000 + (1 if role == "teacher" else 2))
        for module in lm.model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv3d)):
                module.weight.normal_(0.0, module.weight[0].numel() ** -0.5)
    lm.model.save_pretrained(out_dir)
    return out_dir


def _param_count(path: Path) -> int:
    from safetensors import safe_open

    total = 0
    for f in sorted(path.glob("*.safetensors")):
        with safe_open(str(f), "pt") as handle:
            for key in handle.keys():
                total += math.prod(handle.get_slice(key).get_shape())
    return total


def _copy_model(src: Path, dst: Path) -> Path:
    return atomic_write_dir(dst, lambda tmp: shutil.copytree(src, tmp, dirs_exist_ok=True))


# ----------------------------------------------------------------------------------------------
# Metrics


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out


def _evals(run_dir: Path) -> list[dict[str, Any]]:
    return [r for r in _read_jsonl(run_dir / "metrics.jsonl") if "eval/accuracy" in r]


def _train_lines(run_dir: Path) -> list[dict[str, Any]]:
    return [r for r in _read_jsonl(run_dir / "metrics.jsonl") if "loss" in r and "eval/accuracy" not in r]


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(float(x)) else None


def _method_summary(run_dir: Path, wall_s: float) -> dict[str, Any]:
    evals = _evals(run_dir)
    last = evals[-1]
    train = _train_lines(run_dir)

    def mean_of(key: str) -> float | None:
        vals = [r[key] for r in train if isinstance(r.get(key), (int, float))]
        return float(sum(vals) / len(vals)) if vals else None

    return {
        "accuracy": float(last["eval/accuracy"]),
        "mean_va": _finite(last.get("eval/mean_va")),
        "top10_va_share": _finite(last.get("eval/top10_va_share")),
        "best_accuracy": max(float(r["eval/accuracy"]) for r in evals),
        "steps": int(last["step"]),
        "wall_s": wall_s,
        "train_mean_kl": mean_of("kl"),
        "train_mean_reward": mean_of("reward"),
        # Speed: the first eval step at which accuracy reached each level (None: never), and the mean
        # accuracy over the evals after step 0 (area under the curve, per step).
        "steps_to_accuracy": {f"{level:.1f}": next((int(r["step"]) for r in evals if r["eval/accuracy"] >= level), None)
                              for level in (0.5, 0.7, 0.9)},
        "mean_eval_accuracy": float(sum(r["eval/accuracy"] for r in evals[1:]) / max(len(evals) - 1, 1)),
        "last_evals_accuracy": float(sum(r["eval/accuracy"] for r in evals[-4:]) / len(evals[-4:])),
        "last_evals_count": len(evals[-4:]),
        "trajectory": [{"step": int(r["step"]), "accuracy": float(r["eval/accuracy"]),
                        "mean_va": _finite(r.get("eval/mean_va"))} for r in evals],
    }


# ----------------------------------------------------------------------------------------------
# The pipeline


def run_demo(out_dir: str | os.PathLike = "demo-report", quick: bool = False, seed: int = 0, with_grpo: bool = False,
             *, cache_dir: str | os.PathLike | None = None, recipe: DemoRecipe | None = None, console=None,
             jobs: int = 2, methods: list[str] | None = None, study: bool = False) -> DemoResult:
    """Run the whole demo and write the report into `out_dir` (see the module docstring).

    Args:
        out_dir: report directory (models, runs and configs go in subdirectories of it).
        quick: tiny step counts (pipeline check in about a minute; the numbers mean nothing).
        seed: seed of the student's cold start, the distillation runs and their evaluation.
        with_grpo: also run GRPO from the same student for the same number of steps.
        cache_dir: teacher cache root (default `default_cache_dir()`).
        recipe: override the recipe (default FULL, or QUICK with `quick`).
        jobs: runs trained at once (each on one thread).
        methods: distillation methods (`recipe.DISTILL_METHODS`, OPD first; default opd, va_opd).
        study: the study's extra analysis (`vlm-opd demo --setting/--methods`): each method's objective
            share on the read-off digits also on its final student's rollouts and, on a shortcut task,
            accuracy on the main split, with a blank image, and the hint-following rate.
    """
    t_start = time.time()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight loading/saving bars would break up the demo's own bars
    recipe = recipe or (QUICK if quick else FULL)
    con = _console(console)
    out = Path(out_dir).resolve()
    models, runs_dir, config_dir = out / "models", out / "runs", out / "configs"
    out.mkdir(parents=True, exist_ok=True)
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    teacher_cache = cache_root / f"demo-teacher-{recipe.teacher_key()}"
    phases: dict[str, float] = {}

    paths = {
        "teacher_init": str(models / "teacher-init"), "student_init": str(models / "student-init"),
        "teacher": str(models / "teacher"), "student": str(models / "student-coldstart"),
        "runs_dir": str(runs_dir),
    }
    distill = list(methods or ["opd", "va_opd"])
    configs = method_configs(recipe, seed=seed, with_grpo=with_grpo, methods=distill, **paths)
    con.rule(f"[bold]vlm-opd demo[/] ({recipe.name} recipe, seed {seed})")

    # Phase 1: teacher (or cache) and the student's cold start, side by side.
    t0 = time.time()
    cached = (teacher_cache / "teacher.json").is_file() and (teacher_cache / "model").is_dir()
    with con.status("building the tiny models"):
        # The teacher's initial weights too when it is cached: configs/teacher_sft.yaml stays runnable.
        build_model(recipe, "student", Path(paths["student_init"]))
        build_model(recipe, "teacher", Path(paths["teacher_init"]))
    import yaml

    for name, cfg in configs.items():  # every run's exact config, also those the cache makes unnecessary
        atomic_write_text(config_dir / f"{name}.yaml", yaml.safe_dump(cfg, sort_keys=False))
    phase1 = [Run("student_sft", "student cold start", configs["student_sft"])]
    if cached:
        teacher_info = json.loads((teacher_cache / "teacher.json").read_text(encoding="utf-8"))
        _copy_model(teacher_cache / "model", Path(paths["teacher"]))
        con.print(f"reusing the cached teacher {teacher_cache} (greedy accuracy "
                  f"{teacher_info['accuracy']:.1%} on {teacher_info['n_eval']} held-out images)")
    else:
        con.print(f"training the teacher from scratch (cached afterwards in {teacher_cache})")
        phase1.insert(0, Run("teacher_sft", "teacher SFT", configs["teacher_sft"]))
    con.print("[bold]phase 1[/]: " + " | ".join(r.label for r in phase1))
    walls = run_parallel(phase1, config_dir, jobs=jobs, console=con)
    if not cached:
        run_dir = Path(configs["teacher_sft"]["output_dir"])
        final_eval = _evals(run_dir)[-1]
        teacher_info = {
            "accuracy": float(final_eval["eval/accuracy"]), "n_eval": recipe.n_eval, "steps": recipe.teacher_sft_steps,
            "train_wall_s": walls["teacher_sft"], "recipe": recipe.name, "key": recipe.teacher_key(),
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        }

        def fill(tmp: Path) -> None:
            shutil.copytree(run_dir / "final", tmp / "model")
            atomic_write_json(tmp / "teacher.json", teacher_info)

        atomic_write_dir(teacher_cache, fill)
        _copy_model(run_dir / "final", Path(paths["teacher"]))
    _copy_model(Path(configs["student_sft"]["output_dir"]) / "final", Path(paths["student"]))
    phases["teacher_and_cold_start_s"] = time.time() - t0
    if teacher_info["accuracy"] < recipe.teacher_target_accuracy:
        con.print(f"[yellow]warning[/]: the teacher reached only {teacher_info['accuracy']:.1%} greedy accuracy "
                  f"(target {recipe.teacher_target_accuracy:.0%}); the report says so")

    # Phase 2: distillation runs from the same student and seed.
    t0 = time.time()
    methods = distill + (["grpo"] if with_grpo else [])
    phase2 = [Run(m, METHOD_LABELS[m], configs[m]) for m in methods]
    con.print("[bold]phase 2[/]: " + " | ".join(r.label for r in phase2) +
              f" ({recipe.distill_steps} steps each, same student and seed)")
    walls.update(run_parallel(phase2, config_dir, jobs=jobs, console=con))
    phases["distillation_s"] = time.time() - t0

    # Phase 3: analysis and report.
    t0 = time.time()
    from vlm_opd.demo import report as R

    metrics = _collect_metrics(recipe, configs, methods, walls, teacher_info, cached, teacher_cache, seed, paths)
    analysis = _analysis(recipe, paths, configs, methods, seed, con, study)
    metrics["analysis"] = analysis["stats"]
    metrics["study"] = study
    for m in methods:  # GRPO's own evals have no teacher, hence no VA: take it from the analysis pass
        summary = metrics["methods"][m]
        summary["va_source"] = "training evals"
        if summary["mean_va"] is None and m in analysis["stats"]:
            summary.update(mean_va=analysis["stats"][m]["mean_va"], top10_va_share=analysis["stats"][m]["top10_va_share"],
                           va_source="analysis pass (its training evals have no teacher)")
    metrics["heatmap"] = analysis["heatmap"]
    phases["analysis_s"] = time.time() - t0
    metrics["phases"] = phases
    metrics["wall_s"] = time.time() - t_start
    R.write_outputs(out, metrics, recipe, configs, methods, analysis)
    R.print_summary(con, metrics, methods)
    return DemoResult(out_dir=out, metrics=metrics, report_path=out / "report.md")


def _collect_metrics(recipe, configs, methods, walls, teacher_info, cached, teacher_cache, seed, paths) -> dict:
    first = {m: _evals(Path(configs[m]["output_dir"]))[0] for m in methods}
    init = first["opd"]
    return {
        "recipe": recipe.name,
        "seed": seed,
        "eval": {"prompts": recipe.n_eval, "k": recipe.eval_k, "temperature": 1.0, "split": "held-out images"},
        "teacher": {
            "accuracy": teacher_info["accuracy"], "metric": "greedy exact match", "n_eval": teacher_info["n_eval"],
            "cached": cached, "cache_dir": str(teacher_cache), "train_wall_s": teacher_info["train_wall_s"],
            "steps": teacher_info["steps"], "params": _param_count(Path(paths["teacher"])),
        },
        "student_init": {
            "accuracy": float(init["eval/accuracy"]), "mean_va": _finite(init.get("eval/mean_va")),
            "top10_va_share": _finite(init.get("eval/top10_va_share")),
            "params": _param_count(Path(paths["student"])), "cold_start_wall_s": walls["student_sft"],
            **_cold_start(Path(configs["student_sft"]["output_dir"]), recipe),
            # Every method evaluates the same initial student with the same seed first: these must agree.
            "consistent_across_runs": all(abs(first[m]["eval/accuracy"] - init["eval/accuracy"]) < 1e-9 for m in methods),
        },
        "methods": {m: _method_summary(Path(configs[m]["output_dir"]), walls[m]) for m in methods},
    }


def _cold_start(run_dir: Path, recipe: DemoRecipe) -> dict[str, Any]:
    """Where the student's cold start stopped and its last greedy check."""
    state = json.loads((run_dir / "trainer_state.json").read_text(encoding="utf-8"))
    checks = _evals(run_dir)
    return {"cold_start_steps": int(state["step"]), "cold_start_stopped_early": int(state["step"]) < recipe.student_max_steps,
            "cold_start_greedy_accuracy": float(checks[-1]["eval/accuracy"]) if checks else None,
            "cold_start_check_prompts": recipe.student_check_prompts}


def _analysis(recipe: DemoRecipe, paths, configs, methods, seed: int, con, study: bool = False) -> dict[str, Any]:
    """Rollouts of the cold-start student and every distilled student on the same held-out prompts."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))  # the training runs are done: both cores
    try:
        return _analysis_body(recipe, paths, configs, methods, seed, con, study)
    finally:
        torch.set_num_threads(threads)


def _analysis_body(recipe: DemoRecipe, paths, configs, methods, seed: int, con, study: bool = False) -> dict[str, Any]:
    from vlm_opd.analysis.stats import va_summary
    from vlm_opd.data.degrade import get_degradation
    from vlm_opd.data.synthetic import generate
    from vlm_opd.demo.analysis import answer_stats, heatmap_panels, hint_stats, reading_stats, score_model
    from vlm_opd.models import load_model

    examples = generate(recipe.analysis_prompts, seed, split="eval", **recipe.task)
    teacher = load_model(paths["teacher"])
    degrade = get_degradation("pixelate", ratio=0.1)
    models = [("teacher", "Teacher", paths["teacher"]), ("student_init", "Cold-start student", paths["student"])]
    models += [(m, f"{METHOD_LABELS[m]} student", str(Path(configs[m]["output_dir"]) / "final")) for m in methods]
    # Loss specs of the methods with a per-token KL objective (OPD, VA-OPD and its variants).
    specs = {m: spec for m in methods if (spec := method_va_params(configs[m])) is not None}
    shortcut = float(recipe.task.get("shortcut", 0) or 0)
    if study and shortcut > 0:
        # The main split: the same held-out images and values as the training evals (same seed and
        # indices), with the hint holding as often as in training; and both splits with a blank image.
        main_examples = generate(recipe.n_eval, seed, split="eval", **{**recipe.task, "shortcut_eval": shortcut})
        blank = get_degradation("blank")
        blind_main = [_with_images(ex, blank) for ex in main_examples[:recipe.analysis_prompts]]
        blind_heldout = [_with_images(ex, blank) for ex in examples]
    runs, stats = {}, {}
    from rich.progress import Progress

    with Progress(console=con, transient=True) as progress:
        task = progress.add_task("analysis: rollouts scored by the teacher", total=len(models))
        for key, label, path in models:
            lm = teacher if key == "teacher" else load_model(path)
            if key == "student_init":
                objective = specs
            elif study and key in specs:
                objective = {key: specs[key]}
            else:
                objective = None
            r = score_model(lm, teacher, examples, label=label, k=recipe.analysis_k,
                            max_new_tokens=recipe.max_new_tokens, seed=seed, degrade=degrade, objective=objective)
            summary = va_summary(r.va)
            runs[key] = r
            stats[key] = {"accuracy": r.accuracy, "mean_va": summary["mean_va"],
                          "top10_va_share": summary["top10_va_share"], "gini": summary["gini"],
                          "n_tokens": int(summary["n_tokens"]), **reading_stats(r)}
            if r.objective is not None:
                stats[key]["objective_share"] = r.objective
                if study:
                    stats[key]["objective_weight_share"] = r.objective_weight
            if study and shortcut > 0:
                stats[key]["heldout_hint"] = hint_stats(r, examples)
                stats[key]["main_split"] = answer_stats(lm, main_examples, k=recipe.eval_k,
                                                        max_new_tokens=recipe.max_new_tokens, seed=seed)
                if key != "teacher":
                    stats[key]["blind_main"] = answer_stats(lm, blind_main, k=recipe.analysis_k,
                                                            max_new_tokens=recipe.max_new_tokens, seed=seed)
                    stats[key]["blind_heldout"] = answer_stats(lm, blind_heldout, k=recipe.analysis_k,
                                                               max_new_tokens=recipe.max_new_tokens, seed=seed)
            progress.advance(task)
    ex = examples[0]
    prompt = ex.problem.replace("<image>", "[image] ") + f"   (printed values: {ex.meta['values']}, answer {ex.answer})"
    panels = heatmap_panels([runs["student_init"]] + [runs[m] for m in methods], prompt, index=0)
    return {"runs": runs, "stats": stats, "examples": examples, "heatmap": {"example_id": ex.id, "panels": panels}}


def _with_images(example, degrade):
    """`example` with every image replaced by `degrade(image)` (e.g. a blank image for a blind check)."""
    import dataclasses

    return dataclasses.replace(example, images=[degrade(im) for im in example.images])
