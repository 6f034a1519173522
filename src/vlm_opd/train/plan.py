"""What fits where: per-GPU memory of a training config under DDP and FSDP, without loading weights.

`model_shape` reads a model's `config.json` (a local directory, the offline hub cache, or the built-in
table `KNOWN_MODELS` of released Qwen-VL / Qwen3 configs) and builds it on the `meta` device to count
parameters exactly. `plan_memory` turns a `TrainConfig` plus the models' shapes into byte counts; it is a
pure function of its arguments.

Accounting (what `train/trainer.py` does; bytes per parameter):
- trainable student parameters (full fine-tune: the whole student, upcast by `model.float()`; LoRA: the
  adapters): float32 weights 4 (these are the master weights: no separate bf16 copy is kept) +
  float32 gradients 4 + AdamW m and v 4 + 4 = 16;
- a LoRA student's frozen base: its stored dtype (bf16: 2);
- frozen teacher and GRPO reference (grpo/papo/vold with grpo.kl_coef > 0): their stored dtype (bf16: 2);
- DDP with more than one process: the gradient buckets, a second float32 copy of every trainable
  gradient (4; accelerate's default `gradient_as_bucket_view=False`);
- bf16 autocast (mixed_precision auto on a GPU): the cast bf16 copies of the float32 Linear weights are
  cached by autocast during the forward and held by autograd until backward (2 per trainable weight
  outside the embedding and lm_head, which run in float32).

The FSDP column is `parallel.strategy: fsdp` (`train/fsdp.py`): FSDP2 `fully_shard` per decoder layer, the
root unit holding the rest (embeddings, lm_head, final norm, vision tower), a bf16 / float32-reduce
mixed-precision policy for the student: parameters, gradients and AdamW state of the student sharded over
the N processes, the teacher and reference sharded too in their stored dtype (or offloaded to the CPU).
Working sets add: two layers gathered at a time (one prefetched) and a layer's gradient in the compute
dtype plus its float32 copy before the reduce-scatter; the root unit gathered from a forward to the end
of the backward (the chunked losses read its lm_head) and its gradients; and while sampling the whole
sampling model gathered in its compute dtype (no collective may run during generation).

Activations are an estimate (documented term by term in `plan_memory`): the largest of three phases per
micro-batch (sampling, teacher scoring, the student's forward + backward), each on top of the static
memory above. Not counted: the CUDA context and NCCL buffers (see `headroom`), allocator
fragmentation, the periodic evaluation.

Sizes are GiB (2**30 bytes) as nvidia-smi reports them (an "80 GB" H100 shows 81,559 MiB = 79.6 GiB).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from vlm_opd.errors import ConfigError

GIB = 2**30

# Released checkpoints whose config the planner knows without a download (config.json / preprocessor
# values). Sources: the Qwen2.5-VL-3B, Qwen3-VL-2B and Qwen3-VL-8B entries are the presets of
# `vlm_opd.models.real_width` (sources listed there). Qwen3-VL-4B: text 2560 / FFN 9728 / 36 layers /
# 32 and 8 heads / tied embeddings, vision 24 blocks of 1024 (FFN 4096) with deepstack [5, 11, 17], out
# 2560 (the Qwen3-VL-4B-Instruct config.json as copied in public code, e.g. a Qwen3VLConfig dict with
# `"out_hidden_size": 2560`, transformers_version 4.57.0.dev0). Qwen3-VL-32B: text 5120 / FFN 25600 / 64
# layers / 64 and 8 heads / untied, vision 27 blocks of 1152 (FFN 4304), out 5120, deepstack [8, 16, 24]
# (public checkers of Qwen3-VL-32B-derived checkpoints assert exactly these). Qwen3-8B (text only):
# 4096 / 12288 / 36 layers / 32 and 8 heads / untied. Each count is checked in tests against the
# parameter count the model card reports (2.13B, 4.44B, 8.77B, 33.4B, 8.19B, 3.75B).
_QWEN3_VL_ROPE = {"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                  "mrope_interleaved": True}
_QWEN3_VL_IMAGE = {"min_pixels": 65536, "max_pixels": 16777216, "patch_size": 16, "merge_size": 2}
_QWEN25_VL_IMAGE = {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "merge_size": 2}


def _qwen3_vl(hidden, ffn, layers, heads, vis_depth, vis_hidden, vis_ffn, deepstack, tied):
    return {"family": "qwen3_vl", "tie_word_embeddings": tied, "image": _QWEN3_VL_IMAGE,
            "text": dict(hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                         max_position_embeddings=262144, rope_parameters=_QWEN3_VL_ROPE),
            "vision": dict(depth=vis_depth, hidden_size=vis_hidden, intermediate_size=vis_ffn, num_heads=16,
                           out_hidden_size=hidden, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                           num_position_embeddings=2304, deepstack_visual_indexes=deepstack)}


KNOWN_MODELS: dict[str, dict[str, Any]] = {
    "Qwen/Qwen3-VL-2B-Instruct": _qwen3_vl(2048, 6144, 28, 16, 24, 1024, 4096, [5, 11, 17], True),
    "Qwen/Qwen3-VL-4B-Instruct": _qwen3_vl(2560, 9728, 36, 32, 24, 1024, 4096, [5, 11, 17], True),
    "Qwen/Qwen3-VL-8B-Instruct": _qwen3_vl(4096, 12288, 36, 32, 27, 1152, 4304, [8, 16, 24], False),
    "Qwen/Qwen3-VL-32B-Instruct": _qwen3_vl(5120, 25600, 64, 64, 27, 1152, 4304, [8, 16, 24], False),
    "Qwen/Qwen2.5-VL-3B-Instruct": {
        "family": "qwen2_5_vl", "tie_word_embeddings": True, "image": _QWEN25_VL_IMAGE,
        "text": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                     num_key_value_heads=2, vocab_size=151936, max_position_embeddings=128000,
                     rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                      "mrope_section": [16, 24, 24]}),
        "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                       patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                       fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2)},
    "Qwen/Qwen3-8B": {
        "family": "qwen3", "tie_word_embeddings": False, "image": None,
        "text": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, vocab_size=151936, max_position_embeddings=40960)},
}
# The Thinking releases share the Instruct architecture.
for _name in [n for n in KNOWN_MODELS if n.endswith("-Instruct") and "Qwen3-VL" in n]:
    KNOWN_MODELS[_name.replace("-Instruct", "-Thinking")] = KNOWN_MODELS[_name]


@dataclass(frozen=True)
class ModelShape:
    """What the planner needs to know about one model (from its config; no weights).

    Attributes:
        name: the path or hub name asked for.
        source: where the shape came from ("config.json in DIR", "hub cache", "built-in table").
        params: total parameters (tied embeddings counted once).
        dtype_bytes: bytes per parameter as stored (bf16: 2).
        hidden, layers, heads, kv_heads, head_dim, ffn, vocab: text decoder widths.
        qk_norm: the attention normalises q and k per head (Qwen3 families).
        layer_params: parameters of the largest decoder layer (an FSDP unit).
        lm_head_params: parameters of the output projection ([V, H]).
        root_params: parameters outside the decoder layers (embeddings, lm_head, final norm, vision
            tower): FSDP's root unit.
        tied_embeddings: the lm_head is the input embedding (one parameter, two gradient contributions).
        vision: vision-tower widths (depth, hidden, ffn) or None for a text-only model.
        image: processor settings (min_pixels, max_pixels, patch_size, merge_size) or None.
        lora_targets: {target name: (in_features, out_features, count)} of the Linear modules by name,
            for counting LoRA adapters.
    """

    name: str
    source: str
    params: int
    dtype_bytes: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    qk_norm: bool
    layer_params: int
    lm_head_params: int
    tied_embeddings: bool = False
    root_params: int = 0
    vision: dict[str, int] | None = None
    image: dict[str, int] | None = None
    linear_shapes: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    def lora_params(self, r: int, targets: list[str]) -> int:
        """LoRA adapter parameters (A: r x in, B: out x r) for Linear modules named like `targets` (peft matches
        the last name component)."""
        return sum(r * (i + o) for t in targets for i, o in self.linear_shapes.get(t, []))


_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def _shape_from_config(config, name: str, source: str, kind: str, image: dict | None) -> ModelShape:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    has_vision = getattr(config, "vision_config", None) is not None
    if kind == "auto":
        kind = "vlm" if has_vision else "lm"
    cls = AutoModelForImageTextToText if kind == "vlm" else AutoModelForCausalLM
    with torch.device("meta"):
        model = cls.from_config(config)
    params = sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once
    text = config.get_text_config(decoder=True)
    layer_params = 0
    linear: dict[str, list[tuple[int, int]]] = {}
    for mod_name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            linear.setdefault(mod_name.rsplit(".", 1)[-1], []).append((mod.in_features, mod.out_features))
        if mod_name.endswith(f"layers.{text.num_hidden_layers - 1}") or mod_name.endswith("layers.0"):
            layer_params = max(layer_params, sum(p.numel() for p in mod.parameters()))
    out = model.get_output_embeddings()
    tied = out.weight is model.get_input_embeddings().weight
    in_layers = sum(p.numel() for p in model.get_decoder().layers.parameters())
    heads = int(text.num_attention_heads)
    head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
    vision = None
    if has_vision and kind == "vlm":
        vc = config.vision_config
        # Qwen2-VL: embed_dim is the tower's width and hidden_size its output; later families: hidden_size.
        vision = {"depth": int(vc.depth), "hidden": int(getattr(vc, "embed_dim", None) or vc.hidden_size),
                  "ffn": int(getattr(vc, "intermediate_size", None) or vc.embed_dim * vc.mlp_ratio)}
    stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    stored = str(stored).removeprefix("torch.") if stored is not None else "float32"
    return ModelShape(
        name=name, source=source, params=int(params), dtype_bytes=_DTYPE_BYTES.get(stored, 4),
        hidden=int(text.hidden_size), layers=int(text.num_hidden_layers), heads=heads,
        kv_heads=int(getattr(text, "num_key_value_heads", None) or heads), head_dim=head_dim,
        ffn=int(text.intermediate_size), vocab=int(text.vocab_size),
        qk_norm=any(n.endswith("q_norm") for n, _ in model.named_modules()),
        layer_params=int(layer_params), lm_head_params=int(out.weight.numel()), tied_embeddings=tied,
        root_params=int(params - in_layers),
        vision=vision, image=image if kind == "vlm" else None, linear_shapes=linear)


def _image_settings(src: Path) -> dict[str, int] | None:
    """min/max pixels, patch and merge size from preprocessor_config.json, or from processor_config.json's
    `image_processor` (where transformers 5 saves them)."""
    d = None
    if (src / "preprocessor_config.json").is_file():
        d = json.loads((src / "preprocessor_config.json").read_text())
    elif (src / "processor_config.json").is_file():
        d = json.loads((src / "processor_config.json").read_text()).get("image_processor")
    if not d:
        return None
    size = d.get("size") or {}
    lo = d.get("min_pixels") or size.get("shortest_edge")
    hi = d.get("max_pixels") or size.get("longest_edge")
    if lo is None or hi is None:
        return None
    return {"min_pixels": int(lo), "max_pixels": int(hi), "patch_size": int(d.get("patch_size", 14)),
            "merge_size": int(d.get("merge_size", 2))}


def _known_config(entry: dict[str, Any]):
    from transformers import Qwen2_5_VLConfig, Qwen3Config, Qwen3VLConfig

    tied = entry["tie_word_embeddings"]
    text = dict(entry["text"], tie_word_embeddings=tied)
    if entry["family"] == "qwen3":
        return Qwen3Config(**text, dtype="bfloat16")
    cls = Qwen3VLConfig if entry["family"] == "qwen3_vl" else Qwen2_5_VLConfig
    return cls(text_config=text, vision_config=dict(entry["vision"]), tie_word_embeddings=tied, dtype="bfloat16")


def model_shape(name: str, *, kind: str = "auto", dtype: str = "auto") -> ModelShape:
    """The shape of the model `name` (local directory, cached hub name, or a `KNOWN_MODELS` name), no weights.

    `dtype` is the config's `student.dtype` / `teacher.dtype` (auto: the checkpoint's own).
    """
    from transformers import AutoConfig

    src = Path(name).expanduser()
    shape = None
    if src.is_dir():
        if not (src / "config.json").is_file():
            raise ConfigError(f"model {name!r}: {src} has no config.json")
        shape = _shape_from_config(AutoConfig.from_pretrained(src), name, f"config.json in {src}", kind,
                                   _image_settings(src))
    elif name in KNOWN_MODELS:
        entry = KNOWN_MODELS[name]
        shape = _shape_from_config(_known_config(entry), name, "built-in table (vlm_opd.train.plan.KNOWN_MODELS)",
                                   kind, entry["image"])
    else:
        try:  # a hub name already in the local cache (no download)
            config = AutoConfig.from_pretrained(name, local_files_only=True)
        except Exception:  # noqa: BLE001 - not cached / not a model: the error below names the fixes
            raise ConfigError(
                f"model {name!r}: not a local directory, not in the offline hub cache and not in the built-in "
                f"table ({', '.join(sorted(KNOWN_MODELS))}). The planner needs only its config.json (and "
                f"preprocessor_config.json for image tokens), e.g. `hf download {name} config.json "
                "preprocessor_config.json --local-dir DIR` and pass DIR") from None
        image = None
        try:
            from huggingface_hub import hf_hub_download

            image = _image_settings(Path(hf_hub_download(name, "preprocessor_config.json",
                                                         local_files_only=True)).parent)
        except Exception:  # noqa: BLE001 - no cached processor config: image tokens need --image-tokens
            pass
        shape = _shape_from_config(config, name, "hub cache", kind, image)
    if dtype != "auto":
        shape = replace(shape, dtype_bytes=_DTYPE_BYTES[dtype])
    return shape


# ------------------------------------------------------------------------------------------------
# Image tokens


def image_tokens(image: dict[str, int] | None, width: int | None = None, height: int | None = None) -> int:
    """Language-model tokens of one image: the processor's resize (`smart_resize`) then (side / (patch x merge))^2.

    Without `width` / `height`: the largest image the processor lets through (max_pixels), the worst case.
    """
    if image is None:
        return 0
    factor = image["patch_size"] * image["merge_size"]
    if width is None or height is None:
        return image["max_pixels"] // factor**2
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    h, w = smart_resize(height, width, factor=factor, min_pixels=image["min_pixels"], max_pixels=image["max_pixels"])
    return (h // factor) * (w // factor)


# ------------------------------------------------------------------------------------------------
# The plan


@dataclass
class Workload:
    """The per-process micro-batch the memory depends on (derived from the config by `workload`)."""

    rows: int  # sequences in one student forward (prompts per micro-batch x K)
    prompts: int  # prompts per micro-batch per process
    prompt_tokens: int  # longest prompt, text + image tokens (student)
    completion_tokens: int  # rollout.max_new_tokens (sft.max_length for sft/kd)
    image_tokens: int  # LM tokens per image
    images_per_prompt: int
    teacher_rows: int  # rows of one teacher forward (2 x rows for VA-OPD's batched real + degraded pass)
    teacher_prompt_tokens: int  # a text-only teacher sees no image tokens
    sampler: str  # "student" | "teacher" (sft/kd with sft.target=teacher) | "none"


POLICY = ("grpo", "papo", "vold")


def needs_teacher(cfg) -> bool:
    """Whether the trainer loads a teacher for `cfg` (the same rule as `train/trainer.py`)."""
    from vlm_opd.train.trainer import TEACHER_METHODS

    return cfg.method in TEACHER_METHODS or (cfg.method == "sft" and cfg.sft.target == "teacher")


def workload(cfg, n_gpus: int, student: ModelShape, teacher: ModelShape | None, *, text_tokens: int,
             images_per_prompt: int, image_size: tuple[int, int] | None, accelerator: bool = True) -> Workload:
    """The per-process micro-batch of `cfg` on `n_gpus` processes.

    Prompt length: `data.max_prompt_tokens` when set (the trainer refuses longer prompts), else `text_tokens`
    plus `images_per_prompt` images of `image_size` (None: the processor's max_pixels, the worst case).
    """
    if cfg.prompts_per_step % (n_gpus * cfg.grad_accum):
        ok = [a for a in range(1, cfg.prompts_per_step + 1) if cfg.prompts_per_step % (n_gpus * a) == 0]
        hint = f"; e.g. override grad_accum={ok[-1]}" if ok else ""
        raise ConfigError(f"prompts_per_step ({cfg.prompts_per_step}) must be divisible by processes x grad_accum "
                          f"({n_gpus} x {cfg.grad_accum}), as the trainer requires{hint}")
    prompts = cfg.prompts_per_step // (n_gpus * cfg.grad_accum)
    teacher = teacher if needs_teacher(cfg) else None
    w, h = image_size if image_size else (None, None)
    n_img = image_tokens(student.image, w, h) if student.image else 0
    prompt = text_tokens + images_per_prompt * n_img
    if cfg.data.max_prompt_tokens is not None:
        prompt = cfg.data.max_prompt_tokens
    sequence = cfg.method in ("sft", "kd")
    rows = prompts if sequence else prompts * cfg.rollout.k
    completion = cfg.sft.max_length if sequence else cfg.rollout.max_new_tokens
    if cfg.method == "sft" and cfg.sft.target == "solution":
        sampler = "none"
    elif sequence:
        sampler = "teacher"
    else:
        sampler = "student"
    t_rows, t_prompt = 0, 0
    if teacher is not None:
        t_rows = rows
        need_va = cfg.method == "va_opd" or cfg.token_mask.which in ("top", "bottom")
        batched = cfg.va_opd.batch_real_and_degraded
        if batched is None:  # the trainer's auto: batched on an accelerator
            batched = accelerator
        if need_va and batched and teacher.image is not None:
            t_rows = 2 * rows
        t_prompt = prompt if teacher.image is not None else text_tokens
    return Workload(rows=rows, prompts=prompts, prompt_tokens=prompt, completion_tokens=completion,
                    image_tokens=n_img, images_per_prompt=images_per_prompt, teacher_rows=t_rows,
                    teacher_prompt_tokens=t_prompt, sampler=sampler)


def layer_activation_bytes(m: ModelShape, bf16: bool) -> int:
    """Bytes autograd saves per token in one decoder layer (Qwen-VL / Qwen3 layer, sdpa attention).

    Counted tensor by tensor: the fp32 residual stream (the master weights are fp32, so the embeddings and
    every residual add are fp32) and both RMSNorms' saved input and normalised value (fp32: 6 x H);
    q / k (after their per-head norm on Qwen3) and v, the attention output and o_proj's input; the MLP's gate,
    activation, up and product ([I] each). Under bf16 autocast the projections' outputs are bf16 and
    each Linear saves its own bf16 cast of its fp32 input (q, k, v: 3 x H; gate, up: 2 x H).
    """
    H, Hq, Hkv, ffn = m.hidden, m.heads * m.head_dim, m.kv_heads * m.head_dim, m.ffn
    if not bf16:
        n = 6 * H + 3 * Hq + 2 * Hkv + 4 * ffn
        if m.qk_norm:
            n += 2 * Hq + 2 * Hkv  # q_norm / k_norm: input and normalised value
        return 4 * n
    b = 4 * 6 * H + 2 * 5 * H + 2 * (3 * Hq + 2 * Hkv + 4 * ffn)
    if m.qk_norm:
        b += 6 * (Hq + Hkv)  # fp32 upcast of the bf16 input (4) + bf16 normalised value (2)
    return b


def forward_peak_bytes(m: ModelShape, bf16: bool) -> int:
    """Bytes per token alive at the peak of one no-grad decoder layer (teacher scoring, sampling prefill)."""
    s = 2 if bf16 else 4
    H = m.hidden
    return 2 * s * H + 8 * H + s * (m.heads * m.head_dim + 2 * m.kv_heads * m.head_dim) + 3 * s * m.ffn


def vision_activation_bytes(m: ModelShape, bf16: bool) -> int:
    """Bytes autograd saves per image patch in one vision block (LayerNorms, qkv, attention, GELU MLP)."""
    if m.vision is None:
        return 0
    s = 2 if bf16 else 4
    Hv, Iv = m.vision["hidden"], m.vision["ffn"]
    return 4 * 4 * Hv + s * (6 * Hv + 2 * Iv)


@dataclass
class Plan:
    """Per-GPU bytes for one parallelism. `static`: held for the whole run; `phases`: the working set of
    each phase of a micro-batch (sampling, teacher scoring, student forward + backward)."""

    parallel: str
    static: dict[str, int]
    phases: dict[str, dict[str, int]]

    @property
    def static_bytes(self) -> int:
        return sum(self.static.values())

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=lambda k: sum(self.phases[k].values()))

    @property
    def peak_bytes(self) -> int:
        return self.static_bytes + max((sum(v.values()) for v in self.phases.values()), default=0)


def plan_memory(cfg, student: ModelShape, teacher: ModelShape | None, wl: Workload, n_gpus: int, parallel: str,
                *, bf16: bool = True, offload_teacher: bool = False, gpu_mem_gib: float = 80.0) -> Plan:
    """Per-GPU memory of `cfg` under `parallel` ("ddp" or "fsdp") on `n_gpus` processes.

    Static (see the module docstring for the bytes per parameter) plus three phase working sets:
    - sampling: the sampler's KV cache (rows x (prompt + completion) x layers x 2 x kv width, bf16 under
      autocast), plus a no-grad forward of the prompt (prefill) and one [rows, V] float32 logits row;
    - teacher scoring (no grad): one layer's peak over the teacher's rows (2 x rows for VA-OPD's batched
      real + degraded pass) and the kept final hidden states, plus the chunked log-prob buffers;
    - student forward + backward: the decoder's saved activations (all layers, or with gradient
      checkpointing each layer's input plus one recomputed layer), the vision tower's, the final hidden
      states and their [N, H] gathers, the chunked loss buffers (3 x chunk_size x V float32; 6 for jsd),
      float32 upcasts of bf16 lm_head weights read by the chunked losses, the teacher's kept hidden
      states, and under DDP + bf16 autocast the cached bf16 weight copies.
    """
    if parallel not in ("ddp", "fsdp"):
        raise ConfigError(f"parallel: expected ddp or fsdp, got {parallel!r}")
    shard = n_gpus if parallel == "fsdp" else 1
    teacher = teacher if needs_teacher(cfg) else None
    s = 2 if bf16 else 4
    lora = cfg.lora.enabled
    trainable = student.lora_params(cfg.lora.r, cfg.lora.target_modules) if lora else student.params
    static: dict[str, int] = {}
    # FSDP leaves a LoRA student whole on every process (DDP-style) and shards only the frozen models.
    s_shard = 1 if lora else shard
    if lora:
        static["student frozen base (stored dtype)"] = student.params * student.dtype_bytes // s_shard
    static["student trainable weights (fp32 master)"] = 4 * trainable // s_shard
    static["student gradients (fp32)"] = 4 * trainable // s_shard
    static["AdamW m + v (fp32)"] = 8 * trainable // s_shard
    if s_shard == 1 and n_gpus > 1:
        static["DDP gradient buckets (fp32)"] = 4 * trainable
    if teacher is not None:
        key = "teacher (stored dtype" + (", CPU offload)" if offload_teacher and parallel == "fsdp" else ")")
        static[key] = 0 if (offload_teacher and parallel == "fsdp") else teacher.params * teacher.dtype_bytes // shard
    if cfg.method in POLICY and cfg.grpo.kl_coef > 0:
        static["GRPO reference (stored dtype)"] = student.params * student.dtype_bytes // shard
    if cfg.rollout.backend == "vllm":
        vb = cfg.rollout.vllm
        static["vLLM engine (weights + KV cache)"] = (vb.kv_cache_memory_bytes + 2 * student.params
                                                      if vb.kv_cache_memory_bytes else
                                                      int(vb.gpu_memory_utilization * gpu_mem_gib * GIB))

    L = wl.prompt_tokens + wl.completion_tokens
    V = student.vocab
    chunk = cfg.loss.chunk_size
    phases: dict[str, dict[str, int]] = {}

    # Sampling (no grad).
    sampling: dict[str, int] = {}
    if wl.sampler != "none" and cfg.rollout.backend != "vllm":
        sm = teacher if wl.sampler == "teacher" else student
        prompt = wl.teacher_prompt_tokens if sm is teacher else wl.prompt_tokens  # a text-only teacher: no image
        rows = wl.rows
        sampling["KV cache"] = rows * (prompt + wl.completion_tokens) * sm.layers * 2 * sm.kv_heads * sm.head_dim * s
        sampling["prefill (one layer, no grad)"] = rows * prompt * forward_peak_bytes(sm, bf16)
        sampling["last-position logits (fp32)"] = rows * V * 4 * 2
        if parallel == "fsdp" and (sm is teacher or not lora):  # `fsdp.gathered`: the whole sampling model
            sampling["FSDP: whole model gathered for sampling"] = sm.params * (sm.dtype_bytes if sm is teacher else s)
    phases["sampling"] = sampling

    # Teacher scoring (no grad).
    full_vocab = cfg.loss.divergence in ("reverse_kl", "forward_kl", "jsd")
    if teacher is not None and cfg.method != "sft":
        t_tokens = wl.teacher_rows * (wl.teacher_prompt_tokens + wl.completion_tokens)
        ts = teacher.dtype_bytes  # its final norm returns its own (residual) dtype
        scoring = {
            "teacher layer peak (no grad)": t_tokens * forward_peak_bytes(teacher, bf16),
            "teacher final hidden states": t_tokens * teacher.hidden * ts,
            "chunked log-prob buffers (fp32)": 3 * chunk * V * 4,
            "teacher lm_head fp32 upcast": teacher.lm_head_params * 4 if teacher.dtype_bytes < 4 else 0,
        }
        if parallel == "fsdp":  # frozen: no mixed-precision policy, gathered in the stored dtype
            scoring["FSDP gathered layers (2 x stored)"] = 2 * teacher.dtype_bytes * teacher.layer_params
            scoring["FSDP gathered root unit (embeddings, lm_head, vision)"] = teacher.dtype_bytes * teacher.root_params
        phases["teacher scoring"] = scoring

    # Student forward + backward.
    tokens = wl.rows * L
    completion = wl.rows * wl.completion_tokens
    train: dict[str, int] = {}
    per_layer = layer_activation_bytes(student, bf16)
    if cfg.student.gradient_checkpointing:
        train["decoder: layer inputs (grad checkpointing)"] = tokens * student.layers * student.hidden * 4
        train["decoder: one recomputed layer"] = tokens * per_layer
    else:
        train["decoder: saved activations"] = tokens * student.layers * per_layer
    train["attention masks (bool, [rows, 1, L, L])"] = wl.rows * L * L
    if student.vision is not None and wl.image_tokens:
        merge = (student.image or {}).get("merge_size", 2)
        patches = wl.prompts * wl.images_per_prompt * wl.image_tokens * merge**2
        if cfg.method == "papo":
            patches *= 2  # the masked-image pass
        vis, depth, width = vision_activation_bytes(student, bf16), student.vision["depth"], student.vision["hidden"]
        if cfg.student.gradient_checkpointing:  # each block's fp32 input, plus one recomputed block
            train["vision tower activations"] = patches * (depth * width * 4 + vis)
        else:
            train["vision tower activations"] = patches * depth * vis
    # The final RMSNorm saves its input and normalised value besides its output; the completion rows are
    # gathered into [N, H] (and their gradient); one layer's activation gradients exist during backward.
    train["final norm + hidden states + [N, H] gathers (fp32)"] = (3 * tokens + 2 * completion) * student.hidden * 4
    train["backward: one layer's activation gradients"] = tokens * (2 * student.hidden * 4 + 2 * student.ffn * s)
    if not lora and student.tied_embeddings:
        # Tied lm_head / embedding: backward produces two [V, H] gradients for one parameter; the second
        # is a transient float32 tensor added into the first.
        train["tied embedding: second [V, H] gradient (fp32)"] = student.lm_head_params * 4
    bufs = 6 if cfg.loss.divergence == "jsd" else 3
    train["chunked loss buffers (fp32)"] = bufs * chunk * V * 4
    if lora and student.dtype_bytes < 4:
        train["student lm_head fp32 upcast"] = student.lm_head_params * 4
    if teacher is not None and cfg.method in ("opd", "va_opd", "kd", "vold") and full_vocab:
        # teacher_signals returns a slice (a view) of the whole [rows, L, H_t] final hidden states, so all of
        # it stays alive; the chunked divergence gathers the completion rows into [N, H_t].
        ts = teacher.dtype_bytes
        t_all = wl.teacher_rows * (wl.teacher_prompt_tokens + wl.completion_tokens)
        train["teacher hidden states kept (+ gathered)"] = (t_all + completion) * teacher.hidden * ts
        if teacher.dtype_bytes < 4:
            train["teacher lm_head fp32 upcast"] = teacher.lm_head_params * 4
        if cfg.method == "va_opd" and cfg.va_opd.va_kind == "teacher_shift":
            train["teacher hidden states kept (+ gathered)"] *= 2
    if s_shard == 1 and bf16:
        # Only Linear / conv weights are cast: the embedding runs in float32 and the chunked losses read the
        # lm_head with autocast off.
        cast = trainable if lora else trainable - student.vocab * student.hidden - (
            0 if student.tied_embeddings else student.lm_head_params)
        train["bf16 weight copies cached by autocast"] = 2 * cast
    if parallel == "fsdp" and not lora:
        # layers: two gathered, one layer's gradient in the compute dtype and its float32 copy for the reduce
        train["FSDP layers gathered (2) + a layer's grad (+fp32)"] = (3 * s + 4) * student.layer_params
        train["FSDP root unit gathered + its grad (+fp32)"] = (2 * s + 4) * student.root_params
        if s < 4:  # the chunked losses compute in float32 from the gathered bf16 lm_head
            train["FSDP lm_head fp32 upcast"] = 4 * student.lm_head_params
    if parallel == "fsdp":
        if teacher is not None and cfg.method != "sft":  # released after the step: its lm_head feeds the loss
            train["FSDP teacher root unit still gathered"] = teacher.dtype_bytes * teacher.root_params
    phases["student forward + backward"] = train

    # GRPO-family: the old-policy (and reference) log-probs, a no-grad forward of the student's shape.
    if cfg.method in POLICY:
        scoring = {"student layer peak (no grad)": tokens * forward_peak_bytes(student, bf16),
                   "final hidden states": tokens * student.hidden * s,
                   "chunked log-prob buffers (fp32)": 3 * chunk * V * 4}
        if parallel == "fsdp" and not lora:
            scoring["FSDP gathered layers (2) + root unit"] = s * (2 * student.layer_params + student.root_params)
        phases["policy / reference scoring"] = scoring
    return Plan(parallel=parallel, static=static, phases=phases)


# ------------------------------------------------------------------------------------------------
# Report


def fits(plan: Plan, gpu_mem_gib: float, headroom: float) -> bool:
    return plan.peak_bytes <= gpu_mem_gib * GIB * (1 - headroom)


def report(plans: list[Plan], *, gpu_mem_gib: float, headroom: float) -> dict[str, Any]:
    """A JSON-ready summary of several plans (one per parallelism)."""
    out = {}
    for p in plans:
        out[p.parallel] = {
            "static_gib": p.static_bytes / GIB,
            "peak_gib": p.peak_bytes / GIB,
            "peak_phase": p.peak_phase,
            "fits": fits(p, gpu_mem_gib, headroom),
            "static": {k: v / GIB for k, v in p.static.items()},
            "phases": {k: {kk: vv / GIB for kk, vv in v.items()} for k, v in p.phases.items()},
        }
    return out


def shape_summary(m: ModelShape) -> dict[str, Any]:
    d = asdict(m)
    d.pop("linear_shapes")
    return d


__all__ = ["GIB", "KNOWN_MODELS", "ModelShape", "Plan", "Workload", "fits", "image_tokens", "layer_activation_bytes",
           "model_shape", "plan_memory", "report", "workload"]
