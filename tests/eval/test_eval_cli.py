"""`vlm-opd eval` end to end on a tiny model: every benchmark fixture, resume from the cache, training
runs and step checkpoints (accelerate's real `save_state` output, plain, tied, DDP-prefixed and LoRA),
and one-line errors for bad input."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from vlm_opd.cli import main
from vlm_opd.errors import ConfigError, ModelError
from vlm_opd.eval.generate import load_eval_model, make_generate_fn, resolve_model

ALL = "all,local"  # every benchmark of the papers' tables plus the local JSONL benchmark
N_BENCHMARKS = 13
FAST = ["--k", "2", "--max-new-tokens", "8", "--batch-size", "4", "--no-progress"]


@pytest.fixture(scope="module")
def fixtures_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench") / "fixtures"
    assert main(["eval", "--write-fixtures", str(d)]) == 0
    return d


def _accelerate_save_state(model, state_dir, **kwargs):
    """What the trainer does: prepare the student with an optimizer and `save_state` into `state/`."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    try:
        accelerator = Accelerator(cpu=True)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        model, optimizer = accelerator.prepare(model, optimizer)
        accelerator.save_state(str(state_dir), **kwargs)
    finally:  # other tests build their own Accelerator with other settings
        AcceleratorState._reset_state(True)
        GradientState._reset_state()


def _make_checkpoint(run_dir, model, base_dir, step=10, lora=None, **save_kwargs):
    import yaml

    ckpt = run_dir / "checkpoints" / f"step-{step:06d}"
    _accelerate_save_state(model, ckpt / "state", **save_kwargs)
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": step}))
    (ckpt / "COMPLETE").write_text(json.dumps({"step": step}))
    cfg = {"method": "opd", "output_dir": str(run_dir), "student": {"path": str(base_dir), "kind": "auto"}}
    if lora:
        cfg["lora"] = lora
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    return ckpt


def _perturbed_copy(model_dir, seed=1):
    """A private copy of the tiny model with every weight moved, so a checkpoint differs from its base."""
    from vlm_opd.models import load_model

    lm = load_model(model_dir)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lm.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return lm


def _percentages(results):
    """Every percentage in results.json: headline scores, metrics, run spread and the summary table."""
    out = []
    for entry in results["benchmarks"].values():
        for r in entry["results"].values():
            out += [r["score"], r["score_std_over_runs"], *r["metrics"].values()]
    for mode in results["summary"].values():
        out += list(mode["scores"].values()) + [g["average"] for g in mode["groups"].values()]
    return out


# ------------------------------------------------------------------------------------------------


def test_every_benchmark_end_to_end_then_resume_from_cache(tiny_qwen2vl_dir, fixtures_dir, tmp_path, capsys,
                                                           monkeypatch):
    out = tmp_path / "out"
    argv = ["eval", "--model", str(tiny_qwen2vl_dir), "--benchmarks", ALL, "--data-dir", str(fixtures_dir),
            "--greedy", "--out", str(out), *FAST]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| Mode | WeMath | MathVista | MathVerse | Math Avg | HalluB |" in printed
    assert "Visual Avg" in printed and "## Unparsed answers" in printed
    assert "| avg@2 |" in printed and "| greedy |" in printed
    assert "generated 150 completions (100 prompts)" in printed  # 50 items x (2 sampled + 1 greedy)

    results = json.loads((out / "results.json").read_text())
    assert len(results["benchmarks"]) == N_BENCHMARKS
    assert (out / "report.md").read_text().startswith("# Evaluation results")
    numbers = _percentages(results)
    assert numbers and all(isinstance(x, (int, float)) and math.isfinite(x) and 0 <= x <= 100 for x in numbers)
    for entry in results["benchmarks"].values():
        for r in entry["results"].values():
            assert 0 <= r["n_unparsed"] <= r["n_completions"]
    assert results["settings"]["k"] == 2 and results["modes"] == ["avg@2", "greedy"]

    # The cached completions are the model's own: greedy ones equal a direct greedy decode.
    from vlm_opd.eval import get_benchmark
    from vlm_opd.models import load_model

    lm = load_model(tiny_qwen2vl_dir)
    examples = get_benchmark(f"mathvista:{fixtures_dir / 'mathvista'}").load()
    direct = make_generate_fn(lm, max_new_tokens=8)(examples, 1, 0.0, True, 0)
    cached = {it["id"]: it["modes"]["greedy"]["completions"] for it in results["benchmarks"]["mathvista"]["items"]}
    assert [cached[ex.id] for ex in examples] == direct

    # Rerun: everything comes from the cache, the model is not even loaded.
    def refuse(*a, **k):
        raise AssertionError("a fully cached rerun must not load the model or generate")

    monkeypatch.setattr("vlm_opd.eval.generate.load_model", refuse)
    monkeypatch.setattr("vlm_opd.eval.generate.sample", refuse)
    assert main(argv) == 0
    assert "nothing generated" in capsys.readouterr().out
    again = json.loads((out / "results.json").read_text())
    assert again["summary"] == results["summary"]

    # The same --out with another generation setting is refused (its caches would be reused).
    assert main([*argv[:-len(FAST)], "--k", "2", "--max-new-tokens", "9", "--no-progress"]) == 2
    assert "differs in: max_new_tokens" in capsys.readouterr().err


def test_generate_fn_batching_greedy_and_stats(tiny_qwen2vl, tiny_examples):
    examples = tiny_examples[:3]
    whole = make_generate_fn(tiny_qwen2vl, max_new_tokens=6, batch_prompts=8)
    one_by_one = make_generate_fn(tiny_qwen2vl, max_new_tokens=6, batch_prompts=1)
    a = whole(examples, 3, 1.0, False, 123)
    assert len(a) == 3 and all(len(c) == 3 and all(isinstance(t, str) for t in c) for c in a)
    assert one_by_one(examples, 3, 1.0, False, 123) == a  # rows are seeded per item, not per batch
    assert whole(examples, 3, 1.0, False, 124) != a
    greedy = whole(examples, 2, 0.0, True, 0)
    assert all(c[0] == c[1] for c in greedy)
    st = whole.stats
    assert (st["calls"], st["prompts"], st["completions"]) == (3, 9, 24)
    assert 0 < st["tokens"] <= 24 * 6 and 0 <= st["unfinished"] <= 24 and st["seconds"] > 0
    assert one_by_one.stats["calls"] == 1
    with pytest.raises(ConfigError):
        make_generate_fn(tiny_qwen2vl, batch_prompts=0)


def test_checkpoint_directory_evaluates(tiny_qwen2vl_dir, fixtures_dir, tmp_path, capsys):
    trained = _perturbed_copy(tiny_qwen2vl_dir)
    run = tmp_path / "run"
    ckpt = _make_checkpoint(run, trained.model, tiny_qwen2vl_dir)
    assert sorted(p.name for p in (ckpt / "state").iterdir()) == ["model.safetensors", "optimizer.bin",
                                                                   "random_states_0.pkl"]

    source = resolve_model(ckpt)
    assert source.kind == "checkpoint" and source.step == 10 and source.model == str(tiny_qwen2vl_dir)
    assert resolve_model(ckpt / "state").checkpoint == ckpt  # accelerate's folder itself works too
    from vlm_opd.commands.eval import _default_out

    assert _default_out(source).as_posix() == "eval_results/run-step-000010"
    lm = load_eval_model(source)
    want = trained.model.state_dict()
    got = lm.model.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)

    # Through the CLI: the completions are the checkpoint's, not the base model's.
    out = tmp_path / "out"
    assert main(["eval", "--model", str(ckpt), "--benchmarks", "local", "--data-dir", str(fixtures_dir),
                 "--out", str(out), "--k", "0", "--greedy", "--max-new-tokens", "8", "--no-progress"]) == 0
    assert "| greedy |" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    (entry,) = results["benchmarks"].values()
    from vlm_opd.eval import get_benchmark

    examples = get_benchmark(f"local:{fixtures_dir / 'local'}").load()
    direct = make_generate_fn(trained, max_new_tokens=8)(examples, 1, 0.0, True, 0)
    assert [it["modes"]["greedy"]["completions"] for it in entry["items"]] == direct

    # A run without final/ points at its checkpoints; with final/ it evaluates that.
    with pytest.raises(ModelError, match="no final/ model yet.*step-000010"):
        resolve_model(run)
    shutil.copytree(tiny_qwen2vl_dir, run / "final")
    assert resolve_model(run).model == str(run / "final")

    # A multi-stage run evaluates its last stage's final/ model, once there is one.
    stages = tmp_path / "stages"
    shutil.copytree(tiny_qwen2vl_dir, stages / "stage0-sft" / "final")
    (stages / "stage1-vold" / "checkpoints").mkdir(parents=True)
    with pytest.raises(ModelError, match="last stage stage1-vold has no final/"):
        resolve_model(stages)
    shutil.copytree(tiny_qwen2vl_dir, stages / "stage1-vold" / "final")
    assert resolve_model(stages).model == str(stages / "stage1-vold" / "final")

    # Without the run's config.yaml the base model must be named.
    (run / "config.yaml").unlink()
    with pytest.raises(ModelError, match="--base-model"):
        resolve_model(ckpt)
    assert resolve_model(ckpt, base_model=tiny_qwen2vl_dir).model == str(tiny_qwen2vl_dir)
    (ckpt / "COMPLETE").unlink()
    with pytest.raises(ModelError, match="incomplete"):
        resolve_model(ckpt, base_model=tiny_qwen2vl_dir)


def test_run_system_prompt_is_applied_unless_overridden(tiny_qwen2vl_dir, fixtures_dir, tmp_path, capsys,
                                                       monkeypatch):
    import yaml

    import vlm_opd.eval.generate as gen

    run = tmp_path / "run"
    shutil.copytree(tiny_qwen2vl_dir, run / "final")
    (run / "config.yaml").write_text(yaml.safe_dump({"method": "grpo", "student": {"path": "x"},
                                                     "data": {"system_prompt": "Think, then answer."}}))
    used = []
    real = gen.make_generate_fn

    def spy(lm, **kwargs):
        used.append(kwargs["system_prompt"])
        return real(lm, **kwargs)

    monkeypatch.setattr(gen, "make_generate_fn", spy)  # `vlm-opd eval` imports it when it runs
    args = ["eval", "--model", str(run), "--benchmarks", "local", "--data-dir", str(fixtures_dir), "--k", "0",
            "--greedy", "--max-new-tokens", "4", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert "using the run's data.system_prompt='Think, then answer.'" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "b"), "--system-prompt", ""]) == 0
    assert main([*args, "--out", str(tmp_path / "c"), "--system-prompt", "Be brief."]) == 0
    assert used == ["Think, then answer.", None, "Be brief."]
    # the cache knows which prompt produced it: reusing "a" without the run's prompt is refused
    assert main([*args, "--out", str(tmp_path / "a"), "--system-prompt", ""]) != 0


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # peft on transformers 5
def test_checkpoint_variants_tied_bin_ddp_lora(tiny_qwen2vl_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file, save_file

    from vlm_opd.models import load_model

    # pytorch_model.bin (safe_serialization=False) and a DDP "module." prefix.
    trained = _perturbed_copy(tiny_qwen2vl_dir, seed=2)
    ckpt = _make_checkpoint(tmp_path / "bin", trained.model, tiny_qwen2vl_dir, safe_serialization=False)
    assert (ckpt / "state" / "pytorch_model.bin").is_file()
    want = trained.model.state_dict()
    got = load_eval_model(resolve_model(ckpt)).model.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)

    ckpt = _make_checkpoint(tmp_path / "ddp", trained.model, tiny_qwen2vl_dir)
    f = ckpt / "state" / "model.safetensors"
    save_file({f"module.{k}": v for k, v in load_file(f).items()}, f)
    got = load_eval_model(resolve_model(ckpt)).model.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)

    # A tied lm_head: accelerate drops the alias from the file; the tie restores it.
    tied = load_model(tiny_qwen2vl_dir)
    tied.model.lm_head.weight = tied.model.get_input_embeddings().weight
    tied.model.config.tie_word_embeddings = True
    with torch.no_grad():
        tied.model.get_input_embeddings().weight.mul_(1.5)
    ckpt = _make_checkpoint(tmp_path / "tied", tied.model, tiny_qwen2vl_dir)
    assert "lm_head.weight" not in load_file(ckpt / "state" / "model.safetensors")
    tied_dir = tmp_path / "tied_base"
    shutil.copytree(tiny_qwen2vl_dir, tied_dir)
    tied.model.save_pretrained(tied_dir)  # the base's config says tie_word_embeddings
    lm = load_eval_model(resolve_model(ckpt, base_model=tied_dir))
    assert torch.equal(lm.model.lm_head.weight, tied.model.get_input_embeddings().weight)

    # A wrong base model is refused with one line.
    sd = load_file(f)
    sd["module.extra.weight"] = torch.zeros(1)
    save_file(sd, f)
    with pytest.raises(ModelError, match="do not match the base model.*extra.weight"):
        load_eval_model(resolve_model(tmp_path / "ddp" / "checkpoints" / "step-000010"))

    # LoRA: the adapter is applied with the run's lora settings and merged.
    lora = {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    base = load_model(tiny_qwen2vl_dir)
    peft_model = get_peft_model(base.model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    ckpt = _make_checkpoint(tmp_path / "lora", peft_model, tiny_qwen2vl_dir, lora=lora)
    merged_want = peft_model.merge_and_unload().state_dict()
    got = load_eval_model(resolve_model(ckpt)).model.state_dict()
    assert set(got) == set(merged_want)
    assert all(torch.allclose(got[k], merged_want[k], atol=1e-6) for k in merged_want)


def test_bad_input_gives_one_line_errors(tiny_qwen2vl_dir, fixtures_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a default --out would go
    def err(*argv):
        assert main(["eval", *argv, "--no-progress"]) == 2
        message = capsys.readouterr().err.strip()
        assert message.startswith("vlm-opd eval: error:") and "\n" not in message
        return message

    model = ["--model", str(tiny_qwen2vl_dir)]
    assert "Did you mean 'mathvista'?" in err(*model, "--benchmarks", "mathvsta")
    assert "Suites: va-opd, vold, all" in err(*model, "--benchmarks", "va-odp")
    assert "does not exist" in err("--model", str(tmp_path / "missing"), "--benchmarks", "vold")
    assert "not a model directory" in err("--model", str(tmp_path), "--benchmarks", "vold")
    assert "missing benchmark files" in err(*model, "--benchmarks", "vold", "--data-dir", str(tmp_path))
    assert "missing benchmark files" in err(*model, "--benchmarks", f"mmmu:{tmp_path / 'nope'}")
    assert "needs a path" in err(*model, "--benchmarks", "local")
    assert "--model is required" in err("--benchmarks", "vold")
    assert "--judge-url and --judge-model" in err(*model, "--benchmarks", "vold", "--judge-url", "http://x")
    assert "--k must be >= 1" in err(*model, "--benchmarks", "local", "--data-dir", str(fixtures_dir), "--k", "0")
    assert "--temperature must be > 0" in err(*model, "--benchmarks", "local", "--temperature", "0")
    real = tmp_path / "real"
    (real / "mathvista").mkdir(parents=True)
    assert "not written as fixtures" in err("--write-fixtures", str(real))
    assert not list(tmp_path.glob("eval_results*"))  # nothing written for refused input


def test_suites_expand_and_dedupe(fixtures_dir):
    from vlm_opd.commands.eval import expand_benchmarks
    from vlm_opd.eval import PAPER_SUITES

    specs = expand_benchmarks("va-opd, VOLD ,mathvista", fixtures_dir)
    names = [s.partition(":")[0] for s in specs]
    assert names == list(dict.fromkeys(PAPER_SUITES["va-opd"] + PAPER_SUITES["vold"]))
    assert all(s.partition(":")[2].startswith(str(fixtures_dir)) for s in specs)
    assert expand_benchmarks("mmmu", None) == ["mmmu"]  # no --data-dir: the hub release
