"""vLLM sampling backend, colocated with training (the engine lives in this process).

`VLLMBackend` implements `SamplerBackend` on a `vllm.LLM` engine, the way TRL's colocate mode and
verl's hybrid engine use it: one engine per training process, weights pushed from the student after
every optimizer step (`update_weights`), KV cache released while the student trains (`sleep`).

What reaches the engine is exactly what the HF path renders. vLLM expands each image placeholder
itself, so the backend hands it the HF prompt ids with every run of `<|image_pad|>` collapsed back to
one token, plus the row's PIL images; vLLM's processor then re-expands them and the backend checks
that the prompt ids the engine ran equal the HF ids token for token (a different image grid, template
or tokenizer is an error, never a silently different prompt).

What comes back:
    completion_ids: the sampled ids (EOS included when sampled).
    sampler_logprobs: the sampled tokens' log-probs under the distribution sampled from (vLLM's
        `logprobs_mode="processed_logprobs"`: logits with the vision tokens masked, / temperature,
        top-p truncated). vLLM's top-p rule equals `backends.top_p_filter`'s.
    policy_logprobs: None. An engine computes log-probs in one mode only (raw or processed), so the
        T=1 policy log-probs are re-scored by the HF model in `sample` (the training model's own
        numbers, which is what PPO ratios and OPD need anyway).

Reproducibility: with row keys, every row is one request with `SamplingParams(seed=key)`, so vLLM
samples it from its own generator seeded by the key: the same key, weights, prompt and engine
settings give the same tokens, whatever else is in the batch, up to batch-dependent float noise in
the logits (vLLM kernels are not batch-invariant by default; on the CPU build runs were identical).
The tokens differ from the HF backend's for the same key (different random streams); the
distribution is the same.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vlm_opd.errors import ConfigError
from vlm_opd.models.loading import LoadedModel
from vlm_opd.models.lora import merged_weights as student_weights
from vlm_opd.rollout.backends import SampleOutput

# The engine must run in this process (its weights are replaced in place from the student).
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def _import_vllm():
    try:
        import vllm
    except ImportError as e:
        raise ConfigError(
            "rollout.backend=vllm needs vLLM: `pip install -e '.[vllm]'` on a GPU machine (see README, "
            f"'vLLM rollouts'); importing it failed: {e}"
        ) from e
    return vllm


def collapse_image_runs(ids: Sequence[int], image_token_id: int) -> list[int]:
    """`ids` with every run of consecutive `image_token_id` replaced by a single one.

    HF processors expand an image placeholder into one token per merged patch; vLLM expects the
    unexpanded placeholder and expands it from the image itself.
    """
    out: list[int] = []
    prev_image = False
    for t in ids:
        is_image = t == image_token_id
        if not (is_image and prev_image):
            out.append(t)
        prev_image = is_image
    return out


class VLLMBackend:
    """A vLLM engine behind the `SamplerBackend` interface (see the module docstring).

    Args:
        model_path: model directory or hub name the engine is built from (its config, tokenizer and
            processor; the weights are replaced by `update_weights`).
        dtype: engine dtype ("auto", "float32", "bfloat16", "float16").
        gpu_memory_utilization, max_model_len, tensor_parallel_size, kv_cache_memory_bytes,
        enforce_eager: as the `rollout.vllm.*` config keys (passed to `vllm.LLM`).
        sleep: release the engine's memory between rollouts where vLLM supports sleep mode.
        max_images_per_prompt: image limit per prompt the engine reserves for.
        seed: engine seed (used for rows without a key).
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.3,
        max_model_len: int | None = None,
        tensor_parallel_size: int = 1,
        kv_cache_memory_bytes: int | None = None,
        enforce_eager: bool = False,
        sleep: bool = True,
        max_images_per_prompt: int = 4,
        seed: int = 0,
    ):
        self.model_path = str(model_path)
        self.engine_kwargs: dict[str, Any] = dict(
            model=self.model_path,
            dtype=dtype,
            tensor_parallel_size=tensor_parallel_size,
            enforce_eager=enforce_eager,
            seed=seed,
            # The sampled tokens' log-probs under the sampling distribution (see module docstring).
            logprobs_mode="processed_logprobs",
            # The checkpoint's generation_config.json must not change the distribution (no
            # repetition penalty, top-k, ...): the HF backend ignores it too.
            generation_config="vllm",
            limit_mm_per_prompt={"image": max_images_per_prompt, "video": 0},
        )
        if max_model_len is not None:
            self.engine_kwargs["max_model_len"] = max_model_len
        if kv_cache_memory_bytes is not None:
            self.engine_kwargs["kv_cache_memory_bytes"] = kv_cache_memory_bytes
        else:
            self.engine_kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        self.sleep_requested = sleep
        self._llm = None
        self._asleep = False
        self._allowed_cache: tuple[tuple[int, ...], int, list[int]] | None = None
        self.weight_updates = 0
        # A model whose weights the engine must take before it samples next (set by
        # `training_backend`, so a resumed or LoRA-wrapped student is synced before its first rollout).
        self.pending_model: torch.nn.Module | None = None

    # ---- engine lifecycle ----------------------------------------------------------------------
    @property
    def llm(self):
        """The `vllm.LLM` engine, started on first use."""
        if self._llm is None:
            vllm = _import_vllm()
            from vllm.platforms import current_platform

            kwargs = dict(self.engine_kwargs)
            self.sleep_enabled = bool(self.sleep_requested and current_platform.is_sleep_mode_available())
            if self.sleep_enabled:
                kwargs["enable_sleep_mode"] = True
            self._llm = vllm.LLM(**kwargs)
        return self._llm

    def _wake(self) -> None:
        if self._asleep:
            self.llm.wake_up()
            self._asleep = False

    def sleep(self) -> None:
        """Release the KV cache and offload weights (GPU) until the next `generate`/`update_weights`."""
        if self._llm is not None and self.sleep_enabled and not self._asleep:
            self._llm.sleep(level=1)
            self._asleep = True

    def close(self) -> None:
        """Shut the engine down and release its memory (a later `generate` starts a new one)."""
        if self._llm is None:
            return
        import gc

        llm, self._llm = self._llm, None
        shutdown = getattr(llm.llm_engine, "shutdown", None)
        if callable(shutdown):
            shutdown()
        del llm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self._asleep = False

    @torch.no_grad()
    def update_weights(self, model: torch.nn.Module) -> None:
        """Copy `model`'s current weights into the engine (a LoRA student's merged, see `student_weights`).

        Uses the worker's `reload_weights` (plain `load_weights` changes parameters that some
        backends have already re-packed, e.g. the CPU build's linear layers), then drops every cache
        computed with the old weights: prefix (KV) cache, encoder cache (worker and scheduler) and the
        multimodal processor cache.
        """
        self._wake()
        # A generator: a LoRA student's merged weights exist one layer at a time, never all at once
        # (the engine runs in this process, so nothing is pickled).
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": student_weights(model)})
        # The worker dropped its encoder outputs; the scheduler must forget them too, or the next image
        # request is scheduled without its encoder run and fails ("Encoder cache miss").
        self.llm.llm_engine.reset_encoder_cache()
        self.llm.reset_prefix_cache()
        self.llm.reset_mm_cache()
        self.weight_updates += 1
        self.pending_model = None

    # ---- SamplerBackend --------------------------------------------------------------------------
    def _allowed_ids(self, suppress: tuple[int, ...]) -> list[int] | None:
        if not suppress:
            return None
        vocab = int(self.llm.llm_engine.model_config.get_vocab_size())
        if self._allowed_cache is None or self._allowed_cache[:2] != (suppress, vocab):
            banned = set(suppress)
            self._allowed_cache = (suppress, vocab, [t for t in range(vocab) if t not in banned])
        return self._allowed_cache[2]

    def generate(
        self,
        lm: LoadedModel,
        inputs: dict[str, torch.Tensor],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        greedy: bool,
        row_keys: torch.Tensor | None,
        suppress_token_ids: tuple[int, ...],
        eos_token_ids: tuple[int, ...],
        pad_token_id: int,
        row_images: Sequence[Sequence[Any]] | None = None,
    ) -> SampleOutput:
        """Sample one completion per row; see `SamplerBackend.generate`.

        `row_images[b]` are row b's PIL images in prompt order (required when the prompts hold
        image tokens).
        """
        from vllm import SamplingParams, TokensPrompt

        input_ids, attention = inputs["input_ids"].cpu(), inputs["attention_mask"].cpu().bool()
        n_rows = input_ids.shape[0]
        image_token_id = _image_token_id(lm)
        prompts, expected = [], []
        for b in range(n_rows):
            ids = input_ids[b][attention[b]].tolist()
            images = list(row_images[b]) if row_images is not None else []
            n_image_tokens = ids.count(image_token_id) if image_token_id is not None else 0
            if n_image_tokens and not images:
                raise ValueError(f"VLLMBackend.generate: row {b} has {n_image_tokens} image tokens but no images "
                                 "(pass row_images)")
            prompt = TokensPrompt(prompt_token_ids=collapse_image_runs(ids, image_token_id) if images else ids)
            if images:
                prompt["multi_modal_data"] = {"image": [_presize(lm, im) for im in images]}
            prompts.append(prompt)
            expected.append(ids)

        allowed = self._allowed_ids(tuple(suppress_token_ids))
        keys = row_keys.tolist() if (row_keys is not None and not greedy) else [None] * n_rows
        params = [
            SamplingParams(
                n=1,
                max_tokens=max_new_tokens,
                temperature=0.0 if greedy else temperature,
                top_p=1.0 if greedy else top_p,
                top_k=0 if greedy else -1,
                seed=None if key is None else int(key),
                logprobs=0,  # the sampled token's log-prob only
                stop_token_ids=list(eos_token_ids),
                allowed_token_ids=allowed,
                detokenize=False,
                skip_special_tokens=False,
            )
            for key in keys
        ]
        if self.pending_model is not None:
            self.update_weights(self.pending_model)
        self._wake()
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        self.sleep()

        width = max([len(o.outputs[0].token_ids) for o in outputs] + [1])
        completion = torch.full((n_rows, width), pad_token_id, dtype=torch.long)
        sampler_lp = torch.zeros((n_rows, width), dtype=torch.float32)
        for b, (out, ids) in enumerate(zip(outputs, expected)):
            if list(out.prompt_token_ids) != ids:
                raise RuntimeError(
                    f"VLLMBackend: the engine ran a different prompt for row {b} than the HF processor "
                    f"rendered ({len(out.prompt_token_ids)} vs {len(ids)} tokens; first difference at "
                    f"{_first_difference(out.prompt_token_ids, ids)}). The engine's processor ({self.model_path}) "
                    "must expand images exactly like the training model's processor."
                )
            seq = out.outputs[0]
            tokens = list(seq.token_ids)
            if seq.logprobs is None or len(seq.logprobs) != len(tokens):
                raise RuntimeError(f"VLLMBackend: row {b} came back without a log-prob per sampled token")
            completion[b, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            sampler_lp[b, : len(tokens)] = torch.tensor(
                [step[t].logprob for step, t in zip(seq.logprobs, tokens)], dtype=torch.float32
            )
        device = inputs["input_ids"].device
        return SampleOutput(completion_ids=completion.to(device), sampler_logprobs=sampler_lp.to(device),
                            policy_logprobs=None)


_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def training_backend(cfg, model: torch.nn.Module, num_processes: int, examples: Sequence[Any]) -> VLLMBackend:
    """The colocated engine of a training run (`rollout.backend: vllm`).

    Built from `student.path` in the student's dtype; it takes `model`'s weights before its first
    rollout (so resumed and LoRA-wrapped students are synced) and, via the trainer, after every step.
    """
    v = cfg.rollout.vllm
    if num_processes > 1:
        raise ConfigError(
            f"rollout.backend=vllm: {num_processes} training processes; the colocated engine is supported "
            "with one process so far (multi-GPU colocation needs vLLM's external_launcher, not wired yet). "
            "Use rollout.backend=hf for multi-process runs."
        )
    if v.tensor_parallel_size != 1:
        raise ConfigError("rollout.vllm.tensor_parallel_size: the colocated engine supports 1 so far, "
                          f"got {v.tensor_parallel_size}")
    path = Path(cfg.student.path)
    if path.is_dir():  # e.g. a previous stage's final/ (saved without a video processor)
        check_model_dir(path, write_missing=True)
    dtype = _DTYPE_NAMES.get(next(model.parameters()).dtype, "auto")
    max_images = max([len(ex.images) for ex in examples] + [1])
    backend = VLLMBackend(cfg.student.path, dtype=dtype, gpu_memory_utilization=v.gpu_memory_utilization,
                          max_model_len=v.max_model_len, tensor_parallel_size=v.tensor_parallel_size,
                          kv_cache_memory_bytes=v.kv_cache_memory_bytes, enforce_eager=v.enforce_eager,
                          sleep=v.sleep, max_images_per_prompt=max_images, seed=cfg.seed)
    backend.pending_model = model
    return backend


def check_model_dir(path: str | Path, *, write_missing: bool = False) -> None:
    """Make sure vLLM can load a local Qwen-VL directory: it builds the full processor and needs a
    `video_preprocessor_config.json`, which video-free processors (`build-tiny` output, this project's
    `final/` directories) do not save. With `write_missing` the file is written (and said so on
    stderr); otherwise, or when the directory is read-only, a clear error names the file."""
    import json
    import sys

    d = Path(path)
    try:
        model_type = json.loads((d / "config.json").read_text()).get("model_type", "")
    except (OSError, ValueError):
        return  # vLLM reports missing or broken configs itself
    if model_type not in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl") or (d / "video_preprocessor_config.json").exists():
        return
    if write_missing:
        try:
            target = write_video_processor_config(d)
        except OSError as e:
            raise ConfigError(f"{d}: vLLM needs video_preprocessor_config.json and writing it failed: {e}") from e
        print(f"vllm: wrote {target} (vLLM builds the full processor; videos stay disabled)", file=sys.stderr)
        return
    raise ConfigError(
        f"{d}: vLLM builds the model's full processor and needs video_preprocessor_config.json, which this "
        "directory lacks (video-free processors, e.g. build-tiny output, do not save one); write it with "
        "`python -c \"from vlm_opd.rollout.vllm_backend import write_video_processor_config as w; "
        f"w('{d}')\"`"
    )


def _presize(lm: LoadedModel, image):
    """`image` resized exactly as the training model's (PIL-backend) Qwen-VL image processor resizes it.

    vLLM builds the checkpoint's default image processor, which with torchvision installed is the
    torchvision backend; its bicubic resize differs from PIL's by ~1e-3 in pixel values (log-prob
    differences ~1e-4 on a tiny model). Handing vLLM an image that already has the target size makes
    both processors skip resizing (PIL and torchvision return same-size images unchanged), so the
    pixels agree. Processors without Qwen-VL's smart resize get the image unchanged.
    """
    proc = getattr(lm.processor, "image_processor", None)
    size = getattr(proc, "size", None)
    patch, merge = getattr(proc, "patch_size", None), getattr(proc, "merge_size", None)
    if proc is None or size is None or patch is None or merge is None or not getattr(proc, "do_resize", True):
        return image
    get = size.get if isinstance(size, dict) else lambda k: getattr(size, k, None)
    min_pixels, max_pixels = get("shortest_edge"), get("longest_edge")
    if min_pixels is None or max_pixels is None:
        return image
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    height, width = smart_resize(image.height, image.width, factor=patch * merge, min_pixels=min_pixels,
                                 max_pixels=max_pixels)
    if (height, width) == (image.height, image.width):
        return image
    resample = getattr(proc, "resample", None)
    return image.resize((width, height), resample=Image.Resampling(resample) if resample is not None else
                        Image.Resampling.BICUBIC)


def _image_token_id(lm: LoadedModel) -> int | None:
    if not lm.is_vision:
        return None
    token = getattr(lm.processor, "image_token", None)
    if token is None:
        return None
    tid = getattr(lm.processor, "image_token_id", None)
    return int(tid) if tid is not None else int(lm.tokenizer.convert_tokens_to_ids(token))


def _first_difference(a: Sequence[int], b: Sequence[int]) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def write_video_processor_config(model_dir: str | Path) -> Path:
    """Write `video_preprocessor_config.json` into a Qwen-VL model directory that lacks one.

    vLLM builds the model's full HF processor, whose video processor needs this file; directories
    saved by `build_tiny` (or any video-free processor) do not have it. Videos are disabled in the
    engine, so only the processor's construction matters; the values mirror the image processor.
    """
    import json

    from vlm_opd.io_utils import atomic_write_text

    d = Path(model_dir)
    target = d / "video_preprocessor_config.json"
    if target.exists():
        return target
    source = d / "preprocessor_config.json"
    if source.exists():
        image = json.loads(source.read_text())
    else:
        proc = d / "processor_config.json"
        if not proc.exists():
            raise ConfigError(f"{d}: neither preprocessor_config.json nor processor_config.json found")
        image = json.loads(proc.read_text()).get("image_processor")
        if not isinstance(image, dict):
            raise ConfigError(f"{proc}: no 'image_processor' entry to derive the video processor from")
    model_type = json.loads((d / "config.json").read_text()).get("model_type", "")
    cls = {"qwen2_vl": "Qwen2VLVideoProcessor", "qwen2_5_vl": "Qwen2VLVideoProcessor",
           "qwen3_vl": "Qwen3VLVideoProcessor"}.get(model_type)
    if cls is None:
        raise ConfigError(f"{d}: cannot derive a video processor for model_type {model_type!r}")
    keys = ("image_mean", "image_std", "patch_size", "merge_size", "temporal_patch_size", "do_convert_rgb",
            "do_normalize", "do_rescale", "rescale_factor")
    video = {k: image[k] for k in keys if k in image}
    video["video_processor_type"] = cls
    atomic_write_text(target, json.dumps(video, indent=1) + "\n")
    return target
