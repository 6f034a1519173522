"""avg@k / greedy pass@1 evaluation over benchmarks, batched and resumable.

The model is reached only through `generate_fn(examples, k, temperature, greedy, seed) -> list[list[str]]`
(k completions per example), so the runner is independent of how generation is done.

Resuming: completions are appended to one JSONL cache per benchmark and decoding setting under
`out_dir/cache/` (flushed and fsynced after every batch). A rerun with the same `out_dir` skips every
cached item, so an interrupted run neither regenerates nor double-counts anything. The setting is part
of the file name (`<benchmark>.avg8_t1.jsonl`, `<benchmark>.greedy.jsonl`), so runs with other k or
temperature keep separate caches; a cache written with another seed is refused, and so is an item whose
prompt, image or answer changed (each item's fingerprint is stored). Scores are computed from the cached
completions (judge replies are memoised in `out_dir/judge_cache.jsonl`). Benchmarks are loaded, generated
and scored one at a time, and images are released once a benchmark is generated, so memory holds one
benchmark's images at most.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlm_opd.data.example import Example
from vlm_opd.errors import ConfigError, DataError, ModelError
from vlm_opd.eval.benchmarks import Benchmark, get_benchmark
from vlm_opd.eval.io import atomic_write_text
from vlm_opd.eval.judge import Judge, JudgeConfig
from vlm_opd.eval.report import comparability, write_report
from vlm_opd.eval.scoring import ItemScore

GenerateFn = Callable[[list[Example], int, float, bool, int], list[list[str]]]

CACHE_FORMAT = 1


@dataclass(frozen=True)
class DecodeMode:
    """One decoding setting: sampled avg@k at a temperature, or greedy pass@1."""

    label: str  # "avg@8" or "greedy"
    k: int
    temperature: float
    greedy: bool

    @property
    def tag(self) -> str:
        """File-name-safe id of the setting."""
        return "greedy" if self.greedy else f"avg{self.k}_t{self.temperature:g}"

    def header(self, key: str, seed: int) -> dict:
        """What a cache file was generated with; a cache is only reused under the same header."""
        return {"format": CACHE_FORMAT, "benchmark": key, "mode": self.label, "k": self.k,
                "temperature": self.temperature, "greedy": self.greedy, "seed": seed}


def example_fingerprint(example: Example) -> str:
    """sha1 over prompt, reference answer and image pixels: a cached completion is only reused for the same input."""
    h = hashlib.sha1()
    h.update(example.problem.encode())
    h.update(b"\0" + str(example.answer).encode())
    for im in example.images:
        h.update(f"\0{im.mode}{im.size}".encode())
        h.update(im.tobytes())
    return h.hexdigest()


def batch_seed(seed: int, key: str, mode: DecodeMode, first_id: str) -> int:
    """Seed of one generation batch, fixed by the run seed, benchmark, setting and first item."""
    digest = hashlib.sha256(f"{seed}|{key}|{mode.tag}|{first_id}".encode()).hexdigest()
    return int(digest[:8], 16)


def _record_problem(rec: Any, header: bool) -> str | None:
    """What is wrong with one parsed cache line (None if it has the expected shape)."""
    if not isinstance(rec, dict):
        return f"expected a JSON object, got {type(rec).__name__}"
    if header:
        return None if isinstance(rec.get("header"), dict) else "expected the header object {\"header\": {...}}"
    if not isinstance(rec.get("id"), str):
        return "expected an object with a string id"
    if not isinstance(rec.get("fingerprint"), str):
        return f"item {rec['id']!r} has no fingerprint"
    comps = rec.get("completions")
    if not isinstance(comps, list) or not all(isinstance(c, str) for c in comps):
        return f"item {rec['id']!r}: completions must be a list of strings"
    return None


class CompletionCache:
    """Append-only JSONL of {id, fingerprint, completions}, behind one header line with the setting."""

    def __init__(self, path: Path, header: dict):
        self.path = path
        self.header = header
        self.records: dict[str, dict] = {}
        self.discarded_lines = 0  # torn last line of an interrupted write, dropped and regenerated
        self.duplicates = 0
        if path.exists():
            self._load()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._append_lines([json.dumps({"header": header})])

    def _load(self) -> None:
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        complete = data.endswith(b"\n")
        if complete:
            lines = lines[:-1]
        parsed: list[dict] = []
        for i, raw in enumerate(lines):
            try:
                parsed.append(json.loads(raw.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                if i == len(lines) - 1:  # torn last line of an interrupted append
                    self.discarded_lines += 1
                    continue
                what = "is not UTF-8" if isinstance(err, UnicodeDecodeError) else "is not valid JSON"
                raise DataError(f"cache {self.path} line {i + 1} {what}; delete the file to regenerate it") from None
            problem = _record_problem(parsed[-1], header=i == 0)
            if problem:
                raise DataError(f"cache {self.path} line {i + 1}: {problem}; delete the file to regenerate it")
        if not parsed or "header" not in parsed[0]:
            raise DataError(f"cache {self.path} has no header line; delete the file to regenerate it")
        if parsed[0]["header"] != self.header:
            raise DataError(
                f"cache {self.path} was written with settings {parsed[0]['header']} but this run uses {self.header}; "
                "use another out_dir or delete the file"
            )
        for rec in parsed[1:]:
            if rec["id"] in self.records:
                self.duplicates += 1  # keep the first: it is the one earlier results were built on
                continue
            self.records[rec["id"]] = rec
        if self.discarded_lines or not complete:
            # Rewrite without the torn line, so the next append starts on a fresh line.
            body = "".join(json.dumps(r) + "\n" for r in parsed)
            atomic_write_text(self.path, body)

    def _append_lines(self, lines: list[str]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            for line in lines:
                f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def add(self, records: list[dict]) -> None:
        """Append one batch and make it durable before returning."""
        self._append_lines([json.dumps(r, ensure_ascii=False) for r in records])
        for r in records:
            self.records[r["id"]] = r


def _result_key(bench: Benchmark) -> str:
    return bench.title if bench.name == "local" else bench.name


def _check_outputs(outputs: Any, batch: list[Example], k: int, key: str) -> list[list[str]]:
    if not isinstance(outputs, (list, tuple)) or len(outputs) != len(batch):
        got = len(outputs) if isinstance(outputs, (list, tuple)) else type(outputs).__name__
        raise ModelError(f"{key}: generate_fn returned {got} results for a batch of {len(batch)} examples")
    for ex, comps in zip(batch, outputs):
        if not isinstance(comps, (list, tuple)) or len(comps) != k or not all(isinstance(c, str) for c in comps):
            raise ModelError(f"{key}: generate_fn must return {k} strings for item {ex.id!r}, got {comps!r:.120}")
    return [list(c) for c in outputs]


def _progress_bar(enabled: bool):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn())


def _mean_dicts(dicts: Sequence[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for d in dicts for k in d})
    return {k: statistics.fmean(d[k] for d in dicts if k in d) for k in keys}


def _score_mode(bench: Benchmark, examples: list[Example], completions: dict[str, list[str]], mode: DecodeMode,
                judge: Judge | None) -> tuple[dict, list[dict]]:
    use_judge = judge if bench.uses_judge else None
    scored: list[list[ItemScore]] = []
    for ex in examples:
        scored.append([bench.score_item(c, ex, use_judge) for c in completions[ex.id]])
    runs = [bench.run_metrics(examples, [s[j] for s in scored]) for j in range(mode.k)]
    metrics = _mean_dicts([m for m, _ in runs])
    counts = _mean_dicts([c for _, c in runs])
    run_headlines = [m.get(bench.headline(metrics), 0.0) for m, _ in runs]
    flat = [s for item in scored for s in item]
    summary = {
        "metrics": metrics,
        "counts": counts,
        "headline": bench.headline(metrics),
        "score": metrics.get(bench.headline(metrics)),
        "score_std_over_runs": statistics.pstdev(run_headlines) if len(run_headlines) > 1 else 0.0,
        "n_completions": len(flat),
        "n_unparsed": sum(not s.parsed for s in flat),
        "rules": dict(Counter(s.rule for s in flat)),
    }
    # Comparable with the papers only if every completion was scored by the official rule or a judge.
    summary.update(comparability(summary["rules"], bench.group))
    items = []
    for ex, item_scores in zip(examples, scored):
        items.append({
            "completions": completions[ex.id],
            "extracted": [s.extracted for s in item_scores],
            "scores": [s.score for s in item_scores],
            "parsed": [s.parsed for s in item_scores],
            "rule": [s.rule for s in item_scores],
        })
    return summary, items


def _generate(bench: Benchmark, key: str, examples: list[Example], mode: DecodeMode, generate_fn: GenerateFn,
              out_dir: Path, batch_size: int, seed: int, bar) -> CompletionCache:
    """Generate every uncached item of one benchmark under one setting; return the filled cache."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", key)
    cache = CompletionCache(out_dir / "cache" / f"{safe}.{mode.tag}.jsonl", mode.header(key, seed))
    fingerprints = {ex.id: example_fingerprint(ex) for ex in examples}
    for ex in examples:
        rec = cache.records.get(ex.id)
        if rec is not None and rec["fingerprint"] != fingerprints[ex.id]:
            raise DataError(
                f"{bench.title}: item {ex.id!r} changed since it was cached in {cache.path} "
                "(prompt, image or answer differ); use a fresh out_dir"
            )
        if rec is not None and len(rec["completions"]) != mode.k:
            raise DataError(f"{cache.path}: item {ex.id!r} holds {len(rec['completions'])} completions, expected {mode.k}")
    pending = [ex for ex in examples if ex.id not in cache.records]
    task = bar.add_task(f"{bench.title} {mode.label}", total=len(pending)) if bar is not None else None
    for start in range(0, len(pending), batch_size):
        batch = pending[start:start + batch_size]
        outputs = generate_fn(batch, mode.k, mode.temperature, mode.greedy, batch_seed(seed, key, mode, batch[0].id))
        outputs = _check_outputs(outputs, batch, mode.k, key)
        cache.add([{"id": ex.id, "fingerprint": fingerprints[ex.id], "completions": comps}
                   for ex, comps in zip(batch, outputs)])
        if bar is not None:
            bar.advance(task, len(batch))
    return cache


def _score_benchmark(bench: Benchmark, examples: list[Example], modes: list[DecodeMode],
                     caches: dict[str, CompletionCache], judge: Judge | None) -> dict:
    """The results.json entry of one benchmark: per-mode summaries and per-item records."""
    entry: dict[str, Any] = {"title": bench.title, "group": bench.group, "spec": bench.spec,
                             "n_items": len(examples), "results": {}, "items": []}
    per_mode_items = {}
    for mode in modes:
        cache = caches[mode.label]
        completions = {ex.id: cache.records[ex.id]["completions"] for ex in examples}
        summary, items = _score_mode(bench, examples, completions, mode, judge)
        summary["cache"] = {"path": str(cache.path), "discarded_torn_lines": cache.discarded_lines,
                            "duplicate_records_ignored": cache.duplicates}
        entry["results"][mode.label] = summary
        per_mode_items[mode.label] = items
    for i, ex in enumerate(examples):
        entry["items"].append({"id": ex.id, "answer": ex.answer,
                               "modes": {label: items[i] for label, items in per_mode_items.items()}})
    return entry


def evaluate(
    benchmarks: Sequence[str | Benchmark],
    generate_fn: GenerateFn,
    *,
    k: int = 8,
    temperature: float = 1.0,
    greedy_pass1: bool = False,
    batch_size: int = 8,
    out_dir: str | Path,
    limit: int | None = None,
    judge: JudgeConfig | None = None,
    progress: bool = True,
    seed: int = 0,
    lenient: bool = False,
    model_info: dict[str, Any] | None = None,
) -> dict:
    """Evaluate `generate_fn` on `benchmarks`; write results.json and report.md to `out_dir`.

    Args:
        benchmarks: spec strings ("mathvista", "mmmu:/data/MMMU", "local:/x.jsonl") or `Benchmark`s.
        generate_fn: `(examples, k, temperature, greedy, seed) -> k completions per example`.
        k: samples per item for avg@k at `temperature`; 0 skips the sampled run (then `greedy_pass1`
            must be set).
        greedy_pass1: also run one greedy completion per item (pass@1).
        batch_size: examples per `generate_fn` call; the cache is made durable after each call.
        out_dir: where caches, results.json and report.md go; reuse it to resume.
        limit: evaluate only the first `limit` items of each benchmark.
        judge: LLM judge for the benchmarks whose protocol uses one (`uses_judge`: MathVista, MathVerse,
            HallusionBench, ...); None uses their offline rule scorers.
        progress: show a rich progress bar.
        seed: base seed; each batch gets `batch_seed(seed, benchmark, setting, first item id)`.
        lenient: score multiple-choice items with the explicit lenient parser
            (`benchmarks.base.score_lenient_choice`) instead of each benchmark's official rule. Those
            numbers are tagged "lenient" and marked not comparable with the papers.
        model_info: what was evaluated (model, max_new_tokens and where it came from, ...), recorded
            under results["settings"]["model"] and shown in the report.

    Returns:
        The results dictionary written to results.json (see `report.summarize` for the summary part).
    """
    if k < 0 or (k == 0 and not greedy_pass1):
        raise ConfigError(f"k must be >= 1 (or 0 with greedy_pass1=True), got k={k}, greedy_pass1={greedy_pass1}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if k and temperature <= 0:
        raise ConfigError(f"temperature must be > 0 for sampled avg@k, got {temperature}; use greedy_pass1 for greedy decoding")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1, got {limit}")
    if isinstance(benchmarks, (str, Benchmark)):
        benchmarks = [benchmarks]
    if not benchmarks:
        raise ConfigError("no benchmarks to evaluate")
    from vlm_opd.train.run_dir import check_dir_path

    out_dir = check_dir_path(out_dir, "out_dir")
    out_dir.mkdir(parents=True, exist_ok=True)

    benches: list[Benchmark] = [b if isinstance(b, Benchmark) else get_benchmark(str(b)) for b in benchmarks]
    for b in benches:
        b.lenient = bool(lenient)
    keys = [_result_key(b) for b in benches]
    dupes = [k_ for k_, n in Counter(keys).items() if n > 1]
    if dupes:
        raise ConfigError(f"benchmark(s) listed twice: {', '.join(dupes)}")
    modes: list[DecodeMode] = []
    if k:
        modes.append(DecodeMode(f"avg@{k}", k, float(temperature), False))
    if greedy_pass1:
        modes.append(DecodeMode("greedy", 1, 0.0, True))
    judge_client = Judge(judge, cache_path=out_dir / "judge_cache.jsonl") if judge is not None else None

    results: dict[str, Any] = {
        "format": CACHE_FORMAT,
        "settings": {"k": k, "temperature": temperature, "greedy_pass1": greedy_pass1, "batch_size": batch_size,
                     "limit": limit, "seed": seed, "judge": judge.model if judge else None,
                     "lenient": bool(lenient), **({"model": model_info} if model_info else {})},
        "modes": [m.label for m in modes],
        "benchmarks": {},
    }
    bar = _progress_bar(progress)
    if bar is not None:
        bar.start()
    try:
        # One benchmark at a time: decoded images of a whole suite would not fit in memory. A bad file
        # in a later benchmark therefore fails after earlier ones are cached; rerunning resumes.
        for key, bench in zip(keys, benches):
            examples = bench.load(limit=limit)
            caches = {mode.label: _generate(bench, key, examples, mode, generate_fn, out_dir, batch_size, seed, bar)
                      for mode in modes}
            for ex in examples:
                ex.images = []  # scoring reads text only
            results["benchmarks"][key] = _score_benchmark(bench, examples, modes, caches, judge_client)
    finally:
        if bar is not None:
            bar.stop()
    write_report(results, out_dir)
    return results
