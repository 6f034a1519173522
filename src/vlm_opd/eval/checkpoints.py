"""Every kept checkpoint of a training run on the benchmarks, and the best one, as the papers report.

`vlm-opd eval --model RUN_DIR --all-checkpoints` evaluates each complete `checkpoints/step-N/` and
`final/` of the run (the last stage of a multi-stage run) into `OUT/<step-N | final>/`, then
`select_best` picks the checkpoint with the highest selection score in the first decoding mode
(avg@k, or greedy with --k 0):

- `mean`: the mean of the headline scores of every evaluated benchmark;
- a group name (`Math`, `Visual`, `VOLD`, `Local`): that group's average, as in the papers' tables;
- a benchmark name (`mathverse`, ...): its headline score.

Ties go to the earlier checkpoint. `OUT/checkpoints.json` and `OUT/checkpoints.md` hold the table.

This selects on the very items it reports, i.e. on the test set. That is what the VA-OPD paper's tables
do ("Each method is reported with its best checkpoint", Table 1 caption; no separate selection split is
described), so it is needed to compare with them, but the best-of-N number is optimistically biased.
The checkpoint the trainer kept as best (`best.json`, by `eval.best_metric` on `data.eval`) was picked
on the training run's own eval split instead; both are shown.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlm_opd.errors import ConfigError, ModelError
from vlm_opd.eval.benchmarks import GROUPS
from vlm_opd.eval.report import SHORT_TITLES, _ordered_keys, summarize

SELECTION_NOTE = (
    "Selected on the evaluated benchmarks themselves (the test set), as the VA-OPD paper's tables do "
    "(\"Each method is reported with its best checkpoint\"); a best-of-N number is optimistically biased. "
    "For an unbiased number report final/ or the trainer's best checkpoint (chosen on data.eval)."
)
_STAGE_DIR = re.compile(r"^stage(\d+)-")


def run_checkpoints(run_dir: str | Path) -> tuple[Path, list[tuple[str, Path, int | None]]]:
    """(the run directory that holds them, [(label, path, step)]) for every complete step checkpoint
    (oldest first) and final/ of a training run; for a multi-stage run, of its last stage."""
    from vlm_opd.train.checkpoint import list_checkpoints

    run = Path(run_dir).expanduser()
    if not run.is_dir():
        raise ModelError(f"--all-checkpoints: {run} is not a directory (expected a training output directory)")
    stages = sorted((int(m.group(1)), d) for d in run.iterdir() if d.is_dir() and (m := _STAGE_DIR.match(d.name)))
    if stages and not (run / "checkpoints").is_dir() and not (run / "final").is_dir():
        run = stages[-1][1]
    entries: list[tuple[str, Path, int | None]] = [(p.name, p, step) for step, p in list_checkpoints(run)]
    if (run / "final" / "config.json").is_file():
        entries.append(("final", run / "final", _final_step(run)))
    if not entries:
        raise ModelError(f"--all-checkpoints: {run} holds no complete checkpoint (checkpoints/step-N/) and no "
                         "final/ model; is it a training output directory?")
    return run, entries


def _final_step(run: Path) -> int | None:
    import json

    try:
        return int(json.loads((run / "trainer_state.json").read_text(encoding="utf-8"))["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def selection_value(results: dict, select_by: str, mode: str) -> float | None:
    """The score `select_by` names in one evaluation's results (see the module docstring)."""
    summary = results.get("summary") or summarize(results)
    scores = summary[mode]["scores"]
    if select_by == "mean":
        return sum(scores.values()) / len(scores) if scores else None
    if select_by in GROUPS:
        group = summary[mode]["groups"].get(select_by)
        return None if group is None else group["average"]
    return scores.get(select_by)


def check_select_by(select_by: str, benchmark_keys: Sequence[str]) -> None:
    if select_by == "mean" or select_by in GROUPS or select_by in benchmark_keys:
        return
    raise ConfigError(f"--select-by {select_by!r}: expected mean, a group ({', '.join(GROUPS)}) or one of the "
                      f"evaluated benchmarks ({', '.join(benchmark_keys)})")


def select_best(rows: list[dict[str, Any]]) -> int | None:
    """Index of the row with the highest `selection_value` (the earliest on ties; None if none has one)."""
    best = None
    for i, row in enumerate(rows):
        value = row.get("selection_value")
        if value is not None and (best is None or value > rows[best]["selection_value"]):
            best = i
    return best


def checkpoint_rows(evaluated: list[dict[str, Any]], select_by: str) -> tuple[list[dict], str]:
    """One row per evaluated checkpoint and the decoding mode the rows were read from.

    `evaluated`: dicts with label, path, step, out (its eval directory) and results (`evaluate`'s
    return). A row holds label, path, step, results (path of results.json), scores, groups (averages),
    not_comparable (benchmarks) and selection_value.
    """
    mode = evaluated[0]["results"]["modes"][0]
    rows = []
    for e in evaluated:
        results = e["results"]
        s = (results.get("summary") or summarize(results))[mode]
        rows.append({
            "label": e["label"], "path": str(e["path"]), "step": e["step"],
            "results": str(Path(e["out"]) / "results.json"),
            "scores": s["scores"], "groups": {g: v["average"] for g, v in s["groups"].items()},
            "not_comparable": s.get("not_comparable", []),
            "selection_value": selection_value(results, select_by, mode),
        })
    return rows, mode


def render_checkpoints(rows: list[dict], results_of_first: dict, select_by: str, mode: str, best: int | None,
                       training_best: dict | None) -> str:
    """Markdown: one row per checkpoint with every benchmark's headline score, the group averages and the
    selection score; the best row marked; which checkpoint is best by what; the selection caveat."""
    keys = _ordered_keys(results_of_first)
    groups = [g for g in GROUPS if any(g in r["groups"] for r in rows)]
    titles = [SHORT_TITLES.get(k, results_of_first["benchmarks"][k]["title"]) for k in keys]
    header = ["Checkpoint", "Step", *titles, *[f"{g} Avg" for g in groups], f"select: {select_by}"]
    lines = [f"# Checkpoints of the run ({mode})", "", "| " + " | ".join(header) + " |",
             "|" + "|".join(["---", "---:"] + ["---:"] * (len(header) - 2)) + "|"]

    def fmt(x):
        return "-" if x is None else f"{x:.1f}"

    for i, r in enumerate(rows):
        label = f"**{r['label']}** (best)" if i == best else r["label"]
        cells = [label, "-" if r["step"] is None else str(r["step"])]
        cells += [fmt(r["scores"].get(k)) + ("\u2020" if k in r["not_comparable"] else "") for k in keys]
        cells += [fmt(r["groups"].get(g)) for g in groups]
        cells.append(fmt(r["selection_value"]))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if any(r["not_comparable"] for r in rows):
        lines.append("\u2020 not comparable with the papers' numbers (offline-rule, lenient or extractor scoring; "
                     "see each checkpoint's report.md).")
    if best is not None:
        r = rows[best]
        what = "the mean headline score of all evaluated benchmarks" if select_by == "mean" else (
            f"the {select_by} average" if select_by in GROUPS else f"the {select_by} headline score")
        lines.append(f"Best checkpoint: **{r['label']}** (step {r['step']}), by {what} in {mode}: "
                     f"{r['selection_value']:.1f}.")
    else:
        lines.append("No checkpoint has a score to select on.")
    lines.append(SELECTION_NOTE)
    if training_best:
        lines.append(f"The trainer's best checkpoint (best.json, chosen on data.eval by {training_best.get('metric')} "
                     f"{training_best.get('mode')}): {training_best.get('checkpoint')} (step {training_best.get('step')}, "
                     f"value {training_best.get('value')}).")
    return "\n".join(lines) + "\n"
