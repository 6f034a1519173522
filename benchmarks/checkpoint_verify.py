"""What checkpoint verification costs: the manifest (size + checksum of every file: xxh3-64, CRC-32 before) against save and load.

Saves an accelerate checkpoint of a model with `--params` float32 parameters plus its AdamW state (so about
12 bytes per parameter on disk) through the trainer's `save_checkpoint`, then times, side by side and
`--repeats` times each:
  save    accelerator.save_state (+ fsync of every file, as a durable save needs)
  manifest  write_manifest (read back every file, xxh3-64)
  load    accelerator.load_state
  verify  verify_checkpoint (the check `resume: latest` does before loading)
and the raw throughput of the candidate checksums on 256 MiB in memory. Files are in the page cache
(just written), which is the case right after a save; on a cold cache verification reads the files
from disk first and the load that follows then reads them from the cache.

    python benchmarks/checkpoint_verify.py [--params 25_000_000] [--repeats 3] [--dir /tmp]

Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import tempfile
import time
import zlib
from pathlib import Path

import torch


def _checksum_rates(mib: int = 256) -> dict[str, float]:
    data = os.urandom(mib * 2**20)
    out = {}
    for name, fn in (("crc32", zlib.crc32), ("adler32", zlib.adler32),
                     ("blake2b", lambda d: hashlib.blake2b(d).digest()), ("sha1", lambda d: hashlib.sha1(d).digest())):
        t = time.perf_counter()
        fn(data)
        out[name] = round(mib / 1024 / (time.perf_counter() - t), 2)  # GiB/s
    try:  # not a dependency: measured when installed, as the faster alternative
        import xxhash

        t = time.perf_counter()
        xxhash.xxh3_64(data).digest()
        out["xxh3_64"] = round(mib / 1024 / (time.perf_counter() - t), 2)
    except ImportError:
        pass
    return out


def _fsync_tree(root: Path) -> None:
    for f in root.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


def _drop_caches() -> None:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as err:
        raise SystemExit(f"--cold needs root to drop the page cache ({err})") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=int, default=25_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--cold", action="store_true",
                        help="also time a resume from a cold page cache (drops the kernel's caches: needs root)")
    args = parser.parse_args()

    from accelerate import Accelerator

    from vlm_opd.train.checkpoint import verify_checkpoint, write_manifest

    torch.manual_seed(0)
    width = 2048
    layers = max(1, args.params // (width * width))
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width, bias=False) for _ in range(layers)])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model(torch.randn(2, width)).sum().backward()
    opt.step()
    accelerator = Accelerator(cpu=True)
    model, opt = accelerator.prepare(model, opt)

    root = Path(tempfile.mkdtemp(prefix="ckpt_verify_", dir=args.dir))
    times: dict[str, list[float]] = {"save": [], "manifest": [], "load": [], "verify": []}
    try:
        for r in range(args.repeats):
            ckpt = root / f"step-{r}"
            t = time.perf_counter()
            accelerator.save_state(str(ckpt / "state"))
            _fsync_tree(ckpt)
            times["save"].append(time.perf_counter() - t)
            t = time.perf_counter()
            write_manifest(ckpt)
            times["manifest"].append(time.perf_counter() - t)
            t = time.perf_counter()
            accelerator.load_state(str(ckpt / "state"))
            times["load"].append(time.perf_counter() - t)
            t = time.perf_counter()
            assert verify_checkpoint(ckpt) is None
            times["verify"].append(time.perf_counter() - t)
            if args.cold:  # a resume after a restart: the files come from disk
                _drop_caches()
                t = time.perf_counter()
                accelerator.load_state(str(ckpt / "state"))
                times.setdefault("load_cold", []).append(time.perf_counter() - t)
                _drop_caches()
                t = time.perf_counter()
                assert verify_checkpoint(ckpt) is None
                accelerator.load_state(str(ckpt / "state"))
                times.setdefault("verify_load_cold", []).append(time.perf_counter() - t)
            size = sum(f.stat().st_size for f in ckpt.rglob("*") if f.is_file())
            if r < args.repeats - 1:
                shutil.rmtree(ckpt)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "params": layers * width * width,
        "checkpoint_mb": round(size / 2**20, 1),
        "repeats": args.repeats,
        "save_s": round(med["save"], 3),
        "manifest_s": round(med["manifest"], 3),
        "save_overhead": round(med["manifest"] / med["save"], 4),
        "load_s": round(med["load"], 3),
        "verify_s": round(med["verify"], 3),
        "load_overhead": round(med["verify"] / med["load"], 4),
        "checksum_gib_per_s": _checksum_rates(),
    }
    if args.cold:
        result["load_cold_s"] = round(med["load_cold"], 3)
        result["verify_and_load_cold_s"] = round(med["verify_load_cold"], 3)
        result["load_overhead_cold"] = round(med["verify_load_cold"] / med["load_cold"] - 1, 4)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
