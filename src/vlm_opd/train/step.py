"""One training step per method family, each readable top to bottom:

    rollout -> score -> per-token signals -> loss          (backward and optimizer live in trainer.py)

* `distill_loss`  - opd, va_opd (+ the token-mask ablation): reverse KL (or another divergence) to the
                    teacher on the student's own rollouts; VA-OPD reweights rollouts and groups tokens.
* `policy_loss_step` - grpo, papo, vold: verifiable rewards, PPO-clip surrogate, plus PAPO's perception
                    term or VOLD's distillation term on the same rollouts.
* `sequence_loss` - sft (NLL) and kd (forward KL to the teacher) on given / teacher-generated traces.

Each returns `(loss, diagnostics)`. The loss is already normalised for the micro-batch: the trainer
divides by the number of micro-batches and calls backward.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from vlm_opd import algorithms as A
from vlm_opd.config import TrainConfig
from vlm_opd.data import Example
from vlm_opd.errors import ConfigError, DataError
from vlm_opd.train.fsdp import gathered

FULL_VOCAB = ("reverse_kl", "forward_kl", "jsd")


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts (stable across processes and Python runs, unlike hash())."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@dataclass
class StepContext:
    """Everything a step needs; built once by the trainer."""

    cfg: TrainConfig
    student: Any  # LoadedModel whose .model is the (possibly DDP-wrapped) trainable module
    student_for_generation: Callable[[], Any]  # returns a LoadedModel with the unwrapped model
    teacher: Any | None = None
    reference: Any | None = None  # frozen initial student, for GRPO's optional KL penalty
    degrade: Callable | None = None  # PIL -> PIL, the VA counterfactual
    papo_mask: Callable | None = None  # PIL -> PIL, PAPO's masked image
    reward_fn: Callable[[str, Example], float] | None = None
    last_samples: list[dict[str, str]] = field(default_factory=list)  # for sample_every logging
    rollout_backend: Any | None = None  # SamplerBackend for the student's rollouts (None: HF generate)


# ------------------------------------------------------------------------------------------------
# Shared pieces


def _valid(rollout) -> tuple[torch.Tensor, torch.Tensor]:
    mask = rollout.completion_mask.to(torch.float32)  # [B, T]
    return mask, mask.bool()


def _scatter(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Put per-valid-token values `[N]` back into a zero `[B, T]` tensor (differentiably)."""
    out = values.new_zeros(index.shape)
    return out.masked_scatter(index, values)


def student_token_logprobs(ctx: StepContext, rollout, images="real", *, with_entropy=False):
    """Per-token log-probs `[B, T]` of the sampled completion under the student, with gradient."""
    from vlm_opd.scoring import completion_hidden

    mask, idx = _valid(rollout)
    hidden = completion_hidden(ctx.student, rollout, images=images, degrade=ctx.papo_mask)  # [B, T, H]
    out = A.chunked_token_logprobs(
        hidden[idx], ctx.student.lm_head_weight, rollout.completion_ids.to(hidden.device)[idx],
        chunk_size=ctx.cfg.loss.chunk_size, return_entropy=with_entropy,
    )
    if with_entropy:
        lp, ent = out
        return _scatter(lp, idx), _scatter(ent, idx)
    return _scatter(out, idx)


def per_token_divergence(ctx: StepContext, rollout, teacher_hidden: torch.Tensor | None,
                         teacher_logprobs: torch.Tensor | None, teacher_weight: torch.Tensor | None,
                         kind: str | None = None) -> torch.Tensor:
    """Per-token divergence student -> teacher `[B, T]` (0 on padding), gradient to the student only.

    Full-vocabulary kinds run chunked from hidden states and the two lm_head weights, so [N, V] logits
    of both models never exist at once. Sampled-token kinds (k1/k2/k3) use the sampled token's
    log-probs; k1 is trained through its score-function surrogate `sg(lp_s - lp_t) * lp_s`, whose
    gradient is the unbiased per-token reverse-KL gradient (k1 itself has zero expected gradient).
    """
    cfg = ctx.cfg.loss
    kind = kind or cfg.divergence
    mask, idx = _valid(rollout)
    if kind in FULL_VOCAB:
        from vlm_opd.scoring import completion_hidden

        hidden = completion_hidden(ctx.student, rollout, images="real")  # [B, T, Hs]
        vals = A.chunked_divergence(
            hidden[idx], ctx.student.lm_head_weight, teacher_hidden.to(hidden.device)[idx],
            teacher_weight.to(hidden.device), kind=kind, beta=cfg.jsd_beta, temperature=cfg.temperature,
            chunk_size=cfg.chunk_size,
        )
        return _scatter(vals, idx)
    lp_s = student_token_logprobs(ctx, rollout)
    lp_t = teacher_logprobs.to(lp_s.device)
    if kind == "k1":
        per_token = (lp_s - lp_t).detach() * lp_s
    else:
        per_token = A.sampled_token_kl(lp_s, lp_t, estimator=kind)
    return per_token * mask.to(per_token.device)


def sample_rollouts(ctx: StepContext, examples: list[Example], seed: int, *, k: int | None = None):
    from vlm_opd.rollout import sample

    r = ctx.cfg.rollout
    lm = ctx.student_for_generation()
    with torch.no_grad(), gathered(lm.model):  # FSDP: whole weights, no collective while sampling
        rollout = sample(lm, examples, k=k or r.k, max_new_tokens=r.max_new_tokens,
                         temperature=r.temperature, top_p=r.top_p, seed=seed,
                         system_prompt=ctx.cfg.data.system_prompt, backend=ctx.rollout_backend)
    ctx.last_samples = [{"id": examples[b // rollout.k].id, "problem": examples[b // rollout.k].problem,
                         "answer": examples[b // rollout.k].answer, "completion": t}
                        for b, t in enumerate(rollout.texts[:4])]
    return rollout


# ------------------------------------------------------------------------------------------------
# OPD and VA-OPD


def distill_loss(ctx: StepContext, examples: list[Example], seed: int) -> tuple[torch.Tensor, dict]:
    """Standard OPD (Eq. 1) or VA-OPD (Eq. 6) on fresh student rollouts of `examples`."""
    from vlm_opd.scoring import teacher_signals

    cfg = ctx.cfg
    rollout = sample_rollouts(ctx, examples, seed)
    need_va = cfg.method == "va_opd" or cfg.token_mask.which in ("top", "bottom")
    full_vocab = cfg.loss.divergence in FULL_VOCAB
    batched = cfg.va_opd.batch_real_and_degraded
    if batched is None:  # auto: one 2B batch pays off on accelerators; on CPU two passes measured faster
        batched = ctx.teacher.device.type != "cpu"
    shift = need_va and cfg.va_opd.va_kind == "teacher_shift"
    with torch.no_grad():
        sig = teacher_signals(ctx.teacher, rollout, degrade=ctx.degrade if need_va else None,
                              need_hidden=full_vocab or shift, batch_real_and_degraded=batched,
                              need_hidden_degraded=shift, chunk_size=cfg.loss.chunk_size)
    mask, _ = _valid(rollout)
    per_token = per_token_divergence(ctx, rollout, sig.hidden_real, sig.logprobs_real, sig.lm_head_weight)
    mask = mask.to(per_token.device)
    if shift and sig.hidden_degraded is None:  # a text-only teacher has no degraded pass
        raise ConfigError("va_opd.va_kind: teacher_shift needs a vision teacher (its degraded-image pass); "
                          f"teacher {ctx.teacher.name_or_path!r} is text-only")
    if shift:  # position-level VA from the teacher's two full distributions (not the paper's Eq. 2)
        # On the teacher's device: only the [B, T] result moves, not the teacher's [V, H] lm_head.
        t_dev = sig.hidden_real.device
        with torch.no_grad():
            va = A.teacher_shift_va(sig.hidden_real, sig.hidden_degraded, sig.lm_head_weight, mask.to(t_dev),
                                    divergence=cfg.va_opd.shift_divergence, chunk_size=cfg.loss.chunk_size)
        va = va.to(device=mask.device, dtype=mask.dtype)
    elif need_va:
        va = A.visual_advantage(sig.logprobs_real.to(mask.device), sig.logprobs_degraded.to(mask.device), mask)
    else:
        va = torch.zeros_like(mask)
    if need_va and cfg.va_opd.va_floor > 0:  # not the paper's: tiny VA counts as none
        va = A.floor_va(va, cfg.va_opd.va_floor)
    keep = None
    if cfg.token_mask.which != "none":
        gen = torch.Generator().manual_seed(derive_seed(seed, "token_mask"))
        keep = A.va_token_mask(va, mask, which=cfg.token_mask.which, frac=cfg.token_mask.frac, generator=gen)
    pk = rollout.view_pk
    is_va = cfg.method == "va_opd"
    loss, diags = A.va_opd_loss(
        pk(per_token), pk(va), pk(mask), tau=cfg.va_opd.tau, top_frac=cfg.va_opd.top_frac, lam=cfg.va_opd.lam,
        reweight=is_va and cfg.va_opd.reweight, grouped=is_va and cfg.va_opd.grouped,
        token_keep=None if keep is None else pk(keep), high_group=cfg.va_opd.high_group,
    )
    diags = dict(diags)
    diags["kl"] = float((per_token.detach() * mask).sum() / mask.sum().clamp_min(1))
    if not need_va:  # OPD without the degraded pass: VA was not measured
        for key in ("mean_va", "top10_va_share", "frac_va_positive"):
            diags.pop(key, None)
    diags.update(_rollout_stats(ctx, rollout, examples))
    return loss, diags


def _rollout_stats(ctx: StepContext, rollout, examples: list[Example]) -> dict[str, float]:
    mask = rollout.completion_mask
    stats = {"completion_len": float(mask.sum(-1).float().mean()), "tokens": float(mask.sum())}
    if ctx.reward_fn is not None and all(e.answer is not None for e in examples):
        k = rollout.k
        rewards = [ctx.reward_fn(t, examples[b // k]) for b, t in enumerate(rollout.texts)]
        stats["reward"] = sum(rewards) / max(1, len(rewards))
    return stats


# ------------------------------------------------------------------------------------------------
# GRPO, PAPO, VOLD


@dataclass
class PolicyBatch:
    """One rollout batch of a policy method and what stays fixed while the student updates on it.

    Attributes:
        rollout: the student's rollouts, `[P, K]` layout.
        rewards, advantages: `[B]` verifiable rewards and group-relative advantages.
        mask: `[B, T]` float completion mask.
        old_logprobs: `[B, T]` behaviour-policy log-probs, taken before any update; None when the
            batch gets one update (the current policy is the behaviour policy, ratio 1).
        ref_logprobs: `[B, T]` log-probs under the frozen initial student (kl_coef > 0), else None.
        diags: per-batch diagnostics (reward, reward_std).
    """

    rollout: Any
    rewards: torch.Tensor
    advantages: torch.Tensor
    mask: torch.Tensor
    old_logprobs: torch.Tensor | None
    ref_logprobs: torch.Tensor | None
    diags: dict[str, float]

    @property
    def num_prompts(self) -> int:
        return self.rollout.num_prompts

    def rows(self, prompts: torch.Tensor) -> torch.Tensor:
        """Row indices of the given prompt groups, groups in ascending order (keeps the `[P, K]` layout)."""
        k = self.rollout.k
        groups = torch.sort(prompts).values
        return (groups[:, None] * k + torch.arange(k)[None, :]).reshape(-1)

    def tokens(self, rows: torch.Tensor | None = None) -> float:
        """Completion tokens in `rows` (all rows when None)."""
        return float(self.mask.sum() if rows is None else self.mask.index_select(0, rows.to(self.mask.device)).sum())


def policy_prepare(ctx: StepContext, examples: list[Example], seed: int, *, updates: int = 1) -> PolicyBatch:
    """Sample `examples`, score the rollouts' rewards and everything an update needs that does not change.

    Args:
        updates: optimizer updates this batch will get (grpo.ppo_epochs x grpo.mini_batches); with
            more than one, the behaviour policy's log-probs are taken now (no grad), before any update.
    """
    from vlm_opd.scoring import token_logprobs

    cfg = ctx.cfg
    for e in examples:
        if e.answer is None:
            raise DataError(f"example {e.id!r} has no answer: {cfg.method} needs verifiable rewards")
    rollout = sample_rollouts(ctx, examples, seed)
    k = rollout.k
    rewards = torch.tensor([ctx.reward_fn(t, examples[b // k]) for b, t in enumerate(rollout.texts)],
                           dtype=torch.float32)  # [B]
    advantages = A.grpo_advantages(rewards.view(-1, k), scale=cfg.grpo.scale_rewards).view(-1)  # [B]
    mask, _ = _valid(rollout)
    old = ref = None
    with torch.no_grad():
        if updates > 1:
            old = student_token_logprobs(ctx, rollout).detach()
        if cfg.grpo.kl_coef > 0:
            ref = token_logprobs(ctx.reference, rollout, images="real", chunk_size=cfg.loss.chunk_size)
    diags = {"reward": float(rewards.mean()),
             "reward_std": float(rewards.view(-1, k).std(-1, unbiased=k > 1).mean()) if k > 1 else 0.0}
    return PolicyBatch(rollout, rewards, advantages, mask, old, ref, diags)


def policy_update_loss(
    ctx: StepContext, batch: PolicyBatch, rows: torch.Tensor | None = None, *, token_normalizer: float | None = None
) -> tuple[torch.Tensor, dict]:
    """GRPO (+ PAPO perception loss, + VOLD distillation) loss of `batch`'s `rows` under the current student.

    Args:
        batch: from `policy_prepare`.
        rows: rows of whole prompt groups (`batch.rows(...)`); None = every row.
        token_normalizer: see `algorithms.policy_loss` (dapo's token count of the whole update).
    """
    from vlm_opd.scoring import teacher_signals

    cfg = ctx.cfg
    rollout, mask, adv, rewards = batch.rollout, batch.mask, batch.advantages, batch.rewards
    old, ref = batch.old_logprobs, batch.ref_logprobs
    if rows is not None:
        rollout = rollout.select(rows)
        mask, adv, rewards = mask[rows], adv[rows], rewards[rows]
        old = None if old is None else old[rows]
        ref = None if ref is None else ref[rows]

    papo = cfg.method == "papo"
    out = student_token_logprobs(ctx, rollout, with_entropy=papo)
    logprobs, entropy = out if papo else (out, None)
    mask = mask.to(logprobs.device)
    # One update per batch: the sampling policy is the current one, so old = current (ratio 1).
    old = logprobs.detach() if old is None else old.to(logprobs.device)
    loss, diags = A.policy_loss(logprobs, old, adv.to(logprobs.device), mask,
                                clip_eps=cfg.grpo.clip_eps, clip_eps_high=cfg.grpo.clip_eps_high,
                                loss_type=cfg.grpo.loss_type, token_normalizer=token_normalizer)
    diags = dict(diags)

    if ref is not None:
        kl = A.kl_penalty(logprobs, ref.to(logprobs.device), mask, estimator="k3")
        loss = loss + cfg.grpo.kl_coef * kl
        diags["kl_ref"] = float(kl.detach())

    if papo:
        with torch.no_grad():  # the masked branch under the current student, detached (as PAPO's code)
            lp_masked, ent_masked = student_token_logprobs(ctx, rollout, images="degraded", with_entropy=True)
        p_loss, p_diags = A.papo_perception_loss(
            logprobs, lp_masked.detach(), mask, gamma=cfg.papo.gamma, entropy=entropy,
            entropy_masked=ent_masked.detach(), entropy_coef=cfg.papo.entropy_coef)
        loss = loss + p_loss
        diags.update({f"papo/{k_}": v for k_, v in p_diags.items()})

    if cfg.method == "vold":
        # The teacher pass runs per update (not kept from the batch), so grad_accum bounds its memory.
        full_vocab = cfg.loss.divergence in FULL_VOCAB
        with torch.no_grad():
            sig = teacher_signals(ctx.teacher, rollout, degrade=None, need_hidden=full_vocab,
                                  chunk_size=cfg.loss.chunk_size)
        per_token_kl = per_token_divergence(ctx, rollout, sig.hidden_real, sig.logprobs_real, sig.lm_head_weight)
        loss, v_diags = A.vold_loss(loss, per_token_kl, mask, rewards.to(mask.device), beta=cfg.vold.beta,
                                    distill_on=cfg.vold.distill_on,
                                    success_threshold=cfg.vold.success_threshold)
        diags.update({f"vold/{k_}": v for k_, v in v_diags.items()})
    diags.update({"completion_len": float(mask.sum(-1).mean()), "tokens": float(mask.sum())})
    return loss, diags


def policy_loss_step(ctx: StepContext, examples: list[Example], seed: int) -> tuple[torch.Tensor, dict]:
    """GRPO / PAPO / VOLD with one update on fresh rollouts of `examples` (the trainer splits batches
    into several PPO updates itself, with `policy_prepare` and `policy_update_loss`)."""
    batch = policy_prepare(ctx, examples, seed)
    loss, diags = policy_update_loss(ctx, batch)
    return loss, {**batch.diags, **diags}


POLICY_METHODS = ("grpo", "papo", "vold")


# ------------------------------------------------------------------------------------------------
# SFT and off-policy KD


def target_texts(ctx: StepContext, examples: list[Example], seed: int) -> list[str]:
    """The sequences SFT/KD train on: the dataset's solutions, or traces the teacher generates now."""
    cfg = ctx.cfg
    if cfg.sft.target == "solution":
        missing = [e.id for e in examples if not e.solution]
        if missing:
            raise DataError(f"sft.target=solution but rows {missing[:5]} have no solution/trace field; "
                            "generate traces with `vlm-opd generate-traces` or set sft.target=teacher")
        return [e.solution for e in examples]
    from vlm_opd.rollout import sample

    with torch.no_grad(), gathered(ctx.teacher.model):
        r = sample(ctx.teacher, examples, k=1, max_new_tokens=cfg.sft.max_length,
                   temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p, seed=seed,
                   system_prompt=cfg.data.system_prompt)
    return list(r.texts)


def sequence_loss(ctx: StepContext, examples: list[Example], seed: int) -> tuple[torch.Tensor, dict]:
    """SFT: token-mean NLL of the target traces. KD: token-mean forward KL(teacher || student) on them."""
    from vlm_opd.rollout import rollout_from_texts
    from vlm_opd.scoring import teacher_signals

    cfg = ctx.cfg
    texts = target_texts(ctx, examples, seed)
    rollout = rollout_from_texts(ctx.student_for_generation(), examples, texts,
                                 max_new_tokens=cfg.sft.max_length, system_prompt=cfg.data.system_prompt)
    mask, _ = _valid(rollout)
    truncated = float((~rollout.finished).sum())  # targets cut at sft.max_length (no EOS kept)
    if cfg.method == "sft":
        logprobs = student_token_logprobs(ctx, rollout)
        mask = mask.to(logprobs.device)
        loss = -(logprobs * mask).sum() / mask.sum().clamp_min(1)
        return loss, {"nll": float(loss.detach()), "tokens": float(mask.sum()), "truncated_targets": truncated}
    with torch.no_grad():
        sig = teacher_signals(ctx.teacher, rollout, degrade=None, need_hidden=True, chunk_size=cfg.loss.chunk_size)
    per_token = per_token_divergence(ctx, rollout, sig.hidden_real, sig.logprobs_real, sig.lm_head_weight,
                                     kind="forward_kl")
    mask = mask.to(per_token.device)
    loss = (per_token * mask).sum() / mask.sum().clamp_min(1)
    return loss, {"kl_forward": float(loss.detach()), "tokens": float(mask.sum()), "truncated_targets": truncated}


STEP_FUNCTIONS: dict[str, Callable[[StepContext, list[Example], int], tuple[torch.Tensor, dict]]] = {
    "sft": sequence_loss,
    "kd": sequence_loss,
    "opd": distill_loss,
    "va_opd": distill_loss,
    "grpo": policy_loss_step,
    "papo": policy_loss_step,
    "vold": policy_loss_step,
}
