"""One VA-OPD step at real width (Qwen3-VL-2B text and vision widths, vocabulary 151,936) on the CPU.

The student is the real Qwen3-VL-2B architecture cut to one text and one vision block (float32, tied
embedding, 1.7 GB), the teacher the same architecture with other weights, stored in bfloat16 as paper
configs load teachers. One prompt with a 448 x 448 image goes through the real processor settings
(patch 16, merge 2: 196 image tokens), K = 2 rollouts of 256 tokens each. The rollout is forced
(uniform random ordinary tokens through `sample`'s backend interface): sampling 256 tokens from a
random model at this width costs ~0.1 s per token here for nothing the test checks. The real
sampler runs separately for a few tokens to check it never emits one of the 151,936 - 508 padding
rows or a vision token.

Memory is checked two ways (see `vlm_opd.memprobe`): no op output (forward or backward) with a V
dimension has more than `loss.chunk_size` rows unless it is `[V, H]`-shaped (weights, their float32
upcast, their gradients); and the peak of bytes allocated by torch's CPU allocator during the step
is within a budget computed from the shapes (three `[V, H]` float32 gradients of the tied
weight, the other gradients, 100 MiB of activations), whose only slack is smaller than one
`[N, V]` float32 tensor.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vlm_opd.config import config_from_dict
from vlm_opd.data import Example
from vlm_opd.data.degrade import pixelate
from vlm_opd.memprobe import VocabShapeProbe, cpu_peak_allocated
from vlm_opd.models import check_compatible
from vlm_opd.models.real_width import QWEN_VOCAB_ROWS, build_real_width
from vlm_opd.rollout import sample
from vlm_opd.rollout.backends import SampleOutput
from vlm_opd.train import step as step_mod

pytestmark = pytest.mark.slow

V = QWEN_VOCAB_ROWS
H = 2048
K = 2
T = 256
CHUNK = 256
MIB = 2**20


class ForcedTokens:
    """Sampler backend that returns fixed random ordinary tokens (no EOS): a rollout of exactly T tokens."""

    def __init__(self, high: int, seed: int = 0):
        self.high, self.seed = high, seed

    def generate(self, lm, inputs, *, max_new_tokens, **_):
        b = inputs["input_ids"].shape[0]
        ids = torch.randint(0, self.high, (b, max_new_tokens), generator=torch.Generator().manual_seed(self.seed))
        zeros = torch.zeros(b, max_new_tokens)
        return SampleOutput(ids, zeros, zeros)  # log-probs unused by the OPD losses


@pytest.fixture(scope="module")
def pair():
    student = build_real_width("qwen3_vl_2b", text_layers=1, vision_layers=1, seed=0)
    teacher = build_real_width("qwen3_vl_2b", text_layers=1, vision_layers=1, seed=1, dtype="bfloat16")
    return student, teacher


@pytest.fixture(scope="module")
def example():
    rng = np.random.RandomState(0)
    img = Image.fromarray((rng.rand(448, 448, 3) * 255).astype("uint8"))
    return Example(problem="What is the number shown in the image?", images=[img], id="real-width-0")


def test_real_width_shapes_sampler_and_compat(pair, example):
    student, teacher = pair
    assert student.vocab_size == V and student.hidden_size == H
    assert student.lm_head_weight is student.base.get_input_embeddings().weight  # 2B ties them
    n_tok = len(student.tokenizer)
    assert n_tok < V and len(student.suppress_token_ids) >= V - n_tok  # every padding row is suppressed
    check_compatible(teacher, student)  # only the tokenizer's ids are compared, not the padding rows
    r = sample(student, [example], k=K, max_new_tokens=4, seed=0)
    assert int(r.image_grid_thw.prod()) == (448 // 16) ** 2  # 784 patches -> 196 merged image tokens
    assert int((r.prompt_ids == student.image_token_id).sum()) == K * 196
    ids = r.completion_ids[r.completion_mask.bool()]
    assert int(ids.max()) < n_tok
    assert not torch.isin(ids, torch.tensor(student.vision_token_ids)).any()


def test_va_opd_step_at_real_width_keeps_the_chunked_memory_promise(pair, example, monkeypatch):
    student, teacher = pair
    special = min(student.tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>", "<think>"))
    rollout = sample(student, [example], k=K, max_new_tokens=T, seed=0, backend=ForcedTokens(special))
    assert tuple(rollout.completion_mask.shape) == (K, T) and bool(rollout.completion_mask.all())
    n = K * T
    monkeypatch.setattr(step_mod, "sample_rollouts", lambda ctx, ex, seed, k=None: rollout)
    cfg = config_from_dict({"method": "va_opd", "student": {"path": "s"}, "teacher": {"path": "t"},
                            "data": {"train": "d"}, "rollout": {"k": K, "max_new_tokens": T},
                            "loss": {"chunk_size": CHUNK}})
    ctx = step_mod.StepContext(cfg=cfg, student=student, student_for_generation=lambda: student,
                               teacher=teacher, degrade=pixelate)
    student.model.train()
    student.model.zero_grad(set_to_none=True)

    def step():
        loss, diags = step_mod.distill_loss(ctx, [example], 0)
        loss.backward()
        return float(loss.detach()), diags

    probe = VocabShapeProbe(V, max_rows=CHUNK, allowed_shapes=[(V, H), (H, V)])
    with probe:
        mem = cpu_peak_allocated(step)
    loss, diags = mem.result
    grad = student.lm_head_weight.grad
    assert np.isfinite(loss) and diags["tokens"] == n
    assert grad is not None and bool(torch.isfinite(grad).all()) and float(grad.abs().max()) > 0

    # Structural: no [N, V] (or [B, T, V]) tensor, in forward or backward.
    assert probe.seen > 0, "the probe saw no vocabulary-sized tensor: it is not looking at the step"
    assert not probe.violations, f"tensors with more than {CHUNK} rows of V: {probe.violations[:5]}"
    assert probe.max_rows_seen == CHUNK  # the chunks themselves (N = 512 > CHUNK)

    # Quantitative. Bytes that must coexist at the peak, from the shapes alone: three [V, H] float32
    # tensors (the tied weight's gradient from the chunked lm_head path, the embedding's dense
    # gradient, and autograd's out-of-place sum of the two; the teacher weight's float32 upcast and
    # the [chunk, V] buffers are freed by then), the gradients of every other student parameter,
    # and an allowance for the 1-layer model's activations. That allowance is the budget's only
    # slack and is smaller than one [N, V] float32 tensor, so such a tensor alive at the peak fails.
    vh = V * H * 4
    other_grads = 4 * sum(p.numel() for p in student.model.parameters() if p is not student.lm_head_weight)
    activations = 100 * MIB
    budget = 3 * vh + other_grads + activations
    nv = n * V * 4  # one [N, V] float32 tensor: 297 MiB
    assert activations < nv
    print(f"\nreal-width VA-OPD step: peak allocated {mem.peak_bytes / MIB:.0f} MiB (budget {budget / MIB:.0f} MiB, "
          f"[N, V] fp32 = {nv / MIB:.0f} MiB), largest allocations {[round(b / MIB) for b in mem.largest[:6]]} MiB")
    assert mem.peak_bytes <= budget
    assert mem.peak_bytes > 3 * vh  # the measurement does see the [V, H] gradients (it is looking)
