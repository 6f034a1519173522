"""Models for the evaluation runner: a `generate_fn` over `rollout.sample`, and loading what to evaluate.

`make_generate_fn(lm, ...)` adapts a `LoadedModel` to the runner's
`generate_fn(examples, k, temperature, greedy, seed) -> k completions per example`.

`resolve_model(path)` / `load_eval_model(source)` accept everything a user has after training:

- a model directory (config.json + weights; e.g. `<output_dir>/final/`) or a hub name;
- a training output directory: its `final/` (for a multi-stage run, the last stage's `final/`);
- a step checkpoint `<output_dir>/checkpoints/step-000010/`. That is not a model directory: it holds
  accelerate's `save_state` output in `state/` (`model.safetensors`, or `pytorch_model.bin` with
  `safe_serialization=False`; optimizer, RNG and scheduler files next to it), `trainer_state.json`
  and the `COMPLETE` marker. The architecture, tokenizer and processor come from the run's base
  model, `student.path` in `<output_dir>/config.yaml` (or `base_model=` when that path moved); the
  weights are then replaced by the checkpoint's. DDP (`module.`) and torch.compile (`_orig_mod.`)
  prefixes are stripped; a LoRA run's adapter is applied with the run's `lora:` settings and merged.
  Weights that accelerate dropped because they were shared (tied `lm_head`) are restored by the tie;
  any other mismatch with the base model is an error. Sharded FSDP / DeepSpeed states are refused
  (consolidate them first, e.g. `accelerate merge-weights`).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlm_opd.data.example import Example
from vlm_opd.errors import ConfigError, ModelError
from vlm_opd.models.loading import LoadedModel, load_model
from vlm_opd.rollout import sample

# What accelerate's `save_state` names the first prepared model's weights (`model_1.*` is the second).
STATE_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP, torch.compile
_STAGE_DIR = re.compile(r"^stage(\d+)-")
_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


# ------------------------------------------------------------------------------------------------
# generate_fn


def make_generate_fn(
    lm: LoadedModel,
    *,
    max_new_tokens: int = 1024,
    top_p: float = 1.0,
    batch_prompts: int = 8,
    system_prompt: str | None = None,
    backend=None,
):
    """A runner `generate_fn` sampling with `lm` through `vlm_opd.rollout.sample`.

    `backend` is the sampling engine (None: transformers generate; a `VLLMBackend` for vLLM).

    `generate_fn(examples, k, temperature, greedy, seed)` returns k completions per example, sampling
    at most `batch_prompts` prompts (`batch_prompts * k` rows) per `sample` call. Rows are seeded per
    (seed, example, sample index), so the completions do not depend on `batch_prompts` or on which
    other items share a batch. With `greedy` every one of the k completions is the argmax decode.

    The returned function keeps running totals in `.stats`: calls, prompts, completions, tokens (up to
    and including EOS), unfinished (completions cut at `max_new_tokens`, usually unparseable) and
    seconds spent generating.
    """
    if isinstance(batch_prompts, bool) or not isinstance(batch_prompts, int) or batch_prompts < 1:
        raise ConfigError(f"batch_prompts must be a positive integer, got {batch_prompts!r}")

    def generate(examples: Sequence[Example], k: int, temperature: float, greedy: bool, seed: int) -> list[list[str]]:
        t0 = time.perf_counter()
        out: list[list[str]] = []
        for start in range(0, len(examples), batch_prompts):
            chunk = list(examples[start:start + batch_prompts])
            with torch.no_grad():
                rollout = sample(lm, chunk, k=k, max_new_tokens=max_new_tokens,
                                 temperature=1.0 if greedy else temperature, top_p=top_p, seed=seed,
                                 greedy=greedy, system_prompt=system_prompt, backend=backend,
                                 score_policy=False)
            out.extend(rollout.texts[i * k:(i + 1) * k] for i in range(len(chunk)))
            stats["tokens"] += int(rollout.completion_mask.sum())
            stats["unfinished"] += int((~rollout.finished).sum())
        stats["calls"] += 1
        stats["prompts"] += len(examples)
        stats["completions"] += len(examples) * k
        stats["seconds"] += time.perf_counter() - t0
        return out

    stats = {"calls": 0, "prompts": 0, "completions": 0, "tokens": 0, "unfinished": 0, "seconds": 0.0}
    generate.stats = stats
    return generate


# ------------------------------------------------------------------------------------------------
# Which model a path names


@dataclass
class ModelSource:
    """What `resolve_model` found.

    Attributes:
        kind: "model_dir" (a saved transformers model), "hub" (a hub name) or "checkpoint".
        model: the directory or hub name `load_model` reads (for a checkpoint: the base model that
            supplies config, tokenizer and processor).
        description: one line for logs and results.
        checkpoint: the step checkpoint directory (kind "checkpoint").
        weights: the checkpoint's state weights file (kind "checkpoint").
        run_config: the run's config.yaml as a dict, when there is one (checkpoint or final/).
        step: the checkpoint's step, when known.
    """

    kind: str
    model: str
    description: str
    checkpoint: Path | None = None
    weights: Path | None = None
    run_config: dict[str, Any] | None = None
    step: int | None = None

    def fingerprint(self) -> str:
        """Changes when the weights on disk change (file names, sizes, mtimes); the name for hub models."""
        h = hashlib.sha256(f"{self.kind}\0{self.model}".encode())
        files: list[Path] = []
        if self.weights is not None:
            files.append(self.weights)
        if self.kind == "model_dir":
            files += sorted(p for p in Path(self.model).iterdir() if p.suffix in (".safetensors", ".bin"))
        for f in files:
            st = f.stat()
            h.update(f"\0{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]


def trained_generation_length(run_config: dict[str, Any] | None) -> tuple[int, str] | None:
    """The completion length a training run's student was trained to produce, and the key it came from.

    Methods that sample the student (opd, va_opd, grpo, papo, vold): `rollout.max_new_tokens`. SFT / KD
    train on targets of up to `sft.max_length` tokens. None when there is no run config (a plain model
    directory or a hub name) or it names neither.
    """
    if not run_config:
        return None
    method = run_config.get("method")
    if method in ("sft", "kd"):
        section, key = "sft", "max_length"
    else:
        section, key = "rollout", "max_new_tokens"
    value = (run_config.get(section) or {}).get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return value, f"{section}.{key} of the training run (method {method})"


def _read_run_config(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    import yaml

    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ModelError(f"cannot read the run config {path}: {err}") from None
    if not isinstance(cfg, dict):
        raise ModelError(f"run config {path} is not a mapping of settings")
    return cfg


def _is_checkpoint_dir(p: Path) -> bool:
    return (p / "state").is_dir() or ((p / "trainer_state.json").is_file() and (p / "COMPLETE").exists())


def resolve_model(name_or_path: str | Path, *, base_model: str | Path | None = None) -> ModelSource:
    """Work out what `name_or_path` is (model dir, training run, step checkpoint, hub name).

    Args:
        name_or_path: see the module docstring for what is accepted.
        base_model: for a checkpoint, the model supplying config/tokenizer/processor instead of the
            run's `student.path` (e.g. when the run directory was copied to another machine).

    Raises:
        ModelError: the path is missing, or is a directory that holds none of the above, or a
            checkpoint is incomplete / lacks weights / has no known base model.
    """
    s = str(name_or_path)
    p = Path(s).expanduser()
    if not p.exists():
        looks_local = s.startswith(("/", "./", "../", "~")) or s.count("/") > 1 or s in (".", "..") or not s
        if looks_local:
            raise ModelError(f"model path {s!r} does not exist")
        return ModelSource("hub", s, f"hub model {s}")
    if not p.is_dir():
        raise ModelError(f"model path {s!r} is a file; expected a model directory, a training output "
                         "directory or a checkpoint directory")
    if p.name == "state" and _is_checkpoint_dir(p.parent):
        p = p.parent  # the user pointed at accelerate's folder inside the checkpoint
    if (p / "config.json").is_file():
        run_cfg = _read_run_config(p.parent / "config.yaml") if p.name == "final" else None
        return ModelSource("model_dir", str(p), f"model {p}", run_config=run_cfg)
    if _is_checkpoint_dir(p):
        return _resolve_checkpoint(p, base_model)
    if (p / "final").is_dir():
        if not (p / "final" / "config.json").is_file():
            raise ModelError(f"{p / 'final'} has no config.json; expected the trainer's saved final model")
        return ModelSource("model_dir", str(p / "final"), f"final model of run {p}",
                           run_config=_read_run_config(p / "config.yaml"))
    stages = sorted((int(m.group(1)), d) for d in p.iterdir() if d.is_dir() and (m := _STAGE_DIR.match(d.name)))
    if stages:
        last = stages[-1][1]
        if not (last / "final" / "config.json").is_file():
            raise ModelError(f"{p} is a multi-stage run whose last stage {last.name} has no final/ model yet; "
                             f"pass a checkpoint (e.g. {last}/checkpoints/step-...) or an earlier stage's final/")
        return ModelSource("model_dir", str(last / "final"), f"final model of run {p} (last stage {last.name})",
                           run_config=_read_run_config(last / "config.yaml"))
    if (p / "checkpoints").is_dir():
        steps = sorted(d.name for d in (p / "checkpoints").iterdir() if d.is_dir() and d.name.startswith("step-"))
        hint = f"; pass a checkpoint instead, e.g. {p / 'checkpoints' / steps[-1]}" if steps else ""
        raise ModelError(f"training run {p} has no final/ model yet (training unfinished?){hint}")
    raise ModelError(f"{p} is not a model directory (no config.json), a training output directory (no final/) "
                     "or a checkpoint directory (no state/)")


def _resolve_checkpoint(ckpt: Path, base_model: str | Path | None) -> ModelSource:
    if not (ckpt / "COMPLETE").exists():
        raise ModelError(f"checkpoint {ckpt} is incomplete (no COMPLETE marker: the save was interrupted); "
                         "pick another checkpoint")
    state = ckpt / "state"
    weights = next((state / n for n in STATE_WEIGHT_FILES if (state / n).is_file()), None)
    if weights is None:
        present = sorted(x.name for x in state.iterdir()) if state.is_dir() else []
        sharded = [n for n in present if n.startswith(("pytorch_model_fsdp", "pytorch_model")) or n.startswith("global_step")]
        why = (f"it holds sharded FSDP/DeepSpeed state ({', '.join(sharded)}); consolidate it into one "
               "model.safetensors first (e.g. `accelerate merge-weights`)") if sharded else (
               f"found {', '.join(present) or 'nothing'}")
        raise ModelError(f"checkpoint {ckpt}: no {' or '.join(STATE_WEIGHT_FILES)} in {state}; {why}")
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    run_cfg = _read_run_config(run_dir / "config.yaml")
    step = None
    m = re.match(r"^step-(\d+)$", ckpt.name)
    if m:
        step = int(m.group(1))
    if base_model is not None:
        base = str(base_model)
    else:
        student = (run_cfg or {}).get("student") or {}
        if not student.get("path"):
            where = f"{run_dir / 'config.yaml'} has no student.path" if run_cfg else f"{run_dir / 'config.yaml'} is missing"
            raise ModelError(f"checkpoint {ckpt} holds weights only, and the base model that supplies the config, "
                             f"tokenizer and processor is unknown ({where}); pass --base-model PATH")
        base = str(student["path"])
        bp = Path(base).expanduser()
        if not bp.exists() and not bp.is_absolute() and (run_dir.parent / bp).exists():
            base = str(run_dir.parent / bp)  # relative to where the run directory sits
        elif not bp.exists() and (base.startswith(("/", "./", "../", "~")) or base.count("/") > 1):
            raise ModelError(f"checkpoint {ckpt}: the run's base model {base!r} (student.path in "
                             f"{run_dir / 'config.yaml'}) does not exist here; pass --base-model PATH")
    desc = f"checkpoint {ckpt} (weights {weights.relative_to(ckpt)}, base {base})"
    return ModelSource("checkpoint", base, desc, checkpoint=ckpt, weights=weights, run_config=run_cfg, step=step)


# ------------------------------------------------------------------------------------------------
# Loading


def _read_state_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means an unreadable weights file
        raise ModelError(f"cannot read checkpoint weights {path}: {type(err).__name__}: {err}") from None
    if not isinstance(sd, dict) or not sd:
        raise ModelError(f"checkpoint weights {path} hold no tensors")
    out = {}
    for key, value in sd.items():
        while key.startswith(_WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


def _apply_lora(model, sd: dict[str, torch.Tensor], source: ModelSource):
    """Wrap `model` in the run's LoRA config so the adapter's keys line up; the caller merges."""
    lora = (source.run_config or {}).get("lora") or {}
    if not lora:
        raise ModelError(f"{source.weights} holds LoRA adapter weights, but the run's LoRA settings "
                         "(lora: in config.yaml) are unknown")
    from peft import LoraConfig, get_peft_model

    ranks = {v.shape[0] for k, v in sd.items() if ".lora_A." in k}
    r = int(lora.get("r", 16))
    if ranks and ranks != {r}:
        raise ModelError(f"{source.weights}: LoRA rank {sorted(ranks)} differs from lora.r={r} in the run config")
    cfg = LoraConfig(r=r, lora_alpha=lora.get("alpha", 32), lora_dropout=lora.get("dropout", 0.0),
                     target_modules=lora.get("target_modules"), bias="none")
    return get_peft_model(model, cfg)


def load_checkpoint_weights(model, source: ModelSource, state_dict: dict[str, torch.Tensor] | None = None):
    """Load `source.weights` into `model` (the base model); return the model to use (LoRA merged).

    Raises ModelError unless every weight of the model is set by the checkpoint (aliases of a loaded
    tensor, like a tied `lm_head`, count as set) and every checkpoint tensor is used.
    `state_dict` is the already-read (prefix-stripped) weights, if the caller has them.
    """
    sd = state_dict if state_dict is not None else _read_state_weights(source.weights)
    is_lora = any(".lora_A." in k or ".lora_B." in k for k in sd)
    target = _apply_lora(model, sd, source) if is_lora else model
    expected = target.state_dict()
    unexpected = sorted(set(sd) - set(expected))
    loaded_storage = {expected[k].data_ptr() for k in sd if k in expected}
    missing = sorted(k for k in set(expected) - set(sd) if expected[k].data_ptr() not in loaded_storage)
    if unexpected or missing:
        parts = []
        if missing:
            parts.append(f"{len(missing)} model weight(s) missing from the checkpoint (e.g. {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} checkpoint tensor(s) the model does not have (e.g. {unexpected[0]!r})")
        raise ModelError(f"checkpoint weights {source.weights} do not match the base model {source.model}: "
                         f"{'; '.join(parts)}. Is the base model the run's student? (--base-model)")
    try:
        target.load_state_dict(sd, strict=False)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = next((line.strip() for line in first if "size mismatch" in line), first[0] if first else "")
        raise ModelError(f"checkpoint weights {source.weights} do not fit the base model {source.model}: {detail}") from None
    if is_lora:
        target = target.merge_and_unload()
    target.eval()
    return target


def load_eval_model(
    source: ModelSource,
    *,
    dtype: str = "auto",
    device: str | torch.device = "cpu",
    attn_implementation: str | None = None,
) -> LoadedModel:
    """Load what `resolve_model` found, in eval mode.

    `dtype="auto"` keeps the saved weights' dtype: the checkpoint's own for a step checkpoint, so an
    intermediate checkpoint and the final model of a run evaluate in the same precision.
    """
    kind = "auto"
    if source.run_config and isinstance(source.run_config.get("student"), dict):
        kind = source.run_config["student"].get("kind") or "auto"
    if source.kind != "checkpoint":
        return load_model(source.model, kind=kind, dtype=dtype, device=device, attn_implementation=attn_implementation)
    sd = _read_state_weights(source.weights)
    if dtype == "auto":
        floats = [v.dtype for v in sd.values() if v.is_floating_point()]
        dtype = _DTYPE_NAMES.get(floats[0], "auto") if floats else "auto"
    lm = load_model(source.model, kind=kind, dtype=dtype, device=device, attn_implementation=attn_implementation)
    lm.model = load_checkpoint_weights(lm.model, source, sd)
    lm.name_or_path = str(source.checkpoint)
    return lm
