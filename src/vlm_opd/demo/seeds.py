"""`vlm-opd demo --seeds 0,1,2`: the single-seed demo once per seed, then means, 95% intervals and paired
differences to OPD over the seeds.

Each seed is a complete single-seed demo in `<out>/seed-<N>/` (its own cold start, distillation runs,
analysis and report); the teacher does not depend on the seed and is trained once, then reused from
the cache. `<out>/report.md` and `<out>/metrics.json` summarise the seeds: per method the mean and a
95% Student-t interval of the final accuracy and of the final mean VA, and for every method the
per-seed paired difference to standard OPD (same seed = same cold-started student, data order and
evaluation sample) with its mean and t-interval. A difference is called reliable only when its
interval excludes 0.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlm_opd.demo.recipe import METHOD_LABELS
from vlm_opd.errors import ConfigError
from vlm_opd.io_utils import atomic_write_json, atomic_write_text


def _t_pdf(x: float, df: int) -> float:
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_c - (df + 1) / 2 * math.log1p(x * x / df))


def _t_cdf_upper_half(t: float, df: int, n: int = 4000) -> float:
    """P(0 <= T <= t) by Simpson's rule (the pdf is smooth; 4000 panels give ~1e-10 here)."""
    h = t / n
    s = _t_pdf(0.0, df) + _t_pdf(t, df)
    s += 4 * sum(_t_pdf((2 * i - 1) * h, df) for i in range(1, n // 2 + 1))
    s += 2 * sum(_t_pdf(2 * i * h, df) for i in range(1, n // 2))
    return s * h / 3


def t_quantile(p: float, df: int) -> float:
    """The p-quantile (p in (0.5, 1)) of Student's t with `df` degrees of freedom (bisection on the CDF)."""
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"t_quantile: need 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    lo, hi = 0.0, 1.0
    while 0.5 + _t_cdf_upper_half(hi, df) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 0.5 + _t_cdf_upper_half(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def t_interval(values: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Mean and two-sided Student-t interval of `values` (n >= 2; None bounds for n < 2).

    Returns {"mean", "low", "high", "half_width", "sd", "n"}.
    """
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return {"mean": None, "low": None, "high": None, "half_width": None, "sd": None, "n": 0}
    mean = sum(xs) / n
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "half_width": None, "sd": None, "n": 1}
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "half_width": half, "sd": sd, "n": n}


def parse_seeds(text: str) -> list[int]:
    """"0,1,2" -> [0, 1, 2]; at least two distinct integers (an interval needs two seeds)."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers such as 0,1,2, got {text!r}") from None
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: need at least two distinct seeds for an interval, got {text!r}")
    return seeds


def summarize_seeds(per_seed: dict[int, dict[str, Any]], methods: list[str]) -> dict[str, Any]:
    """Aggregate the single-seed demos' metrics.json contents ({seed: metrics})."""
    seeds = sorted(per_seed)
    out: dict[str, Any] = {"seeds": seeds, "n_seeds": len(seeds), "level": 0.95, "methods": {}, "paired_to_opd": {}}

    def collect(get) -> list[float]:
        vals = [get(per_seed[s]) for s in seeds]
        return [v for v in vals if v is not None]

    rows = {"student_init": lambda m: m["student_init"]}
    rows.update({meth: (lambda meth_: lambda m: m["methods"][meth_])(meth) for meth in methods})
    for name, get in rows.items():
        acc = [get(per_seed[s])["accuracy"] for s in seeds]
        va = collect(lambda m: get(m)["mean_va"])
        out["methods"][name] = {
            "accuracy": {**t_interval(acc), "per_seed": acc},
            "mean_va": {**t_interval(va), "per_seed": va},
        }
    for meth in methods:
        if meth == "opd":
            continue
        d_acc = [per_seed[s]["methods"][meth]["accuracy"] - per_seed[s]["methods"]["opd"]["accuracy"] for s in seeds]
        d_va = [per_seed[s]["methods"][meth]["mean_va"] - per_seed[s]["methods"]["opd"]["mean_va"] for s in seeds
                if per_seed[s]["methods"][meth]["mean_va"] is not None and per_seed[s]["methods"]["opd"]["mean_va"] is not None]
        ci = t_interval(d_acc)
        separates = ci["low"] is not None and (ci["low"] > 0 or ci["high"] < 0)
        out["paired_to_opd"][meth] = {
            "accuracy_diff": {**ci, "per_seed": d_acc},
            "mean_va_diff": {**t_interval(d_va), "per_seed": d_va},
            "wins": sum(d > 0 for d in d_acc), "losses": sum(d < 0 for d in d_acc),
            "separates": separates,
        }
    return out


def _ci(x: dict[str, Any], scale: float = 1.0, fmt: str = "{:.1f}") -> str:
    if x["mean"] is None:
        return "n/a"
    if x["low"] is None:
        return fmt.format(scale * x["mean"])
    return f"{fmt.format(scale * x['mean'])} [{fmt.format(scale * x['low'])}, {fmt.format(scale * x['high'])}]"


def verdict(summary: dict[str, Any], meth: str) -> str:
    """One sentence on `meth` vs OPD, chosen from the paired interval."""
    p = summary["paired_to_opd"][meth]
    ci, n = p["accuracy_diff"], summary["n_seeds"]
    label = METHOD_LABELS.get(meth, meth)
    if p["separates"]:
        who = f"{label} beats OPD" if ci["mean"] > 0 else f"OPD beats {label}"
        return (f"{who} by {100 * abs(ci['mean']):.1f} points of final accuracy (paired 95% interval "
                f"{_ci(ci, 100)} points, {n} seeds, {p['wins']} wins / {p['losses']} losses for {label}).")
    return (f"No reliable difference between {label} and OPD: the paired difference in final accuracy is "
            f"{_ci(ci, 100)} points (95% interval over {n} seeds includes 0; {p['wins']} wins / "
            f"{p['losses']} losses for {label}).")


def seeds_report_markdown(summary: dict[str, Any], methods: list[str], recipe_name: str, wall_s: float) -> str:
    n = summary["n_seeds"]
    lines = [
        "# vlm-opd demo over seeds: OPD vs VA-OPD with 95% intervals",
        "",
        f"Recipe `{recipe_name}`, seeds {', '.join(map(str, summary['seeds']))} ({n} seeds), total wall time "
        f"{wall_s:.0f} s. Each seed is a full single-seed demo (own cold start, distillation, analysis) in "
        "`seed-<N>/`; the teacher is shared (trained once, then cached). Intervals are two-sided 95% Student-t "
        f"intervals over the {n} seeds (df = {n - 1}); with few seeds they are wide.",
        "",
        "| model | final accuracy, % (mean [95% CI]) | final mean VA (mean [95% CI]) | per-seed accuracy, % |",
        "|---|---|---|---|",
    ]
    for name, s in summary["methods"].items():
        label = "cold-start student (step 0)" if name == "student_init" else METHOD_LABELS.get(name, name)
        per = ", ".join(f"{100 * a:.1f}" for a in s["accuracy"]["per_seed"])
        lines.append(f"| {label} | {_ci(s['accuracy'], 100)} | {_ci(s['mean_va'], 1, '{:.3f}')} | {per} |")
    lines += [
        "",
        "## Paired differences to standard OPD (same seed = same student, data order and eval sample)",
        "",
        "| method - OPD | accuracy diff, points (mean [95% CI]) | mean VA diff (mean [95% CI]) | per-seed accuracy diff | "
        "separates from OPD |",
        "|---|---|---|---|---|",
    ]
    for meth, p in summary["paired_to_opd"].items():
        per = ", ".join(f"{100 * d:+.1f}" for d in p["accuracy_diff"]["per_seed"])
        lines.append(f"| {METHOD_LABELS.get(meth, meth)} | {_ci(p['accuracy_diff'], 100)} | "
                     f"{_ci(p['mean_va_diff'], 1, '{:+.3f}')} | {per} | {'yes' if p['separates'] else 'no'} |")
    lines += ["", "## Verdict", ""]
    lines += [f"- {verdict(summary, m)}" for m in summary["paired_to_opd"]]
    lines += ["", "Per-seed reports: " + ", ".join(f"`seed-{s}/report.md`" for s in summary["seeds"]), ""]
    return "\n".join(lines)


def run_demo_seeds(out_dir: str | os.PathLike, seeds: list[int], *, quick: bool = False, with_grpo: bool = False,
                   cache_dir: str | os.PathLike | None = None, recipe=None, console=None) -> dict[str, Any]:
    """Run the single-seed demo for each seed into `<out_dir>/seed-<N>/` and write the summary report.

    Returns the summary (also written to `<out_dir>/metrics.json`, with `report.md` beside it).
    """
    from vlm_opd.demo.pipeline import _console, run_demo
    from vlm_opd.demo.recipe import FULL, QUICK

    t0 = time.time()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    con = _console(console)
    recipe = recipe or (QUICK if quick else FULL)
    per_seed = {}
    for seed in seeds:
        result = run_demo(out / f"seed-{seed}", quick=quick, seed=seed, with_grpo=with_grpo, cache_dir=cache_dir,
                          recipe=recipe, console=con)
        per_seed[seed] = result.metrics
    methods = ["opd", "va_opd"] + (["grpo"] if with_grpo else [])
    summary = summarize_seeds(per_seed, methods)
    wall = time.time() - t0
    summary.update(recipe=recipe.name, wall_s=wall,
                   per_seed_wall_s={s: per_seed[s]["wall_s"] for s in seeds},
                   per_seed_reports={s: str(out / f"seed-{s}" / "report.md") for s in seeds})
    atomic_write_json(out / "metrics.json", summary)
    atomic_write_text(out / "report.md", seeds_report_markdown(summary, methods, recipe.name, wall))
    for m in summary["paired_to_opd"]:
        con.print(verdict(summary, m))
    return summary
