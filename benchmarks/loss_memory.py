"""Chunked vs naive full-vocabulary reverse KL: peak memory, wall time, agreement.

    python benchmarks/loss_memory.py                 # N=2048, H=512, V=151936 (Qwen vocabulary)
    python benchmarks/loss_memory.py --n 512 --v 32000
    python benchmarks/loss_memory.py --real           # N=2048, H=2048, V=151936 (Qwen3-VL-2B / Qwen2.5-VL-3B width)

Both variants compute per-token reverse KL(student || teacher) from hidden states and lm_head
weights, then backpropagate `sum_i w_i * kl_i` with random non-uniform w_i (as a weighted
VA-OPD loss would) into the student hidden states and weight:
- naive:   logits = hidden @ weight.T as full [N, V] tensors, then `reverse_kl`;
- chunked: `chunked_divergence`, which never builds an [N, V] tensor.

How memory is measured (honestly, for torch on CPU): each variant runs in its own fresh
subprocess. After inputs are built and a tiny warm-up has initialised torch's kernels, the
worker records its current resident set size (RSS, /proc/self/statm); after forward + backward
it reads the high-water mark `resource.getrusage(RUSAGE_SELF).ru_maxrss`. Peak extra memory =
high-water mark - RSS before the op: every page the op touched, including torch's allocator
slack and the gradients it produced. (tracemalloc cannot see torch's allocations, and torch's
own CPU allocator statistics are off by default.) The worker checks that the high-water mark
before the op did not exceed the RSS then, so the difference belongs to the op.

The last line printed is one JSON object: memory_ratio (chunked / naive peak extra memory),
time_ratio (chunked / naive wall time of forward + backward), max_grad_rel_diff, raw numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _inputs(n: int, h: int, v: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    # Scales give logits of O(1-10), like a trained lm_head, so the KL is not degenerate.
    hs = torch.randn(n, h, generator=g)
    # In-place scaling: a `randn * s` temporary would raise the RSS high-water mark before the op.
    ws = torch.randn(v, h, generator=g).mul_(2.0 / h**0.5)
    ht = torch.randn(n, h, generator=g)
    wt = torch.randn(v, h, generator=g).mul_(2.0 / h**0.5)
    weights = torch.rand(n, generator=g) + 0.5  # non-uniform upstream gradient
    return hs.requires_grad_(), ws.requires_grad_(), ht, wt, weights


def worker(args: argparse.Namespace) -> None:
    from vlm_opd.algorithms import chunked_divergence, reverse_kl

    torch.set_num_threads(args.threads)
    hs, ws, ht, wt, weights = _inputs(args.n, args.h, args.v, args.seed)
    # Warm-up on tiny shapes so lazy kernel / thread-pool initialisation is not charged to the op.
    a = torch.randn(8, 4, requires_grad=True)
    b = torch.randn(16, 4)
    chunked_divergence(a, b, a.detach(), b, chunk_size=4).sum().backward()
    reverse_kl(a @ b.T, (a @ b.T).detach()).sum().backward()

    rss_before = _rss_bytes()
    maxrss_before = _maxrss_bytes()
    start = time.perf_counter()
    if args.worker == "naive":
        values = reverse_kl(hs @ ws.T, ht @ wt.T)
    else:
        values = chunked_divergence(hs, ws, ht, wt, kind="reverse_kl", chunk_size=args.chunk_size)
    loss = (values * weights).sum()
    loss.backward()
    seconds = time.perf_counter() - start
    peak_extra = _maxrss_bytes() - rss_before
    torch.save(
        {"values": values.detach(), "grad_h": hs.grad, "grad_w": ws.grad},
        args.out,
    )
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_extra_bytes": peak_extra,
                "rss_before_bytes": rss_before,
                "maxrss_before_exceeded_rss_by_bytes": max(maxrss_before - rss_before, 0),
                "loss": float(loss),
            }
        )
    )


def _run(variant: str, args: argparse.Namespace, out: Path) -> dict:
    cmd = [
        sys.executable, __file__, "--worker", variant, "--out", str(out),
        "--n", str(args.n), "--h", str(args.h), "--v", str(args.v),
        "--chunk-size", str(args.chunk_size), "--threads", str(args.threads), "--seed", str(args.seed),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{variant} worker failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _rel(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(max |a-b| / max |b|, ||a-b||_2 / ||b||_2), both in float64."""
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max()), float((a - b).norm() / b.norm())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=2048, help="tokens (rows)")
    p.add_argument("--h", type=int, default=512, help="hidden size (student and teacher)")
    p.add_argument("--v", type=int, default=151936, help="vocabulary size")
    p.add_argument("--chunk-size", type=int, default=256, help="rows per chunk for the chunked variant")
    p.add_argument("--threads", type=int, default=1, help="torch threads in each worker")
    p.add_argument("--repeats", type=int, default=1, help="runs per variant, alternating; the fastest counts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--real", action="store_true",
                   help="real width: H=2048 (Qwen3-VL-2B / Qwen2.5-VL-3B hidden size), V=151936, N=2048 "
                        "unless --n is given; the naive variant then needs ~11 GB")
    p.add_argument("--worker", choices=["naive", "chunked"], help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.real:
        args.h, args.v = 2048, 151936
    if args.worker:
        worker(args)
        return

    results: dict[str, list[dict]] = {"naive": [], "chunked": []}
    with tempfile.TemporaryDirectory() as tmp:
        outs = {name: Path(tmp) / f"{name}.pt" for name in results}
        for _ in range(args.repeats):
            for name in ("naive", "chunked"):  # alternate so machine noise hits both
                r = _run(name, args, outs[name])
                results[name].append(r)
                print(f"{name:8s} {r['seconds']:8.2f} s  peak extra {r['peak_extra_bytes'] / 2**20:9.1f} MiB", flush=True)
        naive, chunked = torch.load(outs["naive"]), torch.load(outs["chunked"])

    best = {name: min(rs, key=lambda r: r["seconds"]) for name, rs in results.items()}
    mem = {name: min(r["peak_extra_bytes"] for r in rs) for name, rs in results.items()}
    grad_h_max, grad_h_norm = _rel(chunked["grad_h"], naive["grad_h"])
    grad_w_max, grad_w_norm = _rel(chunked["grad_w"], naive["grad_w"])
    summary = {
        "real": bool(args.real), "n": args.n, "h": args.h, "v": args.v, "chunk_size": args.chunk_size,
        "threads": args.threads,
        "naive_seconds": best["naive"]["seconds"],
        "chunked_seconds": best["chunked"]["seconds"],
        "naive_peak_extra_mib": mem["naive"] / 2**20,
        "chunked_peak_extra_mib": mem["chunked"] / 2**20,
        "memory_ratio": mem["chunked"] / mem["naive"],
        "time_ratio": best["chunked"]["seconds"] / best["naive"]["seconds"],
        "max_value_abs_diff": float((chunked["values"] - naive["values"]).abs().max()),
        "loss_abs_diff": abs(best["chunked"]["loss"] - best["naive"]["loss"]),
        "grad_hidden_rel_diff_max": grad_h_max,
        "grad_weight_rel_diff_max": grad_w_max,
        "grad_hidden_rel_diff_l2": grad_h_norm,
        "grad_weight_rel_diff_l2": grad_w_norm,
        "max_grad_rel_diff": max(grad_h_max, grad_w_max),
        "maxrss_before_exceeded_rss_mib": max(
            r["maxrss_before_exceeded_rss_by_bytes"] for rs in results.values() for r in rs
        ) / 2**20,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
