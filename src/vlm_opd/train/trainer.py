"""The trainer: accelerate wiring, the optimisation loop, checkpoints, logging, evaluation, signals.

`train(cfg)` runs every stage of a config (see `config.stage_configs`) and returns the final model
directory of the last stage. One process on CPU; `accelerate launch` (or `torchrun`) for several, with
`parallel.strategy` ddp or fsdp (FSDP2, driven in `train/fsdp.py`).

Determinism: the prompts of step s are a function of (seed, s) (`train.data`), and every random draw
inside a step is seeded from (seed, s, micro-batch, process), so a resumed run replays exactly what
an uninterrupted run would have done.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

from vlm_opd.config import TrainConfig, config_to_dict, stage_configs
from vlm_opd.errors import ConfigError, NumericsError
from vlm_opd.io_utils import atomic_write_dir, atomic_write_json, atomic_write_text
from vlm_opd.train import checkpoint as ckpt
from vlm_opd.train.best import VA_METRICS, BestTracker
from vlm_opd.train.data import local_batch, total_steps
from vlm_opd.train.metrics import MetricsLogger, drop_lines_after
from vlm_opd.train.schedule import make_scheduler
from vlm_opd.train.step import (
    POLICY_METHODS,
    STEP_FUNCTIONS,
    StepContext,
    derive_seed,
    policy_prepare,
    policy_update_loss,
)

TEACHER_METHODS = ("kd", "opd", "va_opd", "vold")


class TrainingInterrupted(Exception):
    """Raised after a SIGTERM/SIGINT once the checkpoint of the current step boundary is written."""

    def __init__(self, signum: int, checkpoint: Path | None):
        self.signum = signum
        self.checkpoint = checkpoint
        name = signal.Signals(signum).name
        where = f"checkpoint saved to {checkpoint}" if checkpoint else "no checkpoint written"
        super().__init__(f"received {name}: stopped at a step boundary, {where}; continue with resume=latest")


@dataclasses.dataclass
class TrainResult:
    final_dir: Path
    steps: int
    metrics_path: Path
    skipped_steps: int = 0
    is_main_process: bool = True


def train(cfg: TrainConfig, *, progress: bool = True) -> TrainResult:
    """Run all stages of `cfg`; return the result of the last one."""
    result = None
    for stage in stage_configs(cfg):
        result = train_stage(stage, progress=progress)
    assert result is not None
    return result


# ------------------------------------------------------------------------------------------------
# Setup helpers


def _accelerator(cfg: TrainConfig):
    from accelerate import Accelerator

    import os

    from accelerate.state import AcceleratorState

    mp = cfg.mixed_precision
    if mp == "auto":
        mp = "bf16" if torch.cuda.is_available() else "no"
    # accelerate keeps one mixed-precision setting per process and refuses another: a later stage (or
    # run) in the same process may use its own. The distributed state (PartialState) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(mixed_precision=mp, log_with=cfg.trackers or None, project_dir=cfg.output_dir)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and accelerator.num_processes == 1:
        # `accelerate launch --multi_gpu` on a machine without GPUs starts N processes that each train
        # alone on the full batch: refuse instead of silently duplicating the work.
        raise ConfigError(f"{world} processes were launched but accelerate runs each one alone (no GPU "
                          "found): on CPU set ACCELERATE_USE_CPU=1 (e.g. ACCELERATE_USE_CPU=1 accelerate "
                          "launch --multi_gpu --num_processes 2 -m vlm_opd.cli train ...)")
    _check_distributed(accelerator)
    return accelerator


def _check_distributed(accelerator) -> None:
    """Refuse the launchers this trainer does not drive, with the reason.

    accelerate's FSDP plugin wraps the model itself and knows nothing of what this trainer does
    outside the model's forward (sampling, the chunked divergences reading the lm_head weight): FSDP
    is selected in the training config instead (`parallel.strategy: fsdp`, see `train/fsdp.py`),
    under a plain multi-process launch.
    DeepSpeed (any ZeRO stage) runs its optimizer step inside `accelerator.backward` unless
    `accelerator.accumulate` is used, which this trainer's micro-batch and multi-update loop does not:
    it would step once per micro-batch and before the NaN check.
    """
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if kind == DistributedType.FSDP:
        raise ConfigError("an accelerate FSDP launch config is not used by `vlm-opd train`: set "
                          "parallel.strategy=fsdp in the training config and launch with a plain multi-process "
                          "config (configs/accelerate/fsdp2.yaml or ddp.yaml, or torchrun); vlm-opd shards the "
                          "models itself (FSDP2)")
    if kind == DistributedType.DEEPSPEED:
        raise ConfigError("DeepSpeed is not supported by `vlm-opd train` yet: its engine steps the optimizer "
                          "inside backward, once per micro-batch, which this trainer's update loop does not "
                          "expect. Use DDP (configs/accelerate/ddp.yaml)")


def _load_examples(spec: str | None, cfg: TrainConfig, split: str | None, limit: int | None, role: str):
    from vlm_opd.data.loading import load_prompts

    if spec is None:
        return []
    from accelerate.state import PartialState

    # One writer: every process loads the same rows, only the main one logs the skipped ones.
    skipped = (Path(cfg.output_dir) / "skipped_rows.jsonl"
               if cfg.data.skip_bad_rows and PartialState().is_main_process else None)
    try:
        # The generator holds out (task, values) combinations for the eval split: no train/eval overlap.
        return load_prompts(spec, seed=cfg.seed, synthetic_split="train" if role == "train" else "eval",
                            synthetic_knobs=cfg.data.synthetic, limit=limit, split=split,
                            image_root=cfg.data.image_root, skip_bad_rows=cfg.data.skip_bad_rows,
                            skipped_log=skipped, field_map=cfg.data.field_map or None)
    except ConfigError as err:
        raise ConfigError(f"data.{role}: {err}") from None


def _load(mcfg, device) -> Any:
    from vlm_opd.models import load_model

    return load_model(mcfg.path, kind=mcfg.kind, dtype=mcfg.dtype, device=mcfg.device or device,
                      attn_implementation=mcfg.attn_implementation,
                      chat_template_kwargs=mcfg.chat_template_kwargs or None)


def _freeze(lm) -> None:
    lm.model.eval()
    lm.model.requires_grad_(False)


def _apply_lora(cfg: TrainConfig, model):
    from peft import LoraConfig, get_peft_model

    lcfg = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, bias="none")
    try:
        return get_peft_model(model, lcfg)
    except ValueError as err:
        raise ConfigError(f"lora.target_modules: {err}") from None


def _degradation(name: str, **kwargs):
    from vlm_opd.data.degrade import get_degradation

    return get_degradation(name, **kwargs)


def _peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


@contextmanager
def _signal_flag():
    """Turn SIGTERM/SIGINT into a flag checked at step boundaries (restored on exit)."""
    received: list[int] = []

    def handler(signum, frame):  # noqa: ARG001
        if received:  # second signal: stop now
            raise KeyboardInterrupt
        received.append(signum)

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass
    try:
        yield received
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


def _float_dtype(model) -> torch.dtype:
    """The dtype of a model's floating-point parameters (the first one's; they share it once loaded)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def save_model_dir(lm, model, path: Path, dtype: torch.dtype | None = None,
                   state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Save a loadable model directory (weights, config, tokenizer, processor) atomically.

    `dtype`: the dtype to write the weights in (the student's stored dtype; training holds float32
    master weights); None keeps the model's own. `state_dict`: the weights to write instead of the
    model's own (a sharded model's consolidated state, `fsdp.full_state_dict`).
    """

    def write(tmp: Path) -> None:
        to_save = model
        if state_dict is not None:
            state = {k: (v.detach().to("cpu", dtype) if dtype is not None and v.is_floating_point() else v.detach().cpu())
                     for k, v in state_dict.items()}
            to_save.save_pretrained(tmp, safe_serialization=True, state_dict=state)
            if dtype is not None:
                _set_config_dtype(tmp / "config.json", dtype)
        elif hasattr(to_save, "merge_and_unload"):  # peft: save the adapter, and a merged plain model
            from vlm_opd.models.lora import merged_weights

            to_save.save_pretrained(tmp / "adapter")
            # Merged one tensor at a time (W + delta in float32, rounded once) straight to the CPU: a
            # merged copy of the whole model on the accelerator could run out of memory at the end of a run.
            state = {name: w.detach().to("cpu", dtype or w.dtype) for name, w in merged_weights(to_save)}
            to_save.get_base_model().save_pretrained(tmp, safe_serialization=True, state_dict=state)
            if dtype is not None:
                _set_config_dtype(tmp / "config.json", dtype)
        elif dtype is not None and _float_dtype(to_save) != dtype:
            state = {k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu())
                     for k, v in to_save.state_dict().items()}
            to_save.save_pretrained(tmp, safe_serialization=True, state_dict=state)
            _set_config_dtype(tmp / "config.json", dtype)
        else:
            to_save.save_pretrained(tmp, safe_serialization=True)
        if lm.processor is not None:
            lm.processor.save_pretrained(tmp)
        lm.tokenizer.save_pretrained(tmp)

    return atomic_write_dir(path, write)


def _set_config_dtype(config_path: Path, dtype: torch.dtype) -> None:
    """Record the written weights' dtype in config.json (save_pretrained records the live model's), so
    `dtype="auto"` loads them as written; nested text/vision configs included."""
    name = str(dtype).removeprefix("torch.")

    def fix(node):
        if isinstance(node, dict):
            for key in ("dtype", "torch_dtype"):
                if key in node:
                    node[key] = name
            for value in node.values():
                fix(value)

    config = json.loads(config_path.read_text())
    config["dtype"] = name
    fix(config)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


# ------------------------------------------------------------------------------------------------
# The loop


def train_stage(cfg: TrainConfig, *, progress: bool = True) -> TrainResult:
    """One stage: claim the output directory (lock, no silent overwrite, same run on resume), then train."""
    from vlm_opd.train.run_dir import check_dir_path, claim_output_dir

    check_dir_path(cfg.output_dir, "output_dir")  # before accelerate writes anything there
    accelerator = _accelerator(cfg)
    own_group = False
    if cfg.parallel.strategy == "fsdp":  # one process: FSDP over a group of one (same code, same checkpoints)
        from vlm_opd.train.fsdp import init_single_process_group

        own_group = init_single_process_group(accelerator.device)
    try:
        claim = claim_output_dir(config_to_dict(cfg), Path(cfg.output_dir), accelerator)
        try:
            return _train_stage(cfg, accelerator, claim, progress=progress)
        finally:
            claim.release()
    finally:
        if own_group:
            torch.distributed.destroy_process_group()


def _train_stage(cfg: TrainConfig, accelerator, claim, *, progress: bool = True) -> TrainResult:
    from vlm_opd.rewards import get_reward

    from accelerate.utils import set_seed

    out_dir = Path(cfg.output_dir)
    is_main = accelerator.is_main_process
    finished = _finished_run(out_dir) if claim.resuming and cfg.resume == "latest" else None
    if finished is not None:
        # resume=latest on a run that already wrote final/ (e.g. the finished first stage of a chained
        # config whose later stage crashed): nothing to redo, and retraining it would cost the whole stage.
        if is_main:
            print(f"{out_dir}: this run finished at step {finished['step']} (final/ is complete); nothing to resume",
                  file=sys.stderr)
        return TrainResult(final_dir=out_dir / "final", steps=int(finished["step"]),
                           metrics_path=out_dir / "metrics.jsonl", skipped_steps=int(finished.get("skipped_steps", 0)),
                           is_main_process=is_main)
    set_seed(cfg.seed)  # model init that happens here (LoRA adapters) must be reproducible too
    nproc, rank = accelerator.num_processes, accelerator.process_index
    local_prompts = cfg.prompts_per_step // nproc
    if cfg.prompts_per_step % (nproc * cfg.grad_accum):
        raise ConfigError(f"prompts_per_step ({cfg.prompts_per_step}) must be divisible by processes x grad_accum "
                          f"({nproc} x {cfg.grad_accum})")
    if cfg.method in POLICY_METHODS and cfg.prompts_per_step % (nproc * cfg.grad_accum * cfg.grpo.mini_batches):
        raise ConfigError(f"grpo.mini_batches: prompts_per_step ({cfg.prompts_per_step}) must be divisible by "
                          f"processes x grad_accum x mini_batches ({nproc} x {cfg.grad_accum} x "
                          f"{cfg.grpo.mini_batches}): each update takes whole prompt groups from every micro-batch")
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "config.yaml", _yaml(config_to_dict(cfg)))
        # skipped_rows.jsonl describes this load only (a resumed run loads again: no duplicated rows)
        (out_dir / "skipped_rows.jsonl").unlink(missing_ok=True)

    train_examples = _load_examples(cfg.data.train, cfg, cfg.data.split, cfg.data.limit, "train")
    eval_examples = _load_examples(cfg.data.eval, cfg, cfg.data.eval_split, cfg.data.eval_limit, "eval")
    n_steps = total_steps(len(train_examples), cfg.prompts_per_step, cfg.steps, cfg.epochs)

    # Models: the student trains; teacher and reference are frozen and never see the optimizer.
    # Under FSDP each process loads the models on the CPU and keeps only its shards on its device.
    device = accelerator.device
    # FSDP shards the frozen teacher and reference, and the student unless it trains LoRA adapters (a
    # LoRA student is replicated, DDP-style: its adapters are small and its final/ is merged from them).
    shard_frozen = cfg.parallel.strategy == "fsdp"
    sharded = shard_frozen and not cfg.lora.enabled  # the student
    if shard_frozen:
        from vlm_opd.train import fsdp
    load_device = torch.device("cpu") if shard_frozen else device
    student = _load(cfg.student, device if not sharded else load_device)
    teacher = None
    needs_teacher = cfg.method in TEACHER_METHODS or (cfg.method == "sft" and cfg.sft.target == "teacher")
    if needs_teacher:
        from vlm_opd.models import check_compatible

        teacher = _load(cfg.teacher, load_device)
        _freeze(teacher)
        check_compatible(teacher, student)
    if cfg.eval.best_metric in VA_METRICS and eval_examples and not (
            cfg.eval.measure_va and teacher is not None and teacher.is_vision):
        raise ConfigError(f"eval.best_metric: {cfg.eval.best_metric} is only measured with a vision teacher and "
                          "eval.measure_va=true; pick eval/accuracy or set eval.best_metric=null")
    reference = None
    if cfg.method in ("grpo", "papo", "vold") and cfg.grpo.kl_coef > 0:
        reference = _load(cfg.student, load_device)
        _freeze(reference)

    # Prompts longer than the context fit nowhere: refuse (or skip, counted) before any forward pass.
    from vlm_opd.train.limits import check_prompt_lengths

    train_examples, eval_examples = check_prompt_lengths(
        cfg, student, teacher, train_examples, eval_examples,
        skipped_log=out_dir / "skipped_rows.jsonl" if is_main else None)
    n_steps = total_steps(len(train_examples), cfg.prompts_per_step, cfg.steps, cfg.epochs)

    model = student.model
    # Master weights: whatever dtype the student is stored in (`student.dtype`, bf16 for the released
    # Qwen-VL checkpoints), the weights the optimizer steps are float32, and so are AdamW's moments.
    # Plain AdamW on bf16 parameters rounds every update below half a bf16 ulp to nothing (at lr 1e-6,
    # nearly all of them). Compute runs in bf16 only under autocast (`mixed_precision`). A LoRA
    # student keeps its frozen base in the stored dtype and trains float32 adapters. `final/` is
    # written back in the stored dtype.
    stored_dtype = _float_dtype(model)
    if not cfg.lora.enabled and not sharded:  # (FSDP upcasts one unit at a time while sharding, below)
        model.float()
    if cfg.student.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if cfg.lora.enabled:
        model = _apply_lora(cfg, model)
        for p in model.parameters():
            if p.requires_grad and p.dtype != torch.float32:
                p.data = p.data.float()
    model.train()
    if sharded:  # before the optimizer exists: it steps the shards (DTensors)
        compute = torch.bfloat16 if accelerator.mixed_precision == "bf16" else None
        fsdp.shard_model(model, device, param_dtype=compute, upcast=True)
    if shard_frozen:
        for frozen in (teacher, reference):
            if frozen is not None:
                fsdp.shard_model(frozen.model, device, offload=cfg.parallel.teacher_offload)
                frozen.compute_device = device  # offloaded shards sit in CPU memory; inputs go to the GPU
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
                                  weight_decay=cfg.optim.weight_decay)
    scheduler = make_scheduler(optimizer, n_steps, cfg.optim.warmup_steps, cfg.optim.schedule,
                               cfg.optim.min_lr_ratio)
    if not sharded:
        model, optimizer = accelerator.prepare(model, optimizer)
        accelerator.register_for_checkpointing(scheduler)
    unwrapped = accelerator.unwrap_model(model)

    train_view = dataclasses.replace(student, model=model)
    gen_view = dataclasses.replace(student, model=unwrapped)
    ctx = StepContext(
        cfg=cfg, student=train_view, student_for_generation=lambda: gen_view, teacher=teacher,
        reference=reference,
        degrade=_degradation(cfg.va_opd.degrade, **({"ratio": cfg.va_opd.pixelate_ratio}
                                                    if cfg.va_opd.degrade == "pixelate" else {})),
        papo_mask=None,  # set per step (seeded) in the loop
        reward_fn=_reward_fn(cfg, get_reward),
    )
    if cfg.rollout.backend == "vllm":  # colocated engine, given the student's weights now and after every step
        from vlm_opd.rollout.vllm_backend import training_backend

        ctx.rollout_backend = training_backend(cfg, unwrapped, nproc, train_examples + eval_examples)
    step_fn = STEP_FUNCTIONS[cfg.method]
    policy = cfg.method in POLICY_METHODS
    # With several processes, a micro-batch without images skips the vision tower on one process only: its
    # parameters then get no gradient there, and DDP's all-reduce / FSDP's reduce-scatter see different
    # gradient sets on different processes (a collective mismatch: a crash or a hang). A zero-weighted sum
    # of the tower's parameters gives them a (zero) gradient everywhere; the update is unchanged.
    vision_tower = _trainable_vision_tower(unwrapped) if nproc > 1 else None
    n_updates = cfg.grpo.ppo_epochs * cfg.grpo.mini_batches if policy else 1

    # Resume.
    start_step, state = 0, {"wall_s": 0.0, "skipped_steps": 0}
    resume_from = ckpt.resolve_resume_shared(accelerator, cfg.resume, out_dir, claim.run_id) if claim.resuming else None
    if resume_from is not None:
        if sharded:
            fsdp.load_sharded(model, optimizer, resume_from / "state")
            scheduler.load_state_dict(torch.load(resume_from / "scheduler.pt", weights_only=True))
        else:
            ckpt.load_accelerate_state(accelerator, resume_from)
        state = json.loads((resume_from / "trainer_state.json").read_text())
        start_step = state["step"]
        if is_main:
            print(f"resuming from {resume_from} (step {start_step})", file=sys.stderr)
    metrics = MetricsLogger(out_dir / "metrics.jsonl", resume_step=start_step if resume_from else None,
                            enabled=is_main)
    if is_main and resume_from is not None:  # sample lines the interrupted run wrote after its checkpoint
        drop_lines_after(out_dir / "samples.jsonl", start_step)
    if cfg.trackers:
        accelerator.init_trackers(cfg.run_name or cfg.method, config=_flat(config_to_dict(cfg)))

    def save(step: int) -> Path:
        if sharded:
            return _save_sharded_checkpoint(accelerator, model, optimizer, scheduler, out_dir, step,
                                            {**state, "step": step}, cfg.keep_last, claim.run_id)
        return _save_checkpoint(accelerator, out_dir, step, {**state, "step": step}, cfg.keep_last, claim.run_id)

    # The best checkpoint by eval.best_metric (train/best.py): saved when an eval improves on it.
    best = BestTracker(out_dir, cfg.eval.best_metric if eval_examples else None, cfg.eval.best_mode,
                       start_step=start_step, is_main=is_main)

    if start_step == 0 and eval_examples and cfg.eval.every > 0:
        _log_eval(ctx, eval_examples, 0, state["wall_s"], metrics, accelerator)

    last_saved = resume_from
    stopped_at, stop_result = None, None
    bar = _progress(progress and is_main)
    t_origin = time.time() - state["wall_s"]
    with _signal_flag() as received, bar as prog:
        task = prog.add_task(cfg.run_name or cfg.method, total=n_steps, completed=start_step) if prog else None
        for step in range(start_step, n_steps):
            t0 = time.time()
            examples, _ = local_batch(train_examples, cfg.seed, step, cfg.prompts_per_step, rank, nproc)
            if cfg.grad_accum > 1:  # bucket by length so each micro-batch pads little (losses are per prompt)
                examples = sorted(examples, key=_prompt_size)
            micro = local_prompts // cfg.grad_accum
            chunks = [examples[m * micro:(m + 1) * micro] for m in range(cfg.grad_accum)]
            # Rollout rows are keyed by (seed, prompt, sample index), not by batch position, so one seed
            # per step gives the same rollouts for any split into micro-batches/processes.
            step_seed = derive_seed(cfg.seed, step)
            torch.manual_seed(derive_seed(cfg.seed, step, rank, "torch"))
            if cfg.method == "papo":
                ctx.papo_mask = _papo_mask(cfg, derive_seed(cfg.seed, step, "papo"))
            if policy:  # sample every micro-batch first: an update's dapo token count spans all of them
                with accelerator.autocast():
                    batches = [policy_prepare(ctx, chunk, step_seed, updates=n_updates) for chunk in chunks]
                plan = _ppo_plan(cfg, batches, step, rank)
            else:
                batches, plan = [], [[None] * cfg.grad_accum]
            step_diags: dict[str, float] = {}
            applied, losses, norms, bad = 0, [], [], None
            for rows in plan:
                normalizer = None
                if policy and cfg.grpo.loss_type == "dapo":
                    local = sum(b.tokens(r) for b, r in zip(batches, rows))
                    total = accelerator.reduce(torch.tensor(local, device=device, dtype=torch.float64), reduction="sum")
                    normalizer = max(float(total), 1.0) / (cfg.grad_accum * nproc)
                loss_local, update_diags = 0.0, {}
                for m in range(cfg.grad_accum):
                    # (FSDP reduce-scatters each micro-batch's gradients: accumulating them unsharded would
                    # cost a whole gradient per process.)
                    sync = accelerator.no_sync(model) if m < cfg.grad_accum - 1 and not sharded else nullcontext()
                    with sync:
                        # Sampling, teacher scoring and the chunked divergences run outside the prepared
                        # model's forward: autocast them too (a no-op without mixed_precision).
                        with accelerator.autocast():
                            if policy:
                                loss, diags = policy_update_loss(ctx, batches[m], rows[m], token_normalizer=normalizer)
                            else:
                                loss, diags = step_fn(ctx, chunks[m], step_seed)
                            if vision_tower is not None:
                                loss = loss + _zero_touch(vision_tower)
                        accelerator.backward(loss / cfg.grad_accum)
                    loss_local += float(loss.detach()) / cfg.grad_accum
                    for key, value in diags.items():
                        update_diags[key] = update_diags.get(key, 0.0) + float(value) / cfg.grad_accum
                loss_u = accelerator.reduce(torch.tensor(loss_local, device=device), reduction="mean").item()
                norm_u = (fsdp.clip_grad_norm(params, cfg.optim.max_grad_norm) if sharded
                          else _clip(accelerator, model, cfg.optim.max_grad_norm))
                if not (math.isfinite(loss_u) and math.isfinite(norm_u)):
                    # This update's gradients are dropped. With several updates per step the others
                    # still apply; the step counts as skipped only when none did.
                    optimizer.zero_grad(set_to_none=True)
                    bad = (loss_u, norm_u)
                    if cfg.nan_policy != "skip":
                        break
                    continue
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                applied += 1
                losses.append(loss_u)
                norms.append(norm_u)
                for key, value in update_diags.items():  # summed over applied updates, averaged below
                    step_diags[key] = step_diags.get(key, 0.0) + value
            step_diags = {key: value / max(applied, 1) for key, value in step_diags.items()}
            if shard_frozen:  # the frozen models' root units stay gathered after a forward: free them
                for frozen in (teacher, reference):
                    if frozen is not None:
                        fsdp.release(frozen.model)
            if ctx.rollout_backend is not None and applied:
                ctx.rollout_backend.update_weights(unwrapped)
            if policy:  # per-batch values: rewards, and the rollouts' tokens (not the per-update rows')
                step_diags["tokens"] = 0.0
                for b in batches:
                    for key, value in {**b.diags, "tokens": b.tokens()}.items():
                        step_diags[key] = step_diags.get(key, 0.0) + value / cfg.grad_accum
            if policy and len(plan) > 1:
                step_diags["ppo_updates"] = float(applied)
                if applied < len(plan):
                    step_diags["skipped_updates"] = float(len(plan) - applied)
            if nproc > 1:  # diagnostics are averaged over processes (every process logs the same keys)
                keys = sorted(step_diags)
                values = accelerator.reduce(torch.tensor([step_diags[k] for k in keys], device=device,
                                                         dtype=torch.float64), reduction="mean")
                step_diags = dict(zip(keys, values.tolist()))
            if bad is not None and (applied == 0 or cfg.nan_policy != "skip"):
                if cfg.nan_policy == "skip":
                    state["skipped_steps"] += 1
                    metrics.log({"step": step + 1, "skipped": True, "loss": bad[0], "grad_norm": bad[1]})
                    if prog:
                        prog.advance(task)
                    continue
                where = f"the last good checkpoint is {last_saved}" if last_saved else "no checkpoint was written yet"
                raise NumericsError(f"step {step + 1}: loss={bad[0]} grad_norm={bad[1]} is not finite; "
                                    f"stopping ({where}; nan_policy=skip would skip such steps)")
            scheduler.step()
            loss_global, grad_norm = sum(losses) / applied, sum(norms) / applied

            done = step + 1
            state["wall_s"] = time.time() - t_origin
            step_time = time.time() - t0
            if done % cfg.log_every == 0 or done == n_steps:
                record = {"step": done, "wall_s": state["wall_s"], "loss": loss_global, "grad_norm": grad_norm,
                          "lr": scheduler.get_last_lr()[0], "step_time_s": step_time,
                          "tokens_per_s": step_diags.get("tokens", 0.0) * nproc * cfg.grad_accum / max(step_time, 1e-9),
                          "peak_memory_mb": _peak_memory_mb(), **step_diags}
                metrics.log(record)
                if cfg.trackers:
                    accelerator.log(record, step=done)
            if cfg.sample_every and done % cfg.sample_every == 0 and is_main and ctx.last_samples:
                with open(out_dir / "samples.jsonl", "a", encoding="utf-8") as fh:
                    for row in ctx.last_samples:
                        fh.write(json.dumps({"step": done, **row}) + "\n")
            is_best = False
            if eval_examples and cfg.eval.every > 0 and done % cfg.eval.every == 0 and done != n_steps:
                result = _log_eval(ctx, eval_examples, done, state["wall_s"], metrics, accelerator)
                if cfg.eval.stop_at_accuracy is not None:
                    # Decided on the main process (it evaluates), shared so every process stops together.
                    hit = float(result.get("accuracy", 0.0) >= cfg.eval.stop_at_accuracy)
                    if accelerator.reduce(torch.tensor(hit, device=device), reduction="sum").item() > 0:
                        stopped_at, stop_result = done, result
                        break
                is_best = _shared_flag(accelerator, best.improves(result, done))
            if is_best or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done != n_steps):
                last_saved = save(done)
            if is_best:
                _commit_best(best, result, done, last_saved, cfg.keep_last, is_main, claim.run_id)
            if prog:
                prog.update(task, advance=1, description=f"{cfg.run_name or cfg.method} loss={loss_global:.4f}")
            if received:
                if last_saved is None or last_saved.name != f"step-{done:06d}":  # not saved at this step yet
                    last_saved = save(done)
                metrics.close()
                raise TrainingInterrupted(received[0], last_saved)

    if stopped_at is not None:  # eval.stop_at_accuracy reached: that eval was the last one
        n_steps = stopped_at
        if is_main:
            print(f"stopped at step {stopped_at}: eval accuracy reached eval.stop_at_accuracy="
                  f"{cfg.eval.stop_at_accuracy}", file=sys.stderr)
    final_result = stop_result if stopped_at is not None else None
    if stopped_at is None and eval_examples:
        final_result = _log_eval(ctx, eval_examples, n_steps, state["wall_s"], metrics, accelerator)
    final_is_best = final_result is not None and _shared_flag(accelerator, best.improves(final_result, n_steps))
    final_dir = out_dir / "final"
    accelerator.wait_for_everyone()
    full_state = fsdp.full_state_dict(model) if sharded else None  # collective: every process
    if is_main:
        save_model_dir(student, accelerator.unwrap_model(model), final_dir, dtype=stored_dtype, state_dict=full_state)
        atomic_write_json(out_dir / "trainer_state.json", {**state, "step": n_steps})
        if final_is_best:
            _commit_best(best, final_result, n_steps, final_dir, cfg.keep_last, is_main, claim.run_id)
    accelerator.wait_for_everyone()
    metrics.close()
    if ctx.rollout_backend is not None:  # free the engine's memory before a next stage builds its own
        ctx.rollout_backend.close()
    if cfg.trackers:
        accelerator.end_training()
    return TrainResult(final_dir=final_dir, steps=n_steps, metrics_path=out_dir / "metrics.jsonl",
                       skipped_steps=state["skipped_steps"], is_main_process=is_main)


def _trainable_vision_tower(model) -> torch.nn.Module | None:
    """The student's vision tower if it has trainable parameters (Qwen-VL: `model.visual`), else None."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(base, "model", base)
    tower = getattr(inner, "visual", None) or getattr(base, "visual", None)
    if tower is None or not any(p.requires_grad for p in tower.parameters()):
        return None
    return tower


def _zero_touch(module: torch.nn.Module) -> torch.Tensor:
    """0 x the sum of `module`'s trainable parameters (read now: FSDP swaps gathered tensors in after a forward)."""
    return 0.0 * torch.stack([p.sum().float() for p in module.parameters() if p.requires_grad]).sum()


def _finished_run(out_dir: Path) -> dict | None:
    """The final trainer state of a run that completed in `out_dir` (written after final/), else None."""
    state_path, final = out_dir / "trainer_state.json", out_dir / "final"
    if not (state_path.is_file() and (final / "config.json").is_file()):
        return None
    try:
        return json.loads(state_path.read_text())
    except ValueError:
        return None


def _ppo_plan(cfg: TrainConfig, batches: list, step: int, rank: int) -> list[list[torch.Tensor | None]]:
    """The rows each optimizer update takes from each micro-batch's rollout batch.

    One entry per update (grpo.ppo_epochs x grpo.mini_batches), each a list over micro-batches:
    None (every row, the single-update case) or the rows of whole prompt groups. Each pass shuffles
    the prompt groups (seeded by step, process and micro-batch) and cuts them into mini_batches parts.
    """
    epochs, minis = cfg.grpo.ppo_epochs, cfg.grpo.mini_batches
    if epochs * minis == 1:
        return [[None] * len(batches)]
    plan = []
    for epoch in range(epochs):
        perms = [torch.randperm(b.num_prompts, generator=torch.Generator().manual_seed(
            derive_seed(cfg.seed, step, rank, m, epoch, "ppo"))) for m, b in enumerate(batches)]
        for part in range(minis):
            plan.append([b.rows(perm.view(minis, -1)[part]) for b, perm in zip(batches, perms)])
    return plan


def _prompt_size(example) -> int:
    """Cheap proxy of a prompt's token count: characters / 4 plus ~one token per 28x28 image patch."""
    return len(example.problem) // 4 + sum(im.width * im.height // 784 for im in example.images)


def _papo_mask(cfg: TrainConfig, step_seed: int):
    """PAPO's masked image for this step: a fresh random patch mask per image, reproducible on resume
    (seeded from the step and the image's pixels)."""
    import hashlib

    from vlm_opd.data.degrade import patch_blacken

    def mask(image):
        digest = hashlib.sha256(image.tobytes()).digest()[:8]
        seed = derive_seed(step_seed, digest.hex())
        return patch_blacken(image, patch=cfg.papo.mask_patch, prob=cfg.papo.mask_prob, seed=seed)

    return mask


def _reward_fn(cfg: TrainConfig, get_reward):
    if cfg.grpo.format_weight <= 0:
        return get_reward(cfg.grpo.reward)
    return get_reward(f"combined:{cfg.grpo.format_weight}")  # (1 - w) * accuracy + w * format


def _clip(accelerator, model, max_norm: float | None) -> float:
    params = [p for p in model.parameters() if p.grad is not None]
    if max_norm is not None:
        norm = accelerator.clip_grad_norm_(params, max_norm)
    else:
        norm = torch.linalg.vector_norm(torch.stack([p.grad.detach().float().norm() for p in params])) if params else torch.tensor(0.0)
    return float(norm)


def _save_checkpoint(accelerator, out_dir: Path, step: int, state: dict, keep_last: int,
                     run_id: str | None = None) -> Path:
    """Accelerate state (every process writes its share) plus the trainer state, via `ckpt.save_checkpoint`."""
    return ckpt.save_checkpoint(
        out_dir, step, lambda tmp: accelerator.save_state(str(tmp / "state")), keep_last,
        extra={"run_id": run_id} if run_id else None,
        is_main=accelerator.is_main_process, barrier=accelerator.wait_for_everyone,
        write_main=lambda tmp: atomic_write_json(tmp / "trainer_state.json", state))


def _save_sharded_checkpoint(accelerator, model, optimizer, scheduler, out_dir: Path, step: int, state: dict,
                             keep_last: int, run_id: str | None = None) -> Path:
    """FSDP: every process writes its shards of model and optimizer (`state/`, distributed checkpoint);
    the main process adds the scheduler and the trainer state."""
    from vlm_opd.train import fsdp

    def write_main(tmp: Path) -> None:
        atomic_write_json(tmp / "trainer_state.json", state)
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")

    return ckpt.save_checkpoint(
        out_dir, step, lambda tmp: fsdp.save_sharded(model, optimizer, tmp / "state"), keep_last,
        extra={"run_id": run_id} if run_id else None,
        is_main=accelerator.is_main_process, barrier=accelerator.wait_for_everyone, write_main=write_main)


def _shared_flag(accelerator, flag: bool) -> bool:
    """A decision the main process took (its `flag`; the other processes' are ignored: only the main
    process tracks the best checkpoint), shared so every process acts on it."""
    if accelerator.num_processes == 1:
        return bool(flag)
    value = float(flag) if accelerator.is_main_process else 0.0
    return accelerator.reduce(torch.tensor(value, device=accelerator.device), reduction="sum").item() > 0


def _commit_best(best: BestTracker, result: dict, step: int, path: Path, keep_last: int, is_main: bool,
                 run_id: str | None = None) -> None:
    """Name `path` (complete on disk) the best checkpoint in best.json, then prune the previous best."""
    if not is_main:
        return
    record = best.commit(step, best.value_of(result), path)
    ckpt.prune_checkpoints(best.output_dir, keep_last, run_id=run_id)
    print(f"best checkpoint so far: {record['checkpoint']} ({record['metric']}={record['value']:.4f})",
          file=sys.stderr)


def _log_eval(ctx: StepContext, eval_examples, step: int, wall_s: float, metrics, accelerator) -> dict:
    from vlm_opd.train.evaluate import evaluate_student

    # Every process evaluates its share of the batches; the main process logs the gathered result.
    with accelerator.autocast():
        result = evaluate_student(ctx, eval_examples, seed=derive_seed(ctx.cfg.seed, "eval", step),
                                  rank=accelerator.process_index, nproc=accelerator.num_processes)
    if accelerator.is_main_process:
        metrics.log({"step": step, "wall_s": wall_s, **{f"eval/{k}": v for k, v in result.items()}})
    accelerator.wait_for_everyone()
    return result


def _progress(enabled: bool):
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), transient=False)


def _yaml(obj: dict) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[prefix + k] = v
        else:
            out[prefix + k] = str(v)
    return out
