"""Sampling under FSDP2: all units gathered once (what the trainer does) vs generating through the sharded model.

    .venv/bin/python benchmarks/fsdp_sampling.py                      # tiny Qwen2-VL, 2 CPU processes (gloo)
    .venv/bin/python benchmarks/fsdp_sampling.py --model DIR --new 64 # any model directory

Rollouts end at different lengths on different processes. Generating through a sharded model needs
every process to run the same number of forward passes (transformers' `synced_gpus=True` keeps the
finished ones stepping), and each decoding step all-gathers every layer: for T new tokens, T x layers
all-gathers of the whole model. `fsdp.gathered` all-gathers every unit once, then each process decodes
alone. Both are measured side by side on the same sharded model, same prompts (different per process,
so one finishes early), same number of new tokens; the ratio is lockstep time / gathered time (the
slower process's wall time each). The cost of gathering is memory: one whole copy of the model per
process while sampling, reported as `gathered_extra_mib` (parameters gathered beyond the shards).

Launched plainly it re-launches itself with `torchrun --nproc_per_node 2` (CPU, gloo) and prints the
JSON of process 0 as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="model directory (default: a tiny Qwen2-VL built in a temporary directory)")
    p.add_argument("--new", type=int, default=48, help="max new tokens per rollout")
    p.add_argument("--rows", type=int, default=4, help="rollouts per process")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of each way (median)")
    p.add_argument("--nproc", type=int, default=2, help="processes")
    return p.parse_args(argv)


def worker(args: argparse.Namespace) -> None:
    import torch.distributed as dist

    from vlm_opd.train import fsdp

    dist.init_process_group("gloo")
    out = _measure(args, dist.get_rank())  # the models are gone when it returns
    if dist.get_rank() == 0:
        print(json.dumps(out), flush=True)
    fsdp.close_process_group()


def _measure(args: argparse.Namespace, rank: int) -> dict:
    import torch
    import torch.distributed as dist

    from vlm_opd.models import load_model
    from vlm_opd.train import fsdp

    torch.manual_seed(rank)
    lm = load_model(args.model)
    model = lm.model
    model.eval()
    fsdp.shard_model(model, torch.device("cpu"))
    local_bytes = sum(p.to_local().numel() * p.element_size() for p in model.parameters())
    whole_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    texts = [f"Question {rank}-{i}: how many bars are there in the chart? Think step by step." * (1 + rank)
             for i in range(args.rows)]
    enc = lm.tokenizer(texts, return_tensors="pt", padding=True)
    # Process 1 stops early (EOS allowed after a few tokens), process 0 runs to --new tokens: uneven lengths.
    eos = lm.tokenizer.eos_token_id
    kw = dict(max_new_tokens=args.new, do_sample=True, top_k=0, pad_token_id=eos,
              eos_token_id=eos if rank == 1 else None, min_new_tokens=args.new if rank == 0 else 4)

    def gathered() -> int:
        with torch.no_grad(), fsdp.gathered(model):
            out = model.generate(**enc, **kw)
        return out.shape[1] - enc["input_ids"].shape[1]

    def lockstep() -> int:
        with torch.no_grad():
            out = model.generate(**enc, synced_gpus=True, **kw)
        fsdp.release(model)
        return out.shape[1] - enc["input_ids"].shape[1]

    times: dict[str, list[float]] = {"gathered": [], "lockstep": []}
    lengths = {}
    for _ in range(args.repeats):
        for name, fn in (("gathered", gathered), ("lockstep", lockstep)):
            dist.barrier()
            t0 = time.perf_counter()
            lengths[name] = fn()
            dist.barrier()  # the slower process decides the step's time
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"model": args.model, "processes": dist.get_world_size(), "rows_per_process": args.rows,
           "max_new_tokens": args.new, "new_tokens_rank0": lengths["gathered"],
           "gathered_s": med["gathered"], "lockstep_s": med["lockstep"],
           "lockstep_over_gathered": med["lockstep"] / med["gathered"],
           "shard_mib": local_bytes / 2**20, "gathered_extra_mib": (whole_bytes - local_bytes) / 2**20,
           "repeats": args.repeats}
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if "RANK" in os.environ:
        worker(args)
        return 0
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            from vlm_opd.models import build_tiny

            args.model = str(Path(tmp) / "tiny")
            build_tiny("qwen2_vl", args.model, seed=0)
        cmd = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", str(args.nproc), __file__,
               "--model", args.model, "--new", str(args.new), "--rows", str(args.rows), "--repeats", str(args.repeats)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        res = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if res.returncode != 0:
            print(res.stderr, file=sys.stderr)  # all of it: the failing rank's own message comes before torchrun's summary
            return res.returncode
        print([line for line in res.stdout.splitlines() if line.startswith("{")][-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
