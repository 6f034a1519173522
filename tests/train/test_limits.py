"""`prompt_tokens` (the length check's fast count) equals the length `encode_prompts` really builds."""

from __future__ import annotations

import pytest

from vlm_opd.data.synthetic import generate
from vlm_opd.models.prompts import encode_prompts
from vlm_opd.train.limits import model_context, prompt_tokens


@pytest.mark.parametrize("family", ["tiny_qwen2vl", "tiny_qwen3vl", "tiny_qwen3_lm"])
def test_prompt_tokens_match_the_encoded_prompt(family, request):
    lm = request.getfixturevalue(family)
    assert model_context(lm) == 4096
    for ex in generate(4, 0):
        if not lm.is_vision:
            ex.images, ex.problem = [], ex.problem.replace("<image>", "")
        for system in (None, "Think step by step."):
            exact = encode_prompts(lm, [ex], system_prompt=system)["input_ids"].shape[1]
            assert prompt_tokens(lm, ex, system) == exact
            # the cheap bound never under-counts
            assert prompt_tokens(lm, ex, system, upper_bound=10_000) >= exact
