"""Sampler throughput: `vlm_opd.rollout.sample` vs raw `model.generate` on the same batch.

Both sides sample the same prompts (P prompts x K samples, left-padded, images included) with the
same max_new_tokens on the same tiny model; each is repeated a few times, interleaved, and the
median wall time is used. The library side is measured end to end (prompt encoding, generate with
log-prob recording and token suppression, masking, decoding); the raw side is `model.generate` on
pre-encoded inputs, so the ratio charges every extra the library does.

Tokens/s counts generated positions (rows x steps). The last line printed is one JSON object with
`tokens_per_s_ratio` (library / raw; target >= 0.9) and the raw numbers.

`--backend vllm` (in an environment with vLLM: `.venv-vllm` here, the `vllm` extra on a GPU) also
times `sample(..., backend=VLLMBackend)` on the same prompts, interleaved with the other two, and
reports `vllm_tokens_per_s` beside `library_tokens_per_s` (the HF backend) and `vllm_vs_hf_ratio`.
The vLLM side is pure sampling (`score_policy=False`; training re-scores the T=1 policy log-probs
with the HF model on top). On a CPU the number only shows that it runs; speed needs a GPU.

    .venv/bin/python benchmarks/rollout.py [--family qwen2_5_vl] [--prompts 8] [--k 4] [--new 64]
    .venv-vllm/bin/python benchmarks/rollout.py --backend vllm
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from vlm_opd.data.example import Example  # noqa: E402
from vlm_opd.models import build_tiny, encode_prompts  # noqa: E402
from vlm_opd.models.prompts import image_counts  # noqa: E402
from vlm_opd.rollout import expand_prompts, sample  # noqa: E402


def _examples(n: int, seed: int = 0) -> list[Example]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        side = 56 if i % 2 == 0 else 84
        img = Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8))
        out.append(Example(f"What is {i} + {i + 1}? <image>", [img], id=f"bench-{i}"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="qwen2_5_vl")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--new", type=int, default=64, help="max_new_tokens")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backend", default="hf", choices=["hf", "vllm"],
                    help="vllm: also time the vLLM backend side by side with the HF one")
    ap.add_argument("--vllm-kv-cache-bytes", type=int, default=256 << 20,
                    help="vLLM KV cache size (CPU build); 0 = vLLM's default gpu_memory_utilization share")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        # No EOS boost: random tiny models almost never sample EOS, so both sides run all steps.
        lm = build_tiny(args.family, tmp, text_hidden=args.hidden, text_layers=2)
        examples = _examples(args.prompts)
        enc = encode_prompts(lm, examples)
        index = torch.arange(len(examples)).repeat_interleave(args.k)
        rows = expand_prompts(enc, image_counts(examples), index)
        raw_kwargs = dict(max_new_tokens=args.new, do_sample=True, top_k=0, top_p=1.0, temperature=1.0)

        def run_raw() -> tuple[float, int]:
            t0 = time.perf_counter()
            with torch.no_grad():
                seq = lm.model.generate(**rows, **raw_kwargs)
            return time.perf_counter() - t0, (seq.shape[1] - rows["input_ids"].shape[1]) * seq.shape[0]

        def run_lib() -> tuple[float, int]:
            t0 = time.perf_counter()
            r = sample(lm, examples, k=args.k, max_new_tokens=args.new, seed=0)
            return time.perf_counter() - t0, r.completion_ids.numel()

        engine = None
        if args.backend == "vllm":
            from vlm_opd.rollout.vllm_backend import VLLMBackend, write_video_processor_config

            write_video_processor_config(tmp)
            kv = {"kv_cache_memory_bytes": args.vllm_kv_cache_bytes} if args.vllm_kv_cache_bytes else {}
            engine = VLLMBackend(tmp, dtype="float32", max_model_len=1024, **kv)

        def run_vllm() -> tuple[float, int]:
            t0 = time.perf_counter()
            r = sample(lm, examples, k=args.k, max_new_tokens=args.new, seed=0, backend=engine, score_policy=False)
            return time.perf_counter() - t0, r.completion_ids.numel()

        run_raw(), run_lib()  # warm-up
        if engine is not None:
            run_vllm()  # engine start-up and first-call compilation are not throughput
        raw_t, lib_t, raw_n, lib_n, vl_t, vl_n = [], [], [], [], [], []
        for _ in range(args.repeats):
            t, n = run_raw()
            raw_t.append(t), raw_n.append(n)
            t, n = run_lib()
            lib_t.append(t), lib_n.append(n)
            if engine is not None:
                t, n = run_vllm()
                vl_t.append(t), vl_n.append(n)

    raw_tps = statistics.median(n / t for n, t in zip(raw_n, raw_t))
    lib_tps = statistics.median(n / t for n, t in zip(lib_n, lib_t))
    result = {
        "tokens_per_s_ratio": round(lib_tps / raw_tps, 4),
        "library_tokens_per_s": round(lib_tps, 1),
        "raw_tokens_per_s": round(raw_tps, 1),
        "library_median_s": round(statistics.median(lib_t), 4),
        "raw_median_s": round(statistics.median(raw_t), 4),
        "library_tokens": lib_n,
        "raw_tokens": raw_n,
        "family": args.family,
        "rows": len(index),
        "max_new_tokens": args.new,
        "text_hidden": args.hidden,
        "threads": args.threads,
        "repeats": args.repeats,
    }
    line = f"library {lib_tps:.0f} tok/s, raw generate {raw_tps:.0f} tok/s"
    if vl_t:
        vl_tps = statistics.median(n / t for n, t in zip(vl_n, vl_t))
        result.update(vllm_tokens_per_s=round(vl_tps, 1), hf_tokens_per_s=round(lib_tps, 1),
                      vllm_vs_hf_ratio=round(vl_tps / lib_tps, 4), vllm_median_s=round(statistics.median(vl_t), 4),
                      vllm_tokens=vl_n, device="cpu" if not torch.cuda.is_available() else "cuda")
        line += f", vllm backend {vl_tps:.0f} tok/s (hf backend {lib_tps:.0f})"
    print(line)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
