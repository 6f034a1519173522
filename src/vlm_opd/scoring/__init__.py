"""Score rollouts: completion hidden states, token log-probs, teacher signals, divergences."""

from vlm_opd.scoring.divergence import per_token_divergence, sampled_token_divergence
from vlm_opd.scoring.inputs import ScoringInputs, scoring_inputs, with_degraded_images
from vlm_opd.scoring.logprobs import (
    TeacherSignals,
    completion_hidden,
    logprobs_from_hidden,
    rope_positions,
    teacher_signals,
    token_logprobs,
)

__all__ = [
    "ScoringInputs",
    "TeacherSignals",
    "completion_hidden",
    "logprobs_from_hidden",
    "per_token_divergence",
    "rope_positions",
    "sampled_token_divergence",
    "scoring_inputs",
    "teacher_signals",
    "token_logprobs",
    "with_degraded_images",
]
