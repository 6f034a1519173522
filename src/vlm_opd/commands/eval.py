"""`vlm-opd eval`: evaluate a model, a training run or a checkpoint on the papers' benchmarks (avg@k)."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

RUN_FILE = "eval_run.json"  # identity of the model and generation settings behind an --out directory
DEFAULT_MAX_NEW_TOKENS = 1024  # for models that are not training runs of this project
FIXTURE_MARKER = "VLM_OPD_FIXTURES"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a model / training run / checkpoint on the benchmarks (avg@k, paper protocol)",
        description=(
            "Sample k completions per item (paper default: k=8 at temperature 1.0), score them with each "
            "benchmark's official rule, print the Math / Visual table with group averages and unparsed "
            "counts, and save results.json + report.md in --out. Completions are cached under --out: "
            "rerunning the same command resumes and never regenerates what is cached. --model accepts a "
            "model directory, a hub name, a training output directory (its final/ model) or a step "
            "checkpoint <output_dir>/checkpoints/step-N (accelerate state; the base model's config, "
            "tokenizer and processor come from student.path in the run's config.yaml, or --base-model)."
        ),
    )
    p.add_argument("--model", help="model dir, hub name, training output dir, or checkpoint dir")
    p.add_argument("--benchmarks", help="comma-separated: benchmark names (mathvista, ...), suites (va-opd, vold, "
                                        "all), name:/local/path, local:/path/to/eval.jsonl")
    p.add_argument("--data-dir", help="directory of local copies: a benchmark given without a path is read "
                                      "from DATA_DIR/<name>")
    p.add_argument("--k", type=int, default=8, help="samples per item for avg@k (paper: 8); 0 with --greedy: "
                                                   "greedy only")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (paper: 1.0)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    p.add_argument("--greedy", action="store_true", help="also report greedy pass@1")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="completion length cap (default: what the training run generated with when MODEL is a run, "
                        "final/ or checkpoint of this project: rollout.max_new_tokens, or sft.max_length for "
                        f"sft/kd; else {DEFAULT_MAX_NEW_TOKENS})")
    p.add_argument("--limit", type=int, default=None, help="only the first N items of each benchmark")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per generation batch (x k rows); the "
                                                             "cache is flushed after each batch")
    p.add_argument("--out", help="output directory (default: eval_results/<model name>); reuse it to resume. "
                                 "It is locked while the eval runs; a directory holding anything but this "
                                 "eval's own files is refused unless --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the eval files in --out (results.json, report.md, cache/, judge_cache.jsonl, "
                        f"{RUN_FILE}) even if they belong to another model or setting, or are not an eval's")
    p.add_argument("--judge-url", help="OpenAI-compatible API for the LLM step (extraction / judgement) of the benchmarks "
                                       "whose official protocol has one; without it an offline rule stands in and "
                                       "those numbers are marked not comparable")
    p.add_argument("--judge-model", help="judge model name (e.g. gpt-4o-2024-08-06)")
    p.add_argument("--judge-key-env", default="OPENAI_API_KEY",
                   help="environment variable holding the judge API key ('none': send no key)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="model dtype (auto: as saved)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda if available)")
    p.add_argument("--attn-implementation", default=None, help="eager | sdpa | flash_attention_2")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (same seed, same completions)")
    p.add_argument("--backend", default="hf", choices=["hf", "vllm"],
                   help="sampling engine: hf (transformers generate) or vllm (needs the vllm extra; same "
                        "distribution, different random streams, so completions differ from hf's)")
    p.add_argument("--vllm-gpu-memory-utilization", type=float, default=0.85,
                   help="--backend vllm: share of GPU memory for the engine (weights + KV cache)")
    p.add_argument("--vllm-max-model-len", type=int, default=None,
                   help="--backend vllm: longest prompt + completion in tokens (default: the model's limit)")
    p.add_argument("--vllm-tensor-parallel-size", type=int, default=1, help="--backend vllm: GPUs per engine")
    p.add_argument("--vllm-kv-cache-bytes", type=int, default=None,
                   help="--backend vllm: fixed KV-cache size in bytes instead of the memory share (CPU build)")
    p.add_argument("--vllm-enforce-eager", action="store_true", help="--backend vllm: no CUDA graphs")
    p.add_argument("--system-prompt", default=None,
                   help="system message for every prompt (default: the training run's data.system_prompt when "
                        "MODEL is a run directory, else none; pass '' for none)")
    p.add_argument("--base-model", default=None, help="for a checkpoint: model dir/hub name supplying config, "
                                                       "tokenizer and processor (default: student.path of the run)")
    p.add_argument("--write-fixtures", metavar="DIR", default=None,
                   help="write tiny copies of every benchmark (official schemas) to DIR for a smoke test; "
                        "without --model, stop there")
    p.add_argument("--lenient", action="store_true",
                   help="score multiple-choice items with the NON-official lenient parser (MMMU rule plus lowercase "
                        "letters, markdown, 'X)' labels, option text) instead of each benchmark's official rule; "
                        "such numbers are tagged 'lenient' and marked not comparable with the papers")
    p.add_argument("--all-checkpoints", action="store_true",
                   help="MODEL is a training output directory: evaluate every kept checkpoint and final/, each into "
                        "OUT/<step-N|final>/, and report the best by --select-by (OUT/checkpoints.md)")
    p.add_argument("--select-by", default="mean",
                   help="with --all-checkpoints: mean (of all benchmarks' headline scores), a group average (Math, "
                        "Visual, VOLD) or a benchmark name; selected in the first decoding mode")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


# ------------------------------------------------------------------------------------------------
# Benchmarks


def _squash(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.strip().lower())


def expand_benchmarks(text: str, data_dir: str | Path | None) -> list[str]:
    """Spec strings for the runner from the --benchmarks list: suites expanded, --data-dir paths filled
    in, duplicates dropped, and every name and local path checked before anything is loaded."""
    from vlm_opd.errors import ConfigError, DataError
    from vlm_opd.eval.benchmarks import BENCHMARKS, PAPER_SUITES, TABLE_ORDER, get_benchmark

    suites = {_squash(name): members for name, members in PAPER_SUITES.items()}
    suites["all"] = list(TABLE_ORDER)
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise ConfigError("--benchmarks is empty; name benchmarks (e.g. mathvista,mmmu) or a suite (va-opd, vold, all)")
    specs: list[str] = []
    seen: set[str] = set()
    for item in items:
        name, sep, _ = item.partition(":")
        for spec in suites[_squash(name)] if not sep and _squash(name) in suites else [item]:
            name, sep, path = spec.partition(":")
            key = re.sub(r"[\s\-]+", "_", name.strip().lower())
            if key not in BENCHMARKS:
                try:
                    get_benchmark(spec)  # raises the did-you-mean error
                except ConfigError as err:
                    raise ConfigError(f"{err} Suites: {', '.join(sorted(PAPER_SUITES))}, all.") from None
            if not sep and data_dir is not None:
                local = Path(data_dir).expanduser() / key
                if not local.exists():
                    raise DataError(f"missing benchmark files: no copy of {key} at {local} (from --data-dir); "
                                    f"pass {key}:/path/to/it, or write smoke-test copies with --write-fixtures DIR")
                spec = f"{key}:{local}"
            elif sep and path.strip() and not Path(path.strip()).expanduser().exists():
                raise DataError(f"missing benchmark files: {path.strip()} (given for {name}) does not exist")
            get_benchmark(spec)  # e.g. 'local' without a path
            dedupe = spec if key == "local" else key
            if dedupe not in seen:
                seen.add(dedupe)
                specs.append(spec)
    return specs


# ------------------------------------------------------------------------------------------------
# Helpers


def _default_out(source) -> Path:
    if source.kind == "hub":
        slug = source.model.replace("/", "--")
    elif source.kind == "checkpoint":
        ckpt = source.checkpoint
        run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
        slug = f"{run.name}-{ckpt.name}"
    else:
        model_dir = Path(source.model)
        slug = model_dir.name
        if model_dir.name == "final":  # <run>/final, or <run>/stage1-vold/final of a multi-stage run
            run = model_dir.parent
            slug = f"{run.parent.name}-{run.name}-final" if run.name.startswith("stage") else f"{run.name}-final"
    return Path("eval_results") / re.sub(r"[^A-Za-z0-9_.-]+", "_", slug)


EVAL_ARTIFACTS = (RUN_FILE, "results.json", "report.md", "cache", "judge_cache.jsonl")


def _claim_out(out: Path, overwrite: bool) -> None:
    """--out must be empty or hold this eval's files; --overwrite removes the eval files found there."""

    from vlm_opd.errors import ConfigError
    from vlm_opd.train.run_dir import LOCK_NAME, remove_artifacts

    contents = sorted(p.name for p in out.iterdir() if not p.name.startswith((LOCK_NAME, f".{LOCK_NAME}.")))
    if overwrite:
        remove_artifacts(out, EVAL_ARTIFACTS, "--overwrite")
        return
    if contents and RUN_FILE not in contents:
        shown = ", ".join(contents[:5]) + (" ..." if len(contents) > 5 else "")
        raise ConfigError(f"--out {out} already holds files that are not this eval's ({shown}); choose: another "
                          "--out, or --overwrite to replace the eval files there")


def _check_run_identity(out: Path, identity: dict) -> None:
    """Refuse an --out whose caches came from another model or generation setting: the runner's
    caches are keyed by benchmark, k, temperature and seed only, and would otherwise be reused."""
    import json

    from vlm_opd.errors import ConfigError
    from vlm_opd.eval.io import atomic_write_json

    path = out / RUN_FILE
    if path.exists():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            before = None
        if before != identity:
            if isinstance(before, dict):
                changed = sorted(k for k in set(identity) | set(before) if before.get(k) != identity.get(k))
            else:
                changed = [f"{RUN_FILE} unreadable"]
            raise ConfigError(
                f"--out {out} holds completions of another model or generation setting "
                f"(differs in: {', '.join(changed)}; see {path}); use another --out, or --overwrite to start over"
            )
        return
    atomic_write_json(path, identity)


def _write_fixtures(directory: str) -> list[str]:
    from vlm_opd.errors import ConfigError
    from vlm_opd.eval.fixtures import _WRITERS, write_all_fixtures

    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise ConfigError(f"--write-fixtures {d} is a file")
    clobber = [n for n in _WRITERS if (d / n).exists()]
    if clobber and not (d / FIXTURE_MARKER).exists():
        raise ConfigError(f"--write-fixtures {d} already holds {', '.join(clobber)} that were not written as "
                          "fixtures; pick an empty directory (real benchmark copies would be overwritten)")
    d.mkdir(parents=True, exist_ok=True)
    (d / FIXTURE_MARKER).write_text("written by `vlm-opd eval --write-fixtures`: tiny benchmark copies\n")
    return write_all_fixtures(d)


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _table(report: str) -> str:
    """The report without its per-metric details section (that stays in report.md)."""
    return report.split("\n## Details", 1)[0].rstrip() + "\n"


# ------------------------------------------------------------------------------------------------


def generation_length(args: argparse.Namespace, source) -> tuple[int, str]:
    """The completion length cap and where it came from: --max-new-tokens, else the training run's own
    generation length (`generate.trained_generation_length`), else DEFAULT_MAX_NEW_TOKENS."""
    from vlm_opd.eval.generate import trained_generation_length

    if args.max_new_tokens is not None:
        return args.max_new_tokens, "--max-new-tokens"
    trained = trained_generation_length(source.run_config)
    if trained is not None:
        return trained
    return DEFAULT_MAX_NEW_TOKENS, "default (the model is not a training run of this project)"


def run(args: argparse.Namespace) -> int:
    from vlm_opd.errors import ConfigError

    if args.write_fixtures:
        specs = _write_fixtures(args.write_fixtures)
        print(f"wrote {len(specs)} benchmark fixtures to {args.write_fixtures}:")
        for spec in specs:
            print(f"  {spec}")
        if not args.model:
            print(f"evaluate on them with: vlm-opd eval --model MODEL --benchmarks all,local "
                  f"--data-dir {args.write_fixtures} --k 2 --max-new-tokens 64")
            return 0
        if args.data_dir is None:
            args.data_dir = args.write_fixtures
    if not args.model:
        raise ConfigError("--model is required (a model dir, hub name, training output dir or checkpoint dir)")
    if not args.benchmarks:
        raise ConfigError("--benchmarks is required (e.g. va-opd, vold, mathvista,mmmu, local:/path/eval.jsonl)")
    if args.k < 0 or (args.k == 0 and not args.greedy):
        raise ConfigError(f"--k must be >= 1 (or 0 together with --greedy for greedy pass@1 only), got {args.k}")
    if args.k and args.temperature <= 0:
        raise ConfigError(f"--temperature must be > 0 for sampled avg@k, got {args.temperature}; use --greedy")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if not 0 < args.top_p <= 1:
        raise ConfigError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if bool(args.judge_url) != bool(args.judge_model):
        raise ConfigError("--judge-url and --judge-model go together (an OpenAI-compatible endpoint and its model)")
    if args.data_dir is not None and not Path(args.data_dir).expanduser().is_dir():
        raise ConfigError(f"--data-dir {args.data_dir} is not a directory")

    from vlm_opd.eval import JudgeConfig
    from vlm_opd.eval.generate import resolve_model

    specs = expand_benchmarks(args.benchmarks, args.data_dir)
    judge = None
    if args.judge_url:
        key_env = None if args.judge_key_env.lower() == "none" else args.judge_key_env
        judge = JudgeConfig(url=args.judge_url, model=args.judge_model, api_key_env=key_env)
    if args.all_checkpoints:
        return _run_all_checkpoints(args, specs, judge)
    source = resolve_model(args.model, base_model=args.base_model)
    out = Path(args.out) if args.out else _default_out(source)
    _evaluate_source(args, source, specs, judge, out)
    return 0


def _evaluate_source(args: argparse.Namespace, source, specs: list[str], judge, out: Path) -> dict:
    """Evaluate one resolved model into `out`; print the table; return the results."""
    # A model is evaluated with the system prompt it was trained with, unless told otherwise.
    system_prompt = args.system_prompt
    run_prompt = ((source.run_config or {}).get("data") or {}).get("system_prompt")
    if system_prompt is None and run_prompt:
        system_prompt = run_prompt
        print(f"using the run's data.system_prompt={run_prompt!r} (--system-prompt '' for none)", file=sys.stderr)
    system_prompt = system_prompt or None
    # ... and with the completion length it was trained to produce.
    max_new_tokens, length_source = generation_length(args, source)
    print(f"max_new_tokens={max_new_tokens} ({length_source})", file=sys.stderr)
    from vlm_opd.train.run_dir import DirLock, check_dir_path

    check_dir_path(out, "--out")
    out.mkdir(parents=True, exist_ok=True)
    with DirLock(out, "--out"):  # one eval per --out at a time, for the whole eval
        _claim_out(out, args.overwrite)
        return _evaluate_into(args, source, specs, judge, out, system_prompt, max_new_tokens, length_source)


def _evaluate_into(args: argparse.Namespace, source, specs: list[str], judge, out: Path, system_prompt: str | None,
                   max_new_tokens: int, length_source: str) -> dict:
    from vlm_opd.eval import evaluate, render_markdown
    from vlm_opd.eval.generate import load_eval_model, make_generate_fn

    _check_run_identity(out, {
        "model": source.description, "weights_fingerprint": source.fingerprint(), "dtype": args.dtype,
        "max_new_tokens": max_new_tokens, "top_p": args.top_p, "system_prompt": system_prompt,
        # Recorded only for vLLM, so --out directories written before --backend existed still resume.
        **({"backend": "vllm"} if args.backend == "vllm" else {}),
    })
    print(f"evaluating {source.description} on {len(specs)} benchmark(s); results in {out}", file=sys.stderr)

    # The model is loaded on the first batch that is not cached: a fully cached rerun (e.g. to rescore
    # with a judge) never loads it.
    loaded: dict = {}

    def generate_fn(examples, k, temperature, greedy, seed):
        if "fn" not in loaded:
            lm = load_eval_model(source, dtype=args.dtype, device=_device(args.device),
                                 attn_implementation=args.attn_implementation)
            loaded["fn"] = make_generate_fn(lm, max_new_tokens=max_new_tokens, top_p=args.top_p,
                                            batch_prompts=args.batch_size, system_prompt=system_prompt,
                                            backend=_vllm_backend(args, source, lm) if args.backend == "vllm" else None)
        return loaded["fn"](examples, k, temperature, greedy, seed)

    model_info = {"model": source.description, "max_new_tokens": max_new_tokens,
                  "max_new_tokens_source": length_source, "top_p": args.top_p, "system_prompt": system_prompt}
    if args.backend == "vllm":
        print("sampling with vLLM (--backend vllm)", file=sys.stderr)
    results = evaluate(specs, generate_fn, k=args.k, temperature=args.temperature, greedy_pass1=args.greedy,
                       batch_size=args.batch_size, out_dir=out, limit=args.limit, judge=judge,
                       progress=not args.no_progress, seed=args.seed, lenient=args.lenient, model_info=model_info)
    print(_table(render_markdown(results)))
    if "fn" in loaded:
        st = loaded["fn"].stats
        rate = st["tokens"] / st["seconds"] if st["seconds"] > 0 else 0.0
        print(f"generated {st['completions']} completions ({st['prompts']} prompts) in {st['seconds']:.1f} s "
              f"({st['tokens']} tokens, {rate:.0f} tokens/s); {st['unfinished']} hit max_new_tokens "
              f"{max_new_tokens} unfinished")
    else:
        print("all completions came from the cache (nothing generated)")
    print(f"results: {out / 'results.json'}\nreport: {out / 'report.md'}")
    if loaded:  # release the model before the next checkpoint of --all-checkpoints is loaded
        loaded.clear()
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return results


def _run_all_checkpoints(args: argparse.Namespace, specs: list[str], judge) -> int:
    """--all-checkpoints: every kept checkpoint and final/ of a run, then the table and the best."""
    from vlm_opd.eval.benchmarks import get_benchmark
    from vlm_opd.eval.checkpoints import (
        SELECTION_NOTE,
        check_select_by,
        checkpoint_rows,
        render_checkpoints,
        run_checkpoints,
        select_best,
    )
    from vlm_opd.eval.generate import resolve_model
    from vlm_opd.eval.io import atomic_write_json, atomic_write_text
    from vlm_opd.train.best import read_best

    keys = []
    for spec in specs:
        bench = get_benchmark(spec)
        keys.append(bench.title if bench.name == "local" else bench.name)
    check_select_by(args.select_by, keys)
    run_dir, entries = run_checkpoints(args.model)
    out = Path(args.out) if args.out else Path("eval_results") / (re.sub(r"[^A-Za-z0-9_.-]+", "_", run_dir.name)
                                                                  + "-checkpoints")
    print(f"evaluating {len(entries)} checkpoint(s) of {run_dir}: {', '.join(e[0] for e in entries)}",
          file=sys.stderr)
    evaluated = []
    for label, path, step in entries:
        print(f"\n== {label}", file=sys.stderr)
        source = resolve_model(path, base_model=args.base_model)
        results = _evaluate_source(args, source, specs, judge, out / label)
        evaluated.append({"label": label, "path": path, "step": step, "out": out / label, "results": results})
    rows, mode = checkpoint_rows(evaluated, args.select_by)
    best = select_best(rows)
    training_best = read_best(run_dir)
    text = render_checkpoints(rows, evaluated[0]["results"], args.select_by, mode, best, training_best)

    atomic_write_json(out / "checkpoints.json", {
        "run": str(run_dir), "mode": mode, "select_by": args.select_by, "checkpoints": rows,
        "best": None if best is None else rows[best], "training_best": training_best, "note": SELECTION_NOTE,
    })
    atomic_write_text(out / "checkpoints.md", text)
    print("\n" + text)
    print(f"checkpoints: {out / 'checkpoints.json'}\ntable: {out / 'checkpoints.md'}")
    return 0


def _vllm_backend(args: argparse.Namespace, source, lm):
    """A vLLM engine for `vlm-opd eval --backend vllm`, holding exactly the weights `lm` holds.

    The engine is built from the model directory that supplies config, tokenizer and processor (for a
    step checkpoint: the run's base model) and then takes the loaded weights (checkpoint, merged LoRA),
    so every kind of source evaluates the same weights as `--backend hf` would.
    """
    import torch

    from vlm_opd.rollout.vllm_backend import VLLMBackend, check_model_dir

    if Path(source.model).is_dir():
        check_model_dir(source.model, write_missing=True)
    dtypes = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
    backend = VLLMBackend(
        source.model, dtype=dtypes.get(next(lm.model.parameters()).dtype, "auto"),
        gpu_memory_utilization=args.vllm_gpu_memory_utilization, max_model_len=args.vllm_max_model_len,
        tensor_parallel_size=args.vllm_tensor_parallel_size, kv_cache_memory_bytes=args.vllm_kv_cache_bytes,
        enforce_eager=args.vllm_enforce_eager, sleep=False, max_images_per_prompt=8, seed=args.seed,
    )
    if source.kind == "checkpoint":
        backend.pending_model = lm.model  # the checkpoint's weights, not the base model's
    return backend
