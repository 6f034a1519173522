"""Summary tables of an evaluation: group averages as in VA-OPD Table 1, unparsed counts, details.

Every number says whether it is comparable with the papers' tables: a benchmark result (per decoding
mode) is comparable only when every completion was scored by the benchmark's official rule
(`scoring.OFFICIAL`) or by the LLM judge of its official protocol ("judge:<model>"). Numbers that an
offline stand-in rule ("offline-rule"), the opt-in lenient parser ("lenient") or a caller-supplied
extractor ("extractor:<name>") touched carry `comparable_with_papers: false` in results.json and a
marker in the tables (see `MARKERS`), explained in a footnote. The local benchmark has no paper number
(`comparable_with_papers: null`).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from vlm_opd.eval.benchmarks import GROUPS, TABLE_ORDER
from vlm_opd.eval.io import atomic_write_json, atomic_write_text
from vlm_opd.eval.scoring import LENIENT, OFFICIAL, OFFLINE

# Marker per kind of non-comparable rule, and what the footnote says about it.
MARKERS = {
    OFFLINE: ("\u2020", "offline-rule: the official protocol has an LLM step (extraction or judgement) but no "
                        "judge was given, so a documented offline rule stood in (pass --judge-url/--judge-model)"),
    LENIENT: ("\u2021", "lenient: the explicit non-official lenient multiple-choice parser (--lenient)"),
    "extractor": ("\u00a7", "extractor: answers read by a caller-supplied extractor, not the official LLM step"),
    "other": ("*", "a rule that is not the official scorer or its judge"),
}
NOT_COMPARABLE = "NOT comparable with the papers' numbers"


def rule_kind(rule: str) -> str:
    """"official", "judge", "offline-rule", "lenient", "extractor" or "other" for an `ItemScore.rule`."""
    if rule == OFFICIAL:
        return OFFICIAL
    if rule.startswith("judge:"):
        return "judge"
    if rule in (OFFLINE, LENIENT):
        return rule
    return "extractor" if rule.startswith("extractor:") else "other"


def comparability(rules: dict[str, int], group: str) -> dict[str, Any]:
    """`comparable_with_papers` (bool; None for the local benchmark, which has no paper number) and
    `not_comparable_rules` ({rule: completions}) of one benchmark result from its rule counts."""
    bad = {rule: n for rule, n in sorted(rules.items()) if n and rule_kind(rule) not in (OFFICIAL, "judge")}
    comparable = None if group == "Local" else not bad
    return {"comparable_with_papers": comparable, "not_comparable_rules": bad}


def _markers(result: dict) -> str:
    kinds = {rule_kind(r) for r in result.get("not_comparable_rules", {})}
    return "".join(MARKERS[k][0] for k in MARKERS if k in kinds)

# Column headers as the papers print them.
SHORT_TITLES = {"hallusionbench": "HalluB", "mmmu_pro": "MMMU-Pro", "mmmu_pro_vision": "MMMU-Pro-V"}


def _ordered_keys(results: dict) -> list[str]:
    keys = list(results["benchmarks"])
    rank = {name: i for i, name in enumerate(TABLE_ORDER)}
    return sorted(keys, key=lambda k: (rank.get(k, len(TABLE_ORDER)), k))


def summarize(results: dict) -> dict[str, dict[str, Any]]:
    """Per decoding mode: headline score of every benchmark and the average of each group.

    Returns {mode: {"scores": {benchmark: score}, "comparable_with_papers": {benchmark: bool | None},
    "not_comparable": [benchmark, ...], "groups": {group: {"average", "benchmarks",
    "comparable_with_papers"}}}}. A group average covers only the benchmarks evaluated in that group
    (listed next to it) and is comparable only if all of them are.
    """
    out: dict[str, dict[str, Any]] = {}
    for mode in results["modes"]:
        scores: dict[str, float] = {}
        comparable: dict[str, bool | None] = {}
        groups: dict[str, dict[str, Any]] = {}
        for key in _ordered_keys(results):
            entry = results["benchmarks"][key]
            result = entry["results"][mode]
            score = result["score"]
            if score is None:
                continue
            scores[key] = score
            comparable[key] = result.get("comparable_with_papers")
            groups.setdefault(entry["group"], {"benchmarks": []})["benchmarks"].append(key)
        for name, group in groups.items():
            group["average"] = statistics.fmean(scores[k] for k in group["benchmarks"])
            flags = [comparable[k] for k in group["benchmarks"]]
            group["comparable_with_papers"] = None if name == "Local" else all(f is True for f in flags)
        out[mode] = {"scores": scores, "comparable_with_papers": comparable,
                     "not_comparable": [k for k, f in comparable.items() if f is False],
                     "groups": {g: groups[g] for g in GROUPS if g in groups}}
    return out


def _fmt(x: float | None, marker: str = "") -> str:
    return "-" if x is None else f"{x:.1f}{marker}"


def render_markdown(results: dict) -> str:
    """The report: one row per decoding mode, benchmarks grouped Math / Visual / VOLD / Local with
    group averages, then unparsed answers and per-benchmark metric details."""
    summary = summarize(results)
    s = results["settings"]
    lines = ["# Evaluation results", ""]
    lines.append(
        f"avg@{s['k']} at temperature {s['temperature']}" if s["k"] else "no sampled run"
    )
    lines[-1] += (", plus greedy pass@1" if s["greedy_pass1"] else "") + (
        f"; items per benchmark limited to {s['limit']}" if s["limit"] else "") + (
        f"; LLM judge {s['judge']} for the benchmarks whose protocol has an LLM step" if s["judge"]
        else "; no LLM judge") + (
        "; LENIENT multiple-choice parser (--lenient)" if s.get("lenient") else "") + "."
    model = s.get("model") or {}
    if model:
        lines.append("")
        lines.append(f"Model: {model.get('model', '?')}; max_new_tokens {model.get('max_new_tokens', '?')}"
                     + (f" ({model['max_new_tokens_source']})" if model.get("max_new_tokens_source") else "") + ".")
    lines.append("All scores are in percent.")
    lines.append("")

    keys = _ordered_keys(results)
    first_mode = results["modes"][0]
    group_cols: list[tuple[str, list[str]]] = []
    for group in GROUPS:
        members = [k for k in keys if results["benchmarks"][k]["group"] == group]
        if members:
            group_cols.append((group, members))
    header = ["Mode"]
    for group, members in group_cols:
        header += [SHORT_TITLES.get(k, results["benchmarks"][k]["title"]) for k in members] + [f"{group} Avg"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    used_markers: set[str] = set()
    for mode in results["modes"]:
        row = [mode]
        for group, members in group_cols:
            group_marks = ""
            for k in members:
                score = summary[mode]["scores"].get(k)
                marks = _markers(results["benchmarks"][k]["results"][mode]) if score is not None else ""
                used_markers.update(marks)
                group_marks += "".join(m for m in marks if m not in group_marks)
                row.append(_fmt(score, marks))
            avg = summary[mode]["groups"].get(group, {}).get("average")
            ordered = "".join(m for m, _ in MARKERS.values() if m in group_marks)
            row.append(_fmt(avg, ordered))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines += _footnotes(used_markers)
    headlines = ", ".join(
        f"{results['benchmarks'][k]['title']}: {results['benchmarks'][k]['results'][first_mode]['headline']}" for k in keys
    )
    lines.append(f"Headline metric per benchmark: {headlines}.")
    lines.append("")

    lines += ["## Unparsed answers and scoring rules", "",
              "| Benchmark | Mode | Unparsed | Completions | Scored by | Comparable with papers |",
              "|---|---|---:|---:|---|---|"]
    for k in keys:
        for mode in results["modes"]:
            r = results["benchmarks"][k]["results"][mode]
            rules = ", ".join(f"{name} ({n})" for name, n in sorted(r["rules"].items()))
            flag = r.get("comparable_with_papers")
            shown = "n/a (no paper number)" if flag is None else "yes" if flag else f"**no** {_markers(r)}"
            lines.append(f"| {results['benchmarks'][k]['title']} | {mode} | {r['n_unparsed']} | "
                         f"{r['n_completions']} | {rules} | {shown} |")
    lines.append("")

    lines += ["## Details", ""]
    for k in keys:
        entry = results["benchmarks"][k]
        lines.append(f"### {entry['title']} ({entry['n_items']} items)")
        lines.append("")
        for mode in results["modes"]:
            r = entry["results"][mode]
            metrics = ", ".join(f"{name} {value:.1f}" for name, value in r["metrics"].items())
            lines.append(f"- {mode}: {metrics}")
            if r["counts"]:
                counts = ", ".join(f"{name} {value:g}" for name, value in r["counts"].items())
                lines.append(f"  - counts (mean over runs): {counts}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _footnotes(used: set[str]) -> list[str]:
    """One line per marker used in the table, and a line saying which numbers are comparable."""
    lines = []
    for mark, text in MARKERS.values():
        if mark in used:
            lines.append(f"{mark} {NOT_COMPARABLE}: scored (in part) by {text}.")
    if lines:
        lines.append("Unmarked numbers were scored by each benchmark's official rule or its protocol's LLM judge.")
    else:
        lines.append("Every number was scored by its benchmark's official rule or its protocol's LLM judge.")
    lines.append("")
    return lines


def write_report(results: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write results.json (with the summary added) and report.md atomically; return their paths."""
    out_dir = Path(out_dir)
    results["summary"] = summarize(results)
    paths = {
        "results": atomic_write_json(out_dir / "results.json", results),
        "report": atomic_write_text(out_dir / "report.md", render_markdown(results)),
    }
    return paths
