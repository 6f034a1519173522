"""Typed training configuration: dataclasses with help text and range checks, YAML + key=value overrides.

A config file is YAML whose keys mirror `TrainConfig`; overrides on the command line use dotted keys
(`optim.lr=1e-5 rollout.k=8`). Unknown keys, wrong types and impossible values raise `ConfigError`
naming the key (with a "did you mean" for typos). Every field carries help text in its metadata;
`describe_config()` renders it for `vlm-opd train --help-config`.

`stages:` chains several runs (e.g. VOLD's SFT cold start followed by GRPO+distillation): each stage is
a mapping of overrides applied to the base config, and each stage starts from the previous stage's final
student weights.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vlm_opd.errors import ConfigError

METHODS = ("sft", "kd", "opd", "va_opd", "grpo", "papo", "vold")
DIVERGENCES = ("reverse_kl", "forward_kl", "jsd", "k1", "k2", "k3")
DEGRADATIONS = ("pixelate", "blur", "blank", "patch-mask")


def _f(default: Any = dataclasses.MISSING, help: str = "", factory: Any = None) -> Any:
    """A dataclass field with help text (and a default or default factory)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


@dataclass
class ModelConfig:
    path: str | None = _f(None, "local directory or hub name of the model (student: always required; teacher: "
                          "for kd, opd, va_opd, vold and sft with sft.target=teacher)")
    kind: str = _f("auto", "auto | vlm | lm: load as a vision-language model or a text-only causal LM")
    dtype: str = _f("auto", "auto | float32 | bfloat16 | float16: the dtype the model's weights are loaded in "
                    "(auto: the checkpoint's own, bfloat16 for the released Qwen-VL / Qwen3 checkpoints). Frozen "
                    "models (teacher, GRPO reference) stay in it. The student's trainable weights are always "
                    "trained as float32 master weights with float32 AdamW state (full fine-tune: the whole "
                    "student is upcast; LoRA: the base stays in this dtype, the adapters are float32), and its "
                    "final/ is written back in this dtype")
    device: str | None = _f(None, "device for this model (e.g. cuda:1 to put the teacher on its own GPU); "
                            "default: the accelerator's device")
    attn_implementation: str | None = _f(None, "attention kernel passed to transformers (eager, sdpa, "
                                         "flash_attention_2)")
    gradient_checkpointing: bool = _f(False, "recompute activations in backward to save memory (student)")
    chat_template_kwargs: dict[str, Any] = _f(factory=dict, help="extra chat-template variables, e.g. "
                                              "{enable_thinking: false} for a Qwen3 text teacher")

    def validate(self, prefix: str) -> None:
        _check(self.kind in ("auto", "vlm", "lm"), f"{prefix}.kind", f"expected auto|vlm|lm, got {self.kind!r}")
        _check(self.dtype in ("auto", "float32", "bfloat16", "float16"), f"{prefix}.dtype",
               f"expected auto|float32|bfloat16|float16, got {self.dtype!r}")


@dataclass
class LoraConfig:
    enabled: bool = _f(False, "train a LoRA adapter on the student instead of all weights (peft)")
    r: int = _f(16, "LoRA rank")
    alpha: int = _f(32, "LoRA alpha (scale = alpha / r)")
    dropout: float = _f(0.0, "LoRA dropout")
    target_modules: list[str] = _f(
        factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        help="module names to adapt (language model only by default)",
    )

    def validate(self, prefix: str) -> None:
        _check(self.r >= 1, f"{prefix}.r", f"must be >= 1, got {self.r}")
        _check(0.0 <= self.dropout < 1.0, f"{prefix}.dropout", f"must be in [0, 1), got {self.dropout}")
        _check(len(self.target_modules) > 0, f"{prefix}.target_modules", "must not be empty")


@dataclass
class DataConfig:
    train: str | None = _f(None, "training prompts: JSONL/JSON/Parquet file, a directory, a "
                           "save_to_disk dataset, a hub dataset name, or synthetic:N for the built-in task")
    eval: str | None = _f(None, "held-out prompts for periodic evaluation (same formats)")
    split: str | None = _f(None, "split name when loading a hub dataset or a DatasetDict")
    eval_split: str | None = _f(None, "split name for the eval dataset")
    image_root: str | None = _f(None, "directory that relative image paths are resolved against "
                                "(default: the data file's directory)")
    limit: int | None = _f(None, "use only the first N training rows")
    eval_limit: int | None = _f(None, "use only the first N eval rows")
    skip_bad_rows: bool = _f(False, "skip (count and log to skipped_rows.jsonl) rows with missing fields, "
                             "corrupt images or too-long prompts instead of stopping")
    max_prompt_tokens: int | None = _f(None, "longest prompt (text + image tokens) accepted; longer ones are an "
                                       "error, or a counted skip with skip_bad_rows, checked before training "
                                       "starts (null: the smallest context of student and teacher minus "
                                       "rollout.max_new_tokens, or sft.max_length for sft)")
    system_prompt: str | None = _f(None, "system message prepended to every prompt")
    field_map: dict[str, str] = _f(factory=dict, help="rename dataset columns: {problem: question, ...}")
    synthetic: dict[str, Any] = _f(factory=dict, help="knobs of the built-in task for synthetic:N (num_values, "
                                   "value_range, tasks, image_size, holdout_fraction, holdout, filler_sentences, filler_skew, "
                                   "shortcut (P(the question's hint is the answer) on the train split: a language "
                                   "shortcut), shortcut_eval (the same on the eval split, default 0: the shortcut "
                                   "fails there); see vlm_opd.data.synthetic.SynthConfig)")

    def validate(self, prefix: str) -> None:
        for key in ("limit", "eval_limit", "max_prompt_tokens"):
            v = getattr(self, key)
            _check(v is None or v >= 1, f"{prefix}.{key}", f"must be >= 1, got {v}")


@dataclass
class VLLMConfig:
    gpu_memory_utilization: float = _f(0.3, "fraction of the GPU's memory the colocated vLLM engine may take "
                                       "(weights + KV cache); the rest stays with training")
    max_model_len: int | None = _f(None, "longest prompt + completion the engine accepts, in tokens "
                                   "(default: the model's max_position_embeddings; set it to prompt + "
                                   "rollout.max_new_tokens to shrink the KV cache)")
    tensor_parallel_size: int = _f(1, "GPUs one engine is sharded over (colocated training supports 1)")
    sleep: bool = _f(True, "release the KV cache and offload the engine's weights while the student "
                     "updates (vLLM sleep mode, GPU only; a no-op on the CPU build)")
    kv_cache_memory_bytes: int | None = _f(None, "fixed KV-cache size in bytes instead of "
                                           "gpu_memory_utilization (the CPU build and tests use this)")
    enforce_eager: bool = _f(False, "disable CUDA graphs / compilation (slower decoding, faster start)")

    def validate(self, prefix: str) -> None:
        _check(0 < self.gpu_memory_utilization <= 1, f"{prefix}.gpu_memory_utilization",
               f"must be in (0, 1], got {self.gpu_memory_utilization}")
        _check(self.max_model_len is None or self.max_model_len >= 2, f"{prefix}.max_model_len",
               f"must be >= 2 or null, got {self.max_model_len}")
        _check(self.tensor_parallel_size >= 1, f"{prefix}.tensor_parallel_size",
               f"must be >= 1, got {self.tensor_parallel_size}")
        _check(self.kv_cache_memory_bytes is None or self.kv_cache_memory_bytes > 0,
               f"{prefix}.kv_cache_memory_bytes", f"must be > 0 or null, got {self.kv_cache_memory_bytes}")


ROLLOUT_BACKENDS = ("hf", "vllm")


@dataclass
class RolloutConfig:
    k: int = _f(4, "rollouts sampled per prompt (K in the papers)")
    max_new_tokens: int = _f(512, "maximum completion length")
    temperature: float = _f(1.0, "sampling temperature for rollouts")
    top_p: float = _f(1.0, "nucleus sampling threshold for rollouts")
    backend: str = _f("hf", "sampling engine: hf (transformers generate) | vllm (a vLLM engine colocated in "
                      "the training process, given the student's weights after every optimizer step; "
                      "install the vllm extra)")
    vllm: VLLMConfig = _f(factory=VLLMConfig, help="the colocated vLLM engine (rollout.backend: vllm)")

    def validate(self, prefix: str) -> None:
        _check(self.backend in ROLLOUT_BACKENDS, f"{prefix}.backend", _choice_msg(self.backend, ROLLOUT_BACKENDS))
        self.vllm.validate(f"{prefix}.vllm")
        _check(self.k >= 1, f"{prefix}.k", f"must be >= 1, got {self.k}")
        _check(self.max_new_tokens >= 1, f"{prefix}.max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        _check(self.temperature > 0, f"{prefix}.temperature", f"must be > 0, got {self.temperature}")
        _check(0 < self.top_p <= 1, f"{prefix}.top_p", f"must be in (0, 1], got {self.top_p}")


@dataclass
class OptimConfig:
    lr: float = _f(1e-6, "peak learning rate of AdamW")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    betas: list[float] = _f(factory=lambda: [0.9, 0.999], help="AdamW betas")
    eps: float = _f(1e-8, "AdamW epsilon")
    schedule: str = _f("cosine", "learning-rate schedule after warm-up: cosine | constant | linear")
    warmup_steps: int = _f(0, "linear warm-up steps")
    min_lr_ratio: float = _f(0.0, "final LR as a fraction of the peak (cosine/linear)")
    max_grad_norm: float | None = _f(1.0, "clip the global gradient norm to this value (null: no clipping)")

    def validate(self, prefix: str) -> None:
        _check(self.lr > 0, f"{prefix}.lr", f"must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, f"{prefix}.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"{prefix}.betas",
               f"expected two numbers in [0, 1), got {self.betas}")
        _check(self.schedule in ("cosine", "constant", "linear"), f"{prefix}.schedule",
               f"expected cosine|constant|linear, got {self.schedule!r}")
        _check(self.warmup_steps >= 0, f"{prefix}.warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        _check(0 <= self.min_lr_ratio <= 1, f"{prefix}.min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        _check(self.max_grad_norm is None or self.max_grad_norm > 0, f"{prefix}.max_grad_norm",
               f"must be > 0 or null, got {self.max_grad_norm}")


@dataclass
class LossConfig:
    divergence: str = _f("reverse_kl", "per-token divergence to the teacher: reverse_kl (paper Eq. 1), "
                         "forward_kl, jsd (generalized JSD), or the sampled-token estimators k1 | k2 | k3")
    jsd_beta: float = _f(0.5, "generalized JSD interpolation (0 forward KL, 1 reverse KL)")
    temperature: float = _f(1.0, "softmax temperature of both models inside the divergence")
    chunk_size: int = _f(256, "positions per chunk for full-vocabulary divergences and for the teacher's / "
                              "reference's token log-probs (memory O(chunk x V))")

    def validate(self, prefix: str) -> None:
        _check(self.divergence in DIVERGENCES, f"{prefix}.divergence",
               f"expected one of {', '.join(DIVERGENCES)}, got {self.divergence!r}")
        _check(0 <= self.jsd_beta <= 1, f"{prefix}.jsd_beta", f"must be in [0, 1], got {self.jsd_beta}")
        _check(self.temperature > 0, f"{prefix}.temperature", f"must be > 0, got {self.temperature}")
        _check(self.chunk_size >= 1, f"{prefix}.chunk_size", f"must be >= 1, got {self.chunk_size}")


@dataclass
class VAOPDConfig:
    tau: float = _f(1.0, "rollout-reweighting softmax temperature (Eq. 4)")
    lam: float = _f(0.5, "weight of the high-VA token group (Eq. 5)")
    top_frac: float = _f(0.2, "fraction of each rollout's tokens in the high-VA group (p_v)")
    degrade: str = _f("pixelate", "how the teacher's degraded image is made: pixelate | blur | blank | patch-mask")
    pixelate_ratio: float = _f(0.10, "pixelation ratio (down-sampling factor) for the degraded image")
    reweight: bool = _f(True, "rollout-level reweighting by relative mean VA (Section 3.1)")
    grouped: bool = _f(True, "token-level grouped KL over high/low VA groups (Section 3.2)")
    batch_real_and_degraded: bool | None = _f(
        None, "run the teacher's real- and degraded-image passes as one batch of 2B rows (true) or as two "
        "forwards (false); null: batched on an accelerator, two forwards on CPU (no faster batched there in "
        "benchmarks/step_time.py, and half the activation memory)")
    va_kind: str = _f("sampled", "how VA is scored wherever training uses it (VA-OPD and token_mask): sampled "
                      "(the paper's Eq. 2: max(log p_T(y_t | image) - log p_T(y_t | degraded), 0) of the sampled "
                      "token) | teacher_shift (not the paper's: a divergence between the teacher's full next-token "
                      "distributions with the real and the degraded image at each position, see shift_divergence; a "
                      "misread digit keeps its high score). Eval's mean VA always uses the paper's definition")
    shift_divergence: str = _f("kl_real_degraded", "divergence for va_kind=teacher_shift: kl_real_degraded "
                               "KL(p_real || p_degraded) | kl_degraded_real KL(p_degraded || p_real) | jsd "
                               "(chosen default and measurements: README, VA variants)")
    va_floor: float = _f(0.0, "VA values <= this are set to 0 before the rollout weights, the groups, the token "
                         "mask and the training VA diagnostics (0: the paper). Not the paper's: on the demo teacher 68% "
                         "of scaffold tokens get sampled VA in (0, 0.002] and every position a positive teacher_shift "
                         "VA, so high_group=positive alone still admits them; 0.01 keeps the read-off digits (VA ~7)")
    high_group: str = _f("fixed", "high-VA group of Eq. 5: fixed (the paper: the top ceil(top_frac x n) tokens, "
                         "filled up with VA = 0 tokens when fewer have VA > 0) | positive (not the paper's: at most "
                         "ceil(top_frac x n) tokens, all with VA > 0; an empty group's weight goes to the other)")

    def validate(self, prefix: str) -> None:
        _check(self.tau > 0, f"{prefix}.tau", f"must be > 0, got {self.tau}")
        _check(0 <= self.lam <= 1, f"{prefix}.lam", f"must be in [0, 1], got {self.lam}")
        _check(0 < self.top_frac < 1, f"{prefix}.top_frac", f"must be in (0, 1), got {self.top_frac}")
        _check(self.degrade in DEGRADATIONS, f"{prefix}.degrade",
               f"expected one of {', '.join(DEGRADATIONS)}, got {self.degrade!r}")
        # Ratio 1 gives back the real image: VA would be 0 on every token and VA-OPD would have no signal.
        _check(0 < self.pixelate_ratio < 1, f"{prefix}.pixelate_ratio",
               f"must be in (0, 1) (1 leaves the image unchanged, so VA is 0 everywhere), got {self.pixelate_ratio}")
        _check(self.va_kind in ("sampled", "teacher_shift"), f"{prefix}.va_kind",
               _choice_msg(self.va_kind, ("sampled", "teacher_shift")))
        _check(self.shift_divergence in ("kl_real_degraded", "kl_degraded_real", "jsd"), f"{prefix}.shift_divergence",
               _choice_msg(self.shift_divergence, ("kl_real_degraded", "kl_degraded_real", "jsd")))
        _check(self.va_floor >= 0 and math.isfinite(self.va_floor), f"{prefix}.va_floor",
               f"must be a finite number >= 0, got {self.va_floor}")
        _check(self.high_group in ("fixed", "positive"), f"{prefix}.high_group",
               _choice_msg(self.high_group, ("fixed", "positive")))


@dataclass
class TokenMaskConfig:
    which: str = _f("none", "mask ablation (paper Section 2.2): drop the KL of the top | bottom | random "
                    "fraction of tokens by VA, or none; ties among equal VA (most tokens have VA = 0) are broken "
                    "at random, seeded per step (what the Section 2.2 comparison needs: README, VA variants)")
    frac: float = _f(0.1, "fraction of each rollout's tokens whose KL is dropped")

    def validate(self, prefix: str) -> None:
        _check(self.which in ("none", "top", "bottom", "random"), f"{prefix}.which",
               f"expected none|top|bottom|random, got {self.which!r}")
        _check(0 < self.frac < 1, f"{prefix}.frac", f"must be in (0, 1), got {self.frac}")


@dataclass
class GRPOConfig:
    reward: str = _f("accuracy", "verifiable reward: accuracy (boxed/final answer via math-verify, or "
                     "option letter for multiple choice)")
    format_weight: float = _f(0.0, "w in reward = (1 - w) * accuracy + w * format (\\boxed{} present)")
    clip_eps: float = _f(0.2, "PPO clip range (lower)")
    clip_eps_high: float | None = _f(None, "PPO clip range (upper); null: same as clip_eps")
    loss_type: str = _f("dapo", "dapo (token mean over all tokens of an update, across micro-batches and "
                        "processes) | grpo (per-sequence token mean, then mean over sequences)")
    scale_rewards: bool = _f(True, "divide group-centred rewards by the group std")
    kl_coef: float = _f(0.0, "coefficient of the k3 KL to the initial (reference) student; 0 disables it")
    ppo_epochs: int = _f(1, "passes over each rollout batch (verl's ppo_epochs); with ppo_epochs x mini_batches "
                         "> 1 the later updates are off-policy, so the PPO ratio and clip act")
    mini_batches: int = _f(1, "optimizer updates per pass, each on a shuffled 1/mini_batches of the prompt groups "
                           "(verl: train_batch_size / ppo_mini_batch_size); must divide the prompts per process "
                           "and micro-batch")

    def validate(self, prefix: str) -> None:
        _check(self.ppo_epochs >= 1, f"{prefix}.ppo_epochs", f"must be >= 1, got {self.ppo_epochs}")
        _check(self.mini_batches >= 1, f"{prefix}.mini_batches", f"must be >= 1, got {self.mini_batches}")
        _check(self.clip_eps > 0, f"{prefix}.clip_eps", f"must be > 0, got {self.clip_eps}")
        _check(self.clip_eps_high is None or self.clip_eps_high > 0, f"{prefix}.clip_eps_high",
               f"must be > 0 or null, got {self.clip_eps_high}")
        _check(self.loss_type in ("dapo", "grpo"), f"{prefix}.loss_type",
               f"expected dapo|grpo, got {self.loss_type!r}")
        _check(self.kl_coef >= 0, f"{prefix}.kl_coef", f"must be >= 0, got {self.kl_coef}")
        _check(0 <= self.format_weight <= 1, f"{prefix}.format_weight", f"must be in [0, 1], got {self.format_weight}")


@dataclass
class PAPOConfig:
    gamma: float = _f(0.01, "weight of the implicit perception loss (KL between original- and "
                      "masked-image policies, maximised)")
    entropy_coef: float = _f(0.03, "double-entropy regulariser coefficient")
    mask_patch: int = _f(14, "side of the square patches blackened in the masked image")
    mask_prob: float = _f(0.6, "probability that each patch is blackened")

    def validate(self, prefix: str) -> None:
        _check(self.gamma >= 0, f"{prefix}.gamma", f"must be >= 0, got {self.gamma}")
        _check(self.entropy_coef >= 0, f"{prefix}.entropy_coef", f"must be >= 0, got {self.entropy_coef}")
        _check(self.mask_patch >= 1, f"{prefix}.mask_patch", f"must be >= 1, got {self.mask_patch}")
        _check(0 < self.mask_prob <= 1, f"{prefix}.mask_prob",
               f"must be in (0, 1] (0 leaves the image unchanged: no perception signal), got {self.mask_prob}")


@dataclass
class VOLDConfig:
    beta: float = _f(1.0, "weight of the on-policy distillation term added to the GRPO loss")
    distill_on: str = _f("all", "which rollouts get the distillation term: all | failed (reward below "
                         "success_threshold)")
    success_threshold: float = _f(1.0, "a rollout with reward below this counts as failed")

    def validate(self, prefix: str) -> None:
        _check(self.beta >= 0, f"{prefix}.beta", f"must be >= 0, got {self.beta}")
        _check(self.distill_on in ("all", "failed"), f"{prefix}.distill_on",
               f"expected all|failed, got {self.distill_on!r}")


@dataclass
class SFTConfig:
    target: str = _f("solution", "what SFT/KD trains on: solution (the dataset's reasoning trace) | "
                     "teacher (traces generated by the teacher on the fly)")
    max_length: int = _f(1024, "maximum target length in tokens; longer targets are cut (counted in the "
                         "metrics as truncated_targets)")

    def validate(self, prefix: str) -> None:
        _check(self.target in ("solution", "teacher"), f"{prefix}.target",
               f"expected solution|teacher, got {self.target!r}")
        _check(self.max_length >= 1, f"{prefix}.max_length", f"must be >= 1, got {self.max_length}")


@dataclass
class EvalConfig:
    every: int = _f(0, "evaluate on data.eval every N optimizer steps (0: only at the end)")
    k: int = _f(1, "samples per eval prompt (avg@k)")
    temperature: float = _f(1.0, "eval sampling temperature (the papers use 1.0)")
    greedy: bool = _f(False, "greedy decoding instead of sampling (pass@1)")
    max_new_tokens: int = _f(512, "maximum eval completion length")
    measure_va: bool = _f(True, "also score eval rollouts under the teacher (real vs degraded) to log mean VA")
    stop_at_accuracy: float | None = _f(None, "stop training at the first periodic eval whose accuracy reaches "
                                        "this value; the final model is that step's (e.g. a partial cold start)")
    best_metric: str | None = _f("eval/accuracy", "eval metric that picks the best checkpoint, kept besides the "
                                 "last keep_last and named in <output_dir>/best.json: eval/accuracy | eval/mean_va | "
                                 "eval/top10_va_share | eval/completion_len; null: keep no best checkpoint")
    best_mode: str = _f("max", "max | min: whether a larger or a smaller best_metric is better")

    def validate(self, prefix: str) -> None:
        _check(self.every >= 0, f"{prefix}.every", f"must be >= 0, got {self.every}")
        _check(self.k >= 1, f"{prefix}.k", f"must be >= 1, got {self.k}")
        _check(self.temperature > 0, f"{prefix}.temperature", f"must be > 0, got {self.temperature}")
        _check(self.stop_at_accuracy is None or 0 < self.stop_at_accuracy <= 1, f"{prefix}.stop_at_accuracy",
               f"must be in (0, 1] or null, got {self.stop_at_accuracy}")
        _check(self.stop_at_accuracy is None or self.every > 0, f"{prefix}.stop_at_accuracy",
               "needs periodic evaluation (eval.every > 0)")
        from vlm_opd.train.best import EVAL_METRICS

        _check(self.best_metric is None or self.best_metric in EVAL_METRICS, f"{prefix}.best_metric",
               _choice_msg(self.best_metric, EVAL_METRICS) + " or null")
        _check(self.best_mode in ("max", "min"), f"{prefix}.best_mode", f"expected max|min, got {self.best_mode!r}")


PARALLEL_STRATEGIES = ("ddp", "fsdp")


@dataclass
class ParallelConfig:
    strategy: str = _f("ddp", "how the processes of a launch share the work: ddp (every process holds whole "
                       "models; gradients are averaged) | fsdp (FSDP2: student, teacher and GRPO reference "
                       "sharded per decoder layer over the processes, bf16 compute with float32 master weights "
                       "and gradient reduction under mixed_precision=bf16; sharded checkpoints, a normal "
                       "final/; a LoRA student stays whole on every process, DDP-style, and only the frozen "
                       "models are sharded). Launch both the same way (accelerate launch or torchrun); see "
                       "`vlm-opd plan` for what fits")
    teacher_offload: bool = _f(False, "fsdp: keep the frozen teacher's and reference's shards in CPU memory and "
                               "gather each layer to the GPU when used (saves their whole share of GPU memory; "
                               "slower scoring)")

    def validate(self, prefix: str) -> None:
        _check(self.strategy in PARALLEL_STRATEGIES, f"{prefix}.strategy",
               _choice_msg(self.strategy, PARALLEL_STRATEGIES))
        _check(not self.teacher_offload or self.strategy == "fsdp", f"{prefix}.teacher_offload",
               "needs parallel.strategy=fsdp (under ddp every process holds the whole teacher)")


@dataclass
class TrainConfig:
    method: str = _f("va_opd", f"training method: {' | '.join(METHODS)}")
    run_name: str | None = _f(None, "name shown in logs and plots (default: the method)")
    output_dir: str = _f("runs/default", "where checkpoints, metrics.jsonl and the final model go")
    seed: int = _f(0, "seed for data order, rollouts and initialisation")
    student: ModelConfig = _f(factory=ModelConfig, help="the model being trained")
    teacher: ModelConfig = _f(factory=ModelConfig, help="the frozen teacher (not needed for sft/grpo/papo)")
    lora: LoraConfig = _f(factory=LoraConfig, help="optional LoRA student")
    data: DataConfig = _f(factory=DataConfig, help="datasets")
    rollout: RolloutConfig = _f(factory=RolloutConfig, help="on-policy sampling")
    optim: OptimConfig = _f(factory=OptimConfig, help="optimiser and schedule")
    loss: LossConfig = _f(factory=LossConfig, help="distillation divergence")
    va_opd: VAOPDConfig = _f(factory=VAOPDConfig, help="VA-OPD (paper defaults)")
    token_mask: TokenMaskConfig = _f(factory=TokenMaskConfig, help="mask ablation of Section 2.2")
    grpo: GRPOConfig = _f(factory=GRPOConfig, help="GRPO / PAPO / VOLD policy-gradient part")
    papo: PAPOConfig = _f(factory=PAPOConfig, help="PAPO perception loss")
    vold: VOLDConfig = _f(factory=VOLDConfig, help="VOLD distillation term")
    sft: SFTConfig = _f(factory=SFTConfig, help="SFT / KD targets")
    eval: EvalConfig = _f(factory=EvalConfig, help="periodic evaluation")
    parallel: ParallelConfig = _f(factory=ParallelConfig, help="multi-process training: ddp or fsdp sharding")
    steps: int | None = _f(None, "optimizer steps to run (default: derived from epochs)")
    epochs: float = _f(1.0, "passes over the training prompts when steps is not set")
    prompts_per_step: int = _f(16, "prompts per optimizer step (global batch; each gets rollout.k rollouts)")
    grad_accum: int = _f(1, "micro-batches per optimizer step (prompts_per_step is split across them)")
    mixed_precision: str = _f("auto", "auto (bf16 on GPU, no on CPU) | no | bf16: the compute dtype. bf16 "
                              "runs the student's forward, sampling, teacher scoring and the chunked divergences "
                              "under torch.autocast(bf16) on the float32 master weights (gradients and optimizer "
                              "state stay float32); no computes in each model's own dtype")
    checkpoint_every: int = _f(0, "save a checkpoint every N steps (0: only at the end)")
    keep_last: int = _f(2, "number of step checkpoints kept (the newest ones; the best one by eval.best_metric "
                        "is kept besides them)")
    resume: str | None = _f(None, "latest (newest intact checkpoint of this run in output_dir; a damaged one is "
                            "reported and skipped), a checkpoint path of this run, or null. Keys that change what "
                            "the run means (method, models, data, seed, steps, optim, ...) cannot change on resume")
    overwrite: bool = _f(False, "start a new run in an output_dir that holds another run or other files: the "
                         "previous run's files (checkpoints, final, metrics, ...) are removed first")
    log_every: int = _f(1, "write a metrics line every N steps")
    sample_every: int = _f(0, "log sample completions every N steps (0: never)")
    nan_policy: str = _f("stop", "on a NaN/inf loss or gradient: stop (keeping the last good checkpoint) "
                         "| skip (skip the step, counted)")
    trackers: list[str] = _f(factory=list, help="extra accelerate trackers: tensorboard, wandb")
    stages: list[dict[str, Any]] = _f(factory=list, help="chained stages, each a mapping of overrides "
                                      "(e.g. VOLD: [{method: sft, ...}, {method: vold, ...}])")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _check(self.method in METHODS, "method", _choice_msg(self.method, METHODS))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                value.validate(f.name)
        _check(self.prompts_per_step >= 1, "prompts_per_step", f"must be >= 1, got {self.prompts_per_step}")
        _check(self.grad_accum >= 1, "grad_accum", f"must be >= 1, got {self.grad_accum}")
        _check(self.prompts_per_step % self.grad_accum == 0, "grad_accum",
               f"prompts_per_step ({self.prompts_per_step}) must be divisible by grad_accum ({self.grad_accum})")
        if self.method in ("grpo", "papo", "vold"):
            _check(self.prompts_per_step % (self.grad_accum * self.grpo.mini_batches) == 0, "grpo.mini_batches",
                   f"prompts_per_step ({self.prompts_per_step}) must be divisible by grad_accum x mini_batches "
                   f"({self.grad_accum} x {self.grpo.mini_batches}): each update takes whole prompt groups "
                   "from every micro-batch")
        _check(str(self.output_dir).strip() != "", "output_dir", "must not be empty (name a directory)")
        _check(self.steps is None or self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        _check(self.epochs > 0, "epochs", f"must be > 0, got {self.epochs}")
        _check(self.checkpoint_every >= 0, "checkpoint_every", f"must be >= 0, got {self.checkpoint_every}")
        _check(self.keep_last >= 1, "keep_last", f"must be >= 1, got {self.keep_last}")
        _check(self.log_every >= 1, "log_every", f"must be >= 1, got {self.log_every}")
        _check(self.nan_policy in ("stop", "skip"), "nan_policy", f"expected stop|skip, got {self.nan_policy!r}")
        _check(self.mixed_precision != "fp16", "mixed_precision",
               "fp16 is not supported: its loss scaler only adapts inside optimizer.step(), which the trainer "
               "skips on a non-finite gradient, so the first overflow would stop the run; use bf16")
        _check(self.mixed_precision in ("auto", "no", "bf16"), "mixed_precision",
               f"expected auto|no|bf16, got {self.mixed_precision!r}")
        if self.parallel.strategy == "fsdp":
            for role in ("student", "teacher"):
                _check(getattr(self, role).device is None, f"{role}.device",
                       "must be null with parallel.strategy=fsdp (every model is sharded over all processes' "
                       "devices)")
            _check(self.rollout.backend == "hf", "parallel.strategy",
                   "fsdp with rollout.backend=vllm is not supported (the colocated engine needs the whole "
                   "student on every process); use rollout.backend=hf")
        for t in self.trackers:
            _check(t in ("tensorboard", "wandb"), "trackers", f"expected tensorboard|wandb, got {t!r}")
        if not self.stages:
            _check(self.student.path is not None, "student.path", "required (a model directory or hub name)")
            if self.method in ("kd", "opd", "va_opd", "vold") or (self.method in ("sft",) and self.sft.target == "teacher"):
                _check(self.teacher.path is not None, "teacher.path", f"required for method {self.method}")
            _check(self.data.train is not None, "data.train", "required (a dataset path or name)")
            if self.token_mask.which != "none":
                _check(self.method in ("opd", "va_opd"), "token_mask.which",
                       f"the mask ablation applies to opd/va_opd, not {self.method}")
        else:
            for i, stage in enumerate(self.stages):
                _check(isinstance(stage, dict), f"stages[{i}]", "must be a mapping of overrides")


def _choice_msg(value: Any, choices: typing.Sequence[str]) -> str:
    msg = f"expected one of {', '.join(choices)}, got {value!r}"
    close = difflib.get_close_matches(str(value), list(choices), n=1)
    return msg + (f" (did you mean {close[0]!r}?)" if close else "")


# ----------------------------------------------------------------------------------------------------
# Building configs from mappings, YAML and overrides


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against annotation `tp`, converting only where YAML is lossy (int -> float)."""
    tp, optional = _strip_optional(tp)
    if value is None:
        if optional or tp is Any:
            return None
        raise ConfigError(f"{key}: must not be null (expected {_type_name(tp)})")
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, key + ".")
    origin = typing.get_origin(tp)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(float(value)):
                raise ConfigError(f"{key}: expected a finite number, got {value!r}")
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-5 as a string
            try:
                parsed = float(value)
            except ValueError:
                parsed = None
            if parsed is not None:
                return _coerce(parsed, float, key)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _build(cls: type, mapping: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in mapping.items():
        if key not in hints:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise ConfigError(f"unknown key {prefix}{key}{hint}")
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    if cls is TrainConfig:
        return cls(**kwargs)
    obj = cls(**kwargs)
    return obj


def config_from_dict(mapping: dict[str, Any]) -> TrainConfig:
    """Build and validate a `TrainConfig` from a nested mapping."""
    if not isinstance(mapping, dict):
        raise ConfigError(f"a config must be a mapping at the top level, got {type(mapping).__name__}")
    return _build(TrainConfig, mapping)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (["a", "b"], value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value (e.g. optim.lr=1e-5)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = safe_load_unique(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({err})") from None
    return key.split("."), value


def apply_overrides(mapping: dict[str, Any], overrides: typing.Iterable[str]) -> dict[str, Any]:
    """Return a copy of `mapping` with dotted `key=value` overrides applied."""
    import copy

    out = copy.deepcopy(mapping)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            if not isinstance(node.get(part, {}), dict):
                raise ConfigError(f"override {text!r}: {part} is not a section")
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `update` into a copy of `base` (mappings merge, everything else replaces)."""
    import copy

    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with the same key twice (plain YAML keeps the last silently)."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    # Only the keys written in this mapping count; keys brought in by a `<<:` merge may be overridden.
    explicit = [k for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"]
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node in explicit:
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.get(key)
        except TypeError:  # unhashable key: let the normal constructor report it
            break
        if first is not None:
            raise ConfigError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1} (first at line "
                              f"{first}){_where(node)}: each key may appear once per mapping")
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


def _where(node: yaml.Node) -> str:
    name = node.start_mark.name
    return f" in {name}" if name and not name.startswith("<") else ""


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def safe_load_unique(text: str, name: str | None = None) -> Any:
    """`yaml.safe_load` that raises ConfigError on a duplicate mapping key (naming key and lines)."""
    loader = _UniqueKeyLoader(text)
    if name:
        loader.name = name
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = safe_load_unique(p.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {err}") from None
    except ConfigError as err:
        raise ConfigError(f"{p}: {err}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def read_config_mapping(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a config YAML, resolving `base: other.yaml` (relative to the file) by deep merge."""
    p = Path(path).resolve()
    if p in _seen:
        raise ConfigError(f"{p}: circular base: chain {' -> '.join(map(str, _seen + (p,)))}")
    mapping = read_yaml(p)
    base = mapping.pop("base", None)
    if base is None:
        return mapping
    if not isinstance(base, str):
        raise ConfigError(f"{p}: base: expected a file path, got {base!r}")
    return merge(read_config_mapping(p.parent / base, _seen + (p,)), mapping)


def load_config(path: str | Path | None, overrides: typing.Iterable[str] = ()) -> TrainConfig:
    """Load a YAML config file (or start empty) and apply `key=value` overrides.

    A file may start from another with `base: relative/path.yaml`; its keys override the base's.
    """
    mapping = read_config_mapping(path) if path is not None else {}
    return config_from_dict(apply_overrides(mapping, overrides))


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain nested dict (YAML-safe) of a config dataclass."""
    return dataclasses.asdict(cfg)


def stage_configs(cfg: TrainConfig) -> list[TrainConfig]:
    """Expand `stages:` into one validated config per stage (a config without stages is one stage).

    Stage i writes to `<output_dir>/stage<i>-<method>`; stage i > 0 starts from the previous stage's
    final student unless it names `student.path` itself.
    """
    if not cfg.stages:
        return [cfg]
    base = config_to_dict(cfg)
    base.pop("stages")
    out = []
    for i, stage in enumerate(cfg.stages):
        mapping = merge(base, stage)
        method = mapping.get("method", cfg.method)
        mapping.setdefault("run_name", None)
        if "output_dir" not in stage:
            mapping["output_dir"] = str(Path(cfg.output_dir) / f"stage{i}-{method}")
        if i > 0 and "path" not in stage.get("student", {}):
            mapping.setdefault("student", {})["path"] = str(Path(out[-1].output_dir) / "final")
        try:
            out.append(config_from_dict(mapping))
        except ConfigError as err:
            raise ConfigError(f"stages[{i}]: {err}") from None
    return out


def describe_config(cls: type = TrainConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, help) for every config key, nested keys dotted; used by --help-config and docs."""
    rows = []
    obj = cls() if cls is not TrainConfig else _default_train_config()
    for f in dataclasses.fields(cls):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            rows.append((prefix + f.name, "", f.metadata.get("help", "")))
            rows.extend(describe_config(type(value), prefix + f.name + "."))
        else:
            rows.append((prefix + f.name, repr(value), f.metadata.get("help", "")))
    return rows


def _default_train_config() -> TrainConfig:
    # Defaults alone do not validate (student.path is required): build without validation.
    obj = TrainConfig.__new__(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        setattr(obj, f.name, f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
    return obj
