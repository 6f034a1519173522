"""Pure tensor algorithms: divergences, visual advantage and VA-OPD, GRPO / PAPO / VOLD losses,
and chunked full-vocabulary divergences from hidden states.

Every function sees only tensors (shapes in its docstring), computes in float32 or wider, and
normalises by valid-token counts. Losses return `(scalar, diagnostics)`.
"""

from vlm_opd.algorithms.chunked import DIVERGENCE_KINDS, chunked_divergence, chunked_token_logprobs
from vlm_opd.algorithms.divergences import (
    SAMPLED_KL_ESTIMATORS,
    entropy_from_logits,
    forward_kl,
    generalized_jsd,
    reverse_kl,
    sampled_token_kl,
)
from vlm_opd.algorithms.policy import (
    POLICY_LOSS_TYPES,
    VOLD_DISTILL_ON,
    grpo_advantages,
    kl_penalty,
    papo_perception_loss,
    policy_loss,
    vold_loss,
)
from vlm_opd.algorithms.visual_advantage import (
    HIGH_GROUP_CHOICES,
    SHIFT_DIVERGENCES,
    VA_MASK_CHOICES,
    floor_va,
    grouped_token_loss,
    opd_loss,
    rollout_weights,
    va_opd_loss,
    teacher_shift_va,
    va_token_mask,
    visual_advantage,
)

__all__ = [
    "DIVERGENCE_KINDS",
    "HIGH_GROUP_CHOICES",
    "POLICY_LOSS_TYPES",
    "SAMPLED_KL_ESTIMATORS",
    "SHIFT_DIVERGENCES",
    "VA_MASK_CHOICES",
    "VOLD_DISTILL_ON",
    "chunked_divergence",
    "chunked_token_logprobs",
    "entropy_from_logits",
    "floor_va",
    "forward_kl",
    "generalized_jsd",
    "grouped_token_loss",
    "grpo_advantages",
    "kl_penalty",
    "opd_loss",
    "papo_perception_loss",
    "policy_loss",
    "reverse_kl",
    "rollout_weights",
    "sampled_token_kl",
    "teacher_shift_va",
    "va_opd_loss",
    "va_token_mask",
    "visual_advantage",
    "vold_loss",
]
