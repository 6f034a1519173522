"""`vlm-opd eval --backend vllm` (vLLM venv only: `make test-vllm`): the same table as --backend hf,
greedy completions identical to HF's, and a step checkpoint evaluates the checkpoint's weights."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from vllm_support import build_vllm_tiny, require_vllm  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
require_vllm()

from vlm_opd.cli import main  # noqa: E402

FAST = ["--k", "2", "--max-new-tokens", "8", "--batch-size", "4", "--no-progress", "--greedy"]
VLLM = ["--backend", "vllm", "--vllm-kv-cache-bytes", str(32 << 20), "--vllm-max-model-len", "2048",
        "--vllm-enforce-eager"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("vllm_eval")
    assert main(["eval", "--write-fixtures", str(d / "fixtures")]) == 0
    build_vllm_tiny("qwen2_vl", d / "model")
    return d


def _table_shape(printed: str) -> list[str]:
    """The printed tables with every number replaced, so two runs' formats can be compared."""
    lines = [ln for ln in printed.splitlines() if ln.startswith("|")]
    return [re.sub(r"-?\d+(\.\d+)?", "#", ln) for ln in lines]


def _greedy(out: Path) -> dict:
    results = json.loads((out / "results.json").read_text())
    return {(name, it["id"]): it["modes"]["greedy"]["completions"]
            for name, entry in results["benchmarks"].items() for it in entry["items"]}


def test_eval_backend_vllm_same_table_and_greedy_completions(setup, capsys):
    base = ["eval", "--model", str(setup / "model"), "--benchmarks", "all,local", "--data-dir",
            str(setup / "fixtures")]
    assert main([*base, "--out", str(setup / "hf"), *FAST]) == 0
    hf_printed = capsys.readouterr().out
    assert main([*base, "--out", str(setup / "vllm"), *FAST, *VLLM]) == 0
    captured = capsys.readouterr()
    assert "sampling with vLLM" in captured.err
    assert "generated 150 completions (100 prompts)" in captured.out
    assert _table_shape(captured.out) == _table_shape(hf_printed)
    assert "| Mode | WeMath | MathVista | MathVerse | Math Avg | HalluB |" in captured.out
    # Greedy decoding is deterministic: the engine must produce HF's completions exactly.
    hf, vl = _greedy(setup / "hf"), _greedy(setup / "vllm")
    assert hf.keys() == vl.keys() and hf == vl
    # An --out written by one backend is not resumed by the other (its sampled completions differ).
    assert main([*base, "--out", str(setup / "hf"), *FAST, *VLLM]) == 2
    assert "differs in: backend" in capsys.readouterr().err


def test_eval_backend_vllm_on_a_checkpoint_uses_its_weights(setup, tmp_path, capsys):
    from test_eval_cli import _make_checkpoint, _perturbed_copy

    from vlm_opd.eval import get_benchmark
    from vlm_opd.eval.generate import make_generate_fn

    model_dir = setup / "model"
    trained = _perturbed_copy(model_dir)
    ckpt = _make_checkpoint(tmp_path / "run", trained.model, model_dir)
    out = tmp_path / "out"
    assert main(["eval", "--model", str(ckpt), "--benchmarks", "local", "--data-dir", str(setup / "fixtures"),
                 "--out", str(out), "--k", "0", "--greedy", "--max-new-tokens", "8", "--no-progress", *VLLM]) == 0
    capsys.readouterr()
    examples = get_benchmark(f"local:{setup / 'fixtures' / 'local'}").load()
    direct = make_generate_fn(trained, max_new_tokens=8)(examples, 1, 0.0, True, 0)
    base = make_generate_fn(__import__("vlm_opd.models", fromlist=["load_model"]).load_model(model_dir),
                            max_new_tokens=8)(examples, 1, 0.0, True, 0)
    assert direct != base  # the checkpoint decodes differently from its base model
    got = [v for (_, _), v in _greedy(out).items()]
    assert got == direct
