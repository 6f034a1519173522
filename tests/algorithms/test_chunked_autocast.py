"""The chunked divergences compute in float32 even inside the trainer's bf16 autocast region."""

from __future__ import annotations

import pytest
import torch

from vlm_opd.algorithms import chunked_divergence, chunked_token_logprobs


@pytest.mark.parametrize("kind", ["reverse_kl", "forward_kl", "jsd"])
@pytest.mark.parametrize("train_weight", [False, True])
def test_bf16_autocast_changes_nothing(kind, train_weight):
    g = torch.Generator().manual_seed(0)
    hs, ht = torch.randn(7, 16, generator=g), torch.randn(7, 12, generator=g)
    ws, wt = torch.randn(300, 16, generator=g), torch.randn(300, 12, generator=g)
    ids = torch.randint(0, 300, (7,), generator=g)
    results = []
    for enabled in (False, True):
        h, w = hs.clone().requires_grad_(), ws.clone().requires_grad_(train_weight)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            d = chunked_divergence(h, w, ht, wt, kind=kind, chunk_size=3)
            lp, ent = chunked_token_logprobs(h, w, ids, chunk_size=3, return_entropy=True)
            (d.sum() + lp.sum() + ent.sum()).backward()
        results.append([d, lp, ent, h.grad] + ([w.grad] if train_weight else []))
    for plain, amp in zip(*results):
        assert amp.dtype == torch.float32 and torch.equal(plain, amp)
