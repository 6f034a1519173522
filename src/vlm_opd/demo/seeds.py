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


def _digits(share: dict[str, float] | None) -> float | None:
    return None if not share else float(share["right_digit"] + share["wrong_digit"])


def _analysis_get(m: dict[str, Any], model: str, *path: str) -> float | None:
    x: Any = m.get("analysis", {}).get(model)
    for key in path:
        if not isinstance(x, dict):
            return None
        x = x.get(key)
    return None if x is None else float(x)


def metric_extractors(method: str) -> dict[str, Any]:
    """{metric: f(single-seed metrics) -> float | None} of one row (a method, "student_init" or "teacher").

    - accuracy: final eval accuracy (training evals: held-out split, `n_eval` prompts x `eval_k`).
    - mean_va / mean_va_start: teacher-scored mean VA (paper Eq. 2) of the final / the step-0 eval rollouts.
    - accuracy_main: (shortcut task) accuracy on the main split (hint holds as in training), same images.
    - blind_main / blind_heldout: (shortcut) accuracy with a blank image on the main / held-out split.
    - hint_follow_heldout: (shortcut) share of held-out rollouts whose answer copies a hint that is wrong.
    - digit_share_start / _end: share of the method's objective (sum of w_t x KL_t, w_t = d loss / d KL_t)
      on the read-off digits, on the cold-start student's / the method's final student's rollouts.
    - digit_weight_share_start / _end: the same for the summed token weights w_t alone.
    """
    def row(m: dict[str, Any]) -> dict[str, Any] | None:
        if method == "student_init":
            return m["student_init"]
        if method == "teacher":
            return None
        return m["methods"].get(method)

    def get(key):
        return lambda m: (None if row(m) is None else _finite_or_none(row(m).get(key)))

    def share(model, field, of):
        return lambda m: _digits((m.get("analysis", {}).get(model, {}).get(field) or {}).get(of))

    out = {
        "accuracy": get("accuracy") if method != "teacher" else (lambda m: _analysis_get(m, "teacher", "accuracy")),
        "mean_va": get("mean_va") if method != "teacher" else (lambda m: _analysis_get(m, "teacher", "mean_va")),
        "mean_va_start": lambda m: _finite_or_none(m["student_init"].get("mean_va")),
        "accuracy_main": lambda m: _analysis_get(m, method, "main_split", "accuracy"),
        "blind_main": lambda m: _analysis_get(m, method, "blind_main", "accuracy"),
        "blind_heldout": lambda m: _analysis_get(m, method, "blind_heldout", "accuracy"),
        "hint_follow_heldout": lambda m: _analysis_get(m, method, "heldout_hint", "hint_follow_when_wrong"),
    }
    if method not in ("student_init", "teacher"):
        out.update({
            "digit_share_start": share("student_init", "objective_share", method),
            "digit_share_end": share(method, "objective_share", method),
            "digit_weight_share_start": share("student_init", "objective_weight_share", method),
            "digit_weight_share_end": share(method, "objective_weight_share", method),
        })
    return out


def _finite_or_none(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(float(x)) else None


PAIRED_METRICS = ("accuracy", "accuracy_main", "mean_va", "digit_share_start", "digit_share_end")


def summarize_seeds(per_seed: dict[int, dict[str, Any]], methods: list[str]) -> dict[str, Any]:
    """Aggregate the single-seed demos' metrics.json contents ({seed: metrics}).

    Per row (teacher, cold-start student, each method) and metric of `metric_extractors`: mean, 95%
    t-interval and per-seed values (metrics a seed does not have are left out, e.g. the main split off
    the shortcut task). Per method but OPD: paired per-seed differences to OPD of `PAIRED_METRICS`.
    """
    seeds = sorted(per_seed)
    out: dict[str, Any] = {"seeds": seeds, "n_seeds": len(seeds), "level": 0.95, "methods": {}, "paired_to_opd": {}}

    for name in ["teacher", "student_init", *methods]:
        row = {}
        for metric, get in metric_extractors(name).items():
            vals = [get(per_seed[s]) for s in seeds]
            vals = [v for v in vals if v is not None]
            if vals:
                row[metric] = {**t_interval(vals), "per_seed": vals}
        if name == "teacher" and not row:
            continue
        out["methods"][name] = row
    for meth in methods:
        if meth == "opd":
            continue
        ours, base = metric_extractors(meth), metric_extractors("opd")
        paired: dict[str, Any] = {}
        for metric in PAIRED_METRICS:
            d = [ours[metric](per_seed[s]) - base[metric](per_seed[s]) for s in seeds
                 if ours[metric](per_seed[s]) is not None and base[metric](per_seed[s]) is not None]
            if d:
                paired[f"{metric}_diff"] = {**t_interval(d), "per_seed": d}
        ci = paired["accuracy_diff"]
        d_acc = ci["per_seed"]
        paired.update(wins=sum(d > 0 for d in d_acc), losses=sum(d < 0 for d in d_acc),
                      separates=ci["low"] is not None and (ci["low"] > 0 or ci["high"] < 0))
        if "accuracy_main_diff" in paired:
            cm = paired["accuracy_main_diff"]
            paired["separates_main"] = cm["low"] is not None and (cm["low"] > 0 or cm["high"] < 0)
        out["paired_to_opd"][meth] = paired
    return out


def _ci(x: dict[str, Any], scale: float = 1.0, fmt: str = "{:.1f}") -> str:
    if x["mean"] is None:
        return "n/a"
    if x["low"] is None:
        return fmt.format(scale * x["mean"])
    return f"{fmt.format(scale * x['mean'])} [{fmt.format(scale * x['low'])}, {fmt.format(scale * x['high'])}]"


def verdict(summary: dict[str, Any], meth: str, metric: str = "accuracy") -> str:
    """One sentence on `meth` vs OPD, chosen from the paired interval of `metric` (accuracy: the
    held-out final accuracy; accuracy_main: the shortcut task's main split)."""
    p = summary["paired_to_opd"][meth]
    ci, n = p[f"{metric}_diff"], summary["n_seeds"]
    d = ci["per_seed"]
    wins, losses = sum(x > 0 for x in d), sum(x < 0 for x in d)
    sep = ci["low"] is not None and (ci["low"] > 0 or ci["high"] < 0)
    label = METHOD_LABELS.get(meth, meth)
    what = "final accuracy" + (" on the main split" if metric == "accuracy_main" else "")
    if sep:
        who = f"{label} beats OPD" if ci["mean"] > 0 else f"OPD beats {label}"
        return (f"{who} by {100 * abs(ci['mean']):.1f} points of {what} (paired 95% interval "
                f"{_ci(ci, 100)} points, {n} seeds, {wins} wins / {losses} losses for {label}).")
    return (f"No reliable difference between {label} and OPD: the paired difference in {what} is "
            f"{_ci(ci, 100)} points (95% interval over {n} seeds includes 0; {wins} wins / "
            f"{losses} losses for {label}).")


def _row_label(name: str) -> str:
    return {"student_init": "cold-start student (step 0)", "teacher": "teacher"}.get(name, METHOD_LABELS.get(name, name))


def seeds_report_markdown(summary: dict[str, Any], methods: list[str], recipe_name: str, wall_s: float) -> str:
    n = summary["n_seeds"]
    rows = summary["methods"]
    shortcut = any("accuracy_main" in r for r in rows.values())
    study = any("digit_share_end" in r for r in rows.values())
    acc_col = "final accuracy, held-out split, % (mean [95% CI])" if shortcut else "final accuracy, % (mean [95% CI])"
    head = ["model", acc_col]
    if shortcut:
        head += ["final accuracy, main split, %"]
    head += ["final mean VA (mean [95% CI])", "mean VA start"]
    if study:
        head += ["objective on read-off digits: start -> end, %"]
    head += ["per-seed accuracy, %"]
    lines = [
        "# vlm-opd demo over seeds: OPD vs VA-OPD with 95% intervals",
        "",
        f"Recipe `{recipe_name}`, seeds {', '.join(map(str, summary['seeds']))} ({n} seeds), total wall time "
        f"{wall_s:.0f} s. Each seed is a full single-seed demo (own cold start, distillation, analysis) in "
        "`seed-<N>/`; the teacher is shared (trained once, then cached). Intervals are two-sided 95% Student-t "
        f"intervals over the {n} seeds (df = {n - 1}); with few seeds they are wide.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, s in rows.items():
        if "accuracy" not in s:
            continue
        cells = [_row_label(name), _ci(s["accuracy"], 100)]
        if shortcut:
            cells.append(_ci(s["accuracy_main"], 100) if "accuracy_main" in s else "n/a")
        cells += [_ci(s["mean_va"], 1, "{:.3f}") if "mean_va" in s else "n/a",
                  _ci(s["mean_va_start"], 1, "{:.3f}") if "mean_va_start" in s and name != "teacher" else ""]
        if study:
            if "digit_share_start" in s:
                end_ = _ci(s["digit_share_end"], 100) if "digit_share_end" in s else "n/a"
                cells.append(f"{_ci(s['digit_share_start'], 100)} -> {end_}")
            else:
                cells.append("")
        cells.append(", ".join(f"{100 * a:.1f}" for a in s["accuracy"]["per_seed"]))
        lines.append("| " + " | ".join(cells) + " |")
    if shortcut:
        lines += [
            "",
            "## The shortcut probe (blank image; hint-following on the held-out split)",
            "",
            "| model | accuracy with a blank image, main split, % | blank image, held-out split, % | "
            "held-out rollouts copying a wrong hint, % |",
            "|---|---|---|---|",
        ]
        for name, s in rows.items():
            if not any(k in s for k in ("blind_main", "hint_follow_heldout")):
                continue
            cells = [_row_label(name)] + [_ci(s[k], 100) if k in s else "n/a"
                                          for k in ("blind_main", "blind_heldout", "hint_follow_heldout")]
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Paired differences to standard OPD (same seed = same student, data order and eval sample)",
        "",
        "| method - OPD | accuracy diff, points (mean [95% CI]) | "
        + ("main-split accuracy diff, points | " if shortcut else "")
        + "mean VA diff (mean [95% CI]) | per-seed accuracy diff | separates from OPD |",
        "|---|---|---|---|---|" + ("---|" if shortcut else ""),
    ]
    for meth, p in summary["paired_to_opd"].items():
        per = ", ".join(f"{100 * d:+.1f}" for d in p["accuracy_diff"]["per_seed"])
        cells = [METHOD_LABELS.get(meth, meth), _ci(p["accuracy_diff"], 100)]
        if shortcut:
            cells.append(_ci(p["accuracy_main_diff"], 100) if "accuracy_main_diff" in p else "n/a")
        cells += [_ci(p["mean_va_diff"], 1, "{:+.3f}") if "mean_va_diff" in p else "n/a", per,
                  "yes" if p["separates"] else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Verdict", ""]
    lines += [f"- {verdict(summary, m)}" for m in summary["paired_to_opd"]]
    if shortcut:
        lines += [f"- {verdict(summary, m, 'accuracy_main')}" for m in summary["paired_to_opd"]
                  if "accuracy_main_diff" in summary["paired_to_opd"][m]]
    if study:
        lines += ["", "Objective on read-off digits: the share of the method's loss, sum over tokens of w_t x KL_t "
                  "with w_t = d loss / d KL_t (its own VA, rollout weights and groups), that falls on the digits "
                  "read off the image (the values of the first sentence), on the analysis rollouts of the "
                  "cold-start student (start) and of the method's final student (end)."]
    lines += ["", "Per-seed reports: " + ", ".join(f"`seed-{s}/report.md`" for s in summary["seeds"]), ""]
    return "\n".join(lines)


def run_demo_seeds(out_dir: str | os.PathLike, seeds: list[int], *, quick: bool = False, with_grpo: bool = False,
                   cache_dir: str | os.PathLike | None = None, recipe=None, console=None,
                   methods: list[str] | None = None, study: bool = False, jobs: int = 2) -> dict[str, Any]:
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
                          recipe=recipe, console=con, methods=methods, study=study, jobs=jobs)
        per_seed[seed] = result.metrics
    methods = list(methods or ["opd", "va_opd"]) + (["grpo"] if with_grpo else [])
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


def summarize_seed_dirs(out_dir: str | os.PathLike) -> dict[str, Any]:
    """(Re)write `<out_dir>/metrics.json` and `report.md` from the single-seed demos in `<out_dir>/seed-<N>/`
    (for seeds run as separate `vlm-opd demo --seed N --out <out_dir>/seed-N` processes, e.g. in parallel).
    Every seed must have run the same recipe and methods; returns the summary."""
    import json

    out = Path(out_dir)
    per_seed, recipes, method_sets = {}, set(), set()
    for path in sorted(out.glob("seed-*/metrics.json")):
        m = json.loads(path.read_text(encoding="utf-8"))
        per_seed[int(m["seed"])] = m
        recipes.add(m["recipe"])
        method_sets.add(tuple(m["methods"]))
    if len(per_seed) < 2:
        raise ConfigError(f"{out}: need at least two seed-<N>/metrics.json for an interval, found {len(per_seed)}")
    if len(recipes) != 1 or len(method_sets) != 1:
        raise ConfigError(f"{out}: the seeds ran different recipes {sorted(recipes)} or methods {sorted(method_sets)}")
    methods = list(method_sets.pop())
    summary = summarize_seeds(per_seed, methods)
    wall = sum(per_seed[s]["wall_s"] for s in per_seed)
    summary.update(recipe=recipes.pop(), wall_s=wall, per_seed_wall_s={s: per_seed[s]["wall_s"] for s in per_seed},
                   per_seed_reports={s: str(out / f"seed-{s}" / "report.md") for s in per_seed})
    atomic_write_json(out / "metrics.json", summary)
    atomic_write_text(out / "report.md", seeds_report_markdown(summary, methods, summary["recipe"], wall))
    return summary


def study_table(out_dirs: dict[str, str | os.PathLike]) -> str:
    """The study's table (docs/va_opd_study.md) from `vlm-opd demo --seeds` output directories
    ({setting: out dir}, each holding the summary `metrics.json`): one row per setting and method with
    the final accuracy on each split, mean VA at start and end, the objective share on the read-off
    digits at start and end, and the paired difference to OPD, each as mean [95% t-interval]."""
    import json

    head = ["setting", "method", "n seeds", "accuracy, held-out split, %", "accuracy, main split, %",
            "mean VA start -> end", "objective on read-off digits, start -> end, %",
            "paired diff to OPD, held-out, points", "paired diff to OPD, main split, points"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for setting, d in out_dirs.items():
        s = json.loads((Path(d) / "metrics.json").read_text(encoding="utf-8"))
        for name, row in s["methods"].items():
            if name == "teacher":
                continue
            pair = s["paired_to_opd"].get(name, {})
            get = lambda key, scale=100.0, fmt="{:.1f}", r=row: _ci(r[key], scale, fmt) if key in r else "-"  # noqa: E731
            va = f"{get('mean_va_start', 1, '{:.3f}')} -> {get('mean_va', 1, '{:.3f}')}"
            share = (f"{get('digit_share_start')} -> {get('digit_share_end')}" if "digit_share_start" in row else "-")
            diff = lambda key, p=pair: (_ci(p[key], 100, "{:+.1f}") + (" *" if p[key]["low"] is not None and  # noqa: E731
                                        (p[key]["low"] > 0 or p[key]["high"] < 0) else "")) if key in p else "-"
            cells = [setting, _row_label(name), str(len(row["accuracy"]["per_seed"])), get("accuracy"),
                     get("accuracy_main"), va if name != "student_init" else get("mean_va", 1, "{:.3f}"), share,
                     diff("accuracy_diff"), diff("accuracy_main_diff")]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
