"""Shared test setup: single-threaded torch per xdist worker, offline hub, deterministic seeds."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

# Two single-threaded workers beat one two-threaded one on this 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


# ---- Tiny real-family models, built offline once per test session (per xdist worker) ----------
# `tiny_<family>_dir` is the saved checkpoint directory (load a private copy with
# `vlm_opd.models.load_model(path)` if a test trains or edits weights); `tiny_<family>` is a loaded
# LoadedModel in eval mode shared by the whole session: treat it as read-only.
# All four share one tokenizer (same vocab_size / seed), so the Qwen3 text LM can teach the VLMs.
# eos_boost makes random models end about half of 16-token completions, so EOS/padding paths run.
TINY_BUILD_KWARGS = dict(seed=0, eos_boost=3.0)


def _tiny_dir(tmp_path_factory, family: str):
    from vlm_opd.models import build_tiny

    out = tmp_path_factory.mktemp(f"tiny_{family}")
    build_tiny(family, out, **TINY_BUILD_KWARGS)
    return out


@pytest.fixture(scope="session")
def tiny_qwen2vl_dir(tmp_path_factory):
    return _tiny_dir(tmp_path_factory, "qwen2_vl")


@pytest.fixture(scope="session")
def tiny_qwen25vl_dir(tmp_path_factory):
    return _tiny_dir(tmp_path_factory, "qwen2_5_vl")


@pytest.fixture(scope="session")
def tiny_qwen3vl_dir(tmp_path_factory):
    return _tiny_dir(tmp_path_factory, "qwen3_vl")


@pytest.fixture(scope="session")
def tiny_qwen3_lm_dir(tmp_path_factory):
    return _tiny_dir(tmp_path_factory, "qwen3")


@pytest.fixture(scope="session")
def bf16_student_dir(tmp_path_factory, tiny_qwen2vl_dir):
    """The tiny Qwen2-VL stored in bfloat16 (the dtype of the released Qwen-VL checkpoints)."""
    from vlm_opd.models import load_model

    out = tmp_path_factory.mktemp("bf16_student")
    lm = load_model(tiny_qwen2vl_dir, dtype="bfloat16")
    lm.model.save_pretrained(out)
    lm.tokenizer.save_pretrained(out)
    lm.processor.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_qwen2vl(tiny_qwen2vl_dir):
    from vlm_opd.models import load_model

    return load_model(tiny_qwen2vl_dir)


@pytest.fixture(scope="session")
def tiny_qwen25vl(tiny_qwen25vl_dir):
    from vlm_opd.models import load_model

    return load_model(tiny_qwen25vl_dir)


@pytest.fixture(scope="session")
def tiny_qwen3vl(tiny_qwen3vl_dir):
    from vlm_opd.models import load_model

    return load_model(tiny_qwen3vl_dir)


@pytest.fixture(scope="session")
def tiny_qwen3_lm(tiny_qwen3_lm_dir):
    from vlm_opd.models import load_model

    return load_model(tiny_qwen3_lm_dir)


TINY_VLM_FIXTURES = {"qwen2_vl": "tiny_qwen2vl", "qwen2_5_vl": "tiny_qwen25vl", "qwen3_vl": "tiny_qwen3vl"}


@pytest.fixture(params=sorted(TINY_VLM_FIXTURES))
def tiny_vlm(request):
    """Each tiny VLM family in turn (session-shared, read-only LoadedModel)."""
    return request.getfixturevalue(TINY_VLM_FIXTURES[request.param])


def make_test_image(width: int, height: int, seed: int = 0):
    """Deterministic RGB noise image."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


@pytest.fixture
def tiny_examples():
    """Five prompts: three single images of different sizes, one with two images, one with none."""
    from vlm_opd.data.example import Example

    return [
        Example("What number is shown? <image>", [make_test_image(56, 56, 1)], answer="3", id="square"),
        Example("<image> Read the label.", [make_test_image(84, 28, 2)], answer="12", id="wide"),
        Example("How many sides?", [make_test_image(60, 120, 3)], answer="4", id="tall-no-marker"),
        Example("Add <image> and <image>.", [make_test_image(56, 28, 4), make_test_image(28, 56, 5)], id="two"),
        Example("What is 2 + 3?", [], answer="5", id="text-only"),
    ]


@pytest.fixture
def make_image():
    """`make_image(width, height, seed=0)` -> deterministic RGB noise image."""
    return make_test_image


@pytest.fixture
def nan_loss_at(monkeypatch):
    """`nan_loss_at(method, n)`: the n-th call of the trainer's step function for `method` returns a NaN loss.
    Returns the call counter (a dict with "n"; reset it to 0 between runs)."""
    from vlm_opd.train import trainer

    def patch(method: str, n: int) -> dict:
        real = trainer.STEP_FUNCTIONS[method]
        calls = {"n": 0}

        def step(ctx, examples, seed):
            calls["n"] += 1
            loss, diags = real(ctx, examples, seed)
            return (loss * float("nan") if calls["n"] == n else loss), diags

        monkeypatch.setitem(trainer.STEP_FUNCTIONS, method, step)
        return calls

    return patch


def free_port() -> int:
    """A TCP port no process listens on now (for a launcher's rendezvous)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_cli(args, nproc: int = 2, *, script=None, env: dict | None = None, cpu: bool = True, timeout: int = 600):
    """Run `vlm-opd ARGS` (or `python SCRIPT ARGS`) in `nproc` processes with `accelerate launch --multi_gpu`
    (CPU, gloo: ACCELERATE_USE_CPU=1 unless `cpu=False`), or in one plain process for nproc=1.
    Returns the CompletedProcess (text output captured)."""
    import subprocess
    import sys
    from pathlib import Path

    target = [str(script)] if script is not None else ["-m", "vlm_opd.cli"]
    if nproc > 1:
        # A free port of its own: launches in parallel xdist workers would all take accelerate's default 29500.
        cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", str(nproc),
               "--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no",
               "--dynamo_backend", "no", *target, *map(str, args)]
    else:
        cmd = [sys.executable, *target, *map(str, args)]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **(env or {})}
    if cpu:
        full_env["ACCELERATE_USE_CPU"] = "1"
    else:
        full_env.pop("ACCELERATE_USE_CPU", None)
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout)


@pytest.fixture
def launch():
    """`launch(args, nproc=2, script=None, env=None, cpu=True)`: see `launch_cli`."""
    return launch_cli
