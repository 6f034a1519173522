"""The `Rollout` batch: K sampled completions per prompt plus everything needed to re-score them."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch

from vlm_opd.data.example import Example
from vlm_opd.models.prompts import gather_vision


@dataclass
class Rollout:
    """B = P * K completions of P prompts (K siblings contiguous: row b belongs to prompt b // K).

    Token tensors (`[B, ...]`):
        prompt_ids: `[B, Lp]` left-padded prompt ids (the sampler's encoding).
        prompt_mask: `[B, Lp]` 1 on real prompt tokens (long).
        completion_ids: `[B, Tc]` sampled ids, right-padded with the pad id.
        completion_mask: `[B, Tc]` 1 up to and including the EOS if one was sampled, 0 after (long).
        sampler_logprobs: `[B, Tc]` float32 log-probs of the sampled tokens under the distribution
            actually sampled from: logits / temperature, top-p truncated, vision tokens suppressed.
            Equals `policy_logprobs` only at temperature 1, top_p 1 (up to the suppressed mass).
        policy_logprobs: `[B, Tc]` float32 log-probs under the model's plain T=1 softmax over the full
            vocabulary, i.e. what `scoring.token_logprobs(lm, rollout)` re-computes. Use these as the
            old-policy log-probs of GRPO/PPO ratios. 0 at masked positions.
            Both are None for rollouts built from given texts (`rollout_from_texts`);
            `policy_logprobs` is None after `sample(..., score_policy=False)` with a backend that
            cannot report it (vLLM).
        prompt_index: `[B]` long, the prompt (index into `examples`) of each row.
        finished: `[B]` bool, True when the row sampled an EOS.
        prompt_mm_token_type_ids: `[B, Lp]` 1 at image tokens (VLMs; None for a text-only sampler).

    Prompt-level vision inputs (shared by the K siblings, not repeated):
        pixel_values: `[N_patches, D]` patches of all images of the P prompts, prompt order.
        image_grid_thw: `[N_images, 3]`.
        image_counts: `[P]` images per prompt.

    Other:
        k: samples per prompt.
        examples: the P source examples.
        texts: B decoded completions (special tokens dropped).
        encoding_key: `LoadedModel.encoding_key` of the sampler; scorers with the same key reuse the
            stored prompt encoding instead of re-running the processor.
        temperature, top_p: the sampling settings.
        system_prompt: system message the prompts were rendered with.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    sampler_logprobs: torch.Tensor | None
    policy_logprobs: torch.Tensor | None
    prompt_index: torch.Tensor
    finished: torch.Tensor
    k: int
    examples: list[Example]
    texts: list[str]
    prompt_mm_token_type_ids: torch.Tensor | None = None
    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None
    image_counts: torch.Tensor | None = None
    encoding_key: str = ""
    temperature: float = 1.0
    top_p: float = 1.0
    system_prompt: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return int(self.completion_ids.shape[0])

    @property
    def num_prompts(self) -> int:
        return len(self.examples)

    @property
    def num_tokens(self) -> int:
        """Valid completion tokens in the batch."""
        return int(self.completion_mask.sum())

    @property
    def device(self) -> torch.device:
        return self.completion_ids.device

    # ---- transforms ----------------------------------------------------------------------------
    def to(self, device: str | torch.device) -> Rollout:
        """Copy with every tensor on `device`."""
        changes = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(self, **changes)

    def select(self, indices: torch.Tensor | list[int]) -> Rollout:
        """Rows `indices` (prompt-level data is kept whole; `prompt_index` still points into it).

        A selection that is not whole prompt groups in order loses the `[P, K]` layout, so
        `view_pk` refuses it; scoring and the model inputs keep working.
        """
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.device)
        if idx.ndim != 1:
            raise ValueError(f"Rollout.select: indices must be 1-D, got shape {tuple(idx.shape)}")
        row_fields = (
            "prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "sampler_logprobs",
            "policy_logprobs", "prompt_index", "finished", "prompt_mm_token_type_ids",
        )
        changes: dict[str, Any] = {
            name: getattr(self, name).index_select(0, idx)
            for name in row_fields
            if getattr(self, name) is not None
        }
        changes["texts"] = [self.texts[i] for i in idx.tolist()]
        return replace(self, **changes)

    def trim(self) -> Rollout:
        """Drop prompt columns that are padding in every row and completion columns past every EOS."""
        keep_p = self.prompt_mask.bool().any(0)
        p0 = int(keep_p.long().argmax()) if keep_p.any() else self.prompt_mask.shape[1]
        tc = int(self.completion_mask.sum(1).max()) if self.batch_size else 0
        changes: dict[str, Any] = {}
        for name in ("prompt_ids", "prompt_mask", "prompt_mm_token_type_ids"):
            t = getattr(self, name)
            if t is not None:
                changes[name] = t[:, p0:]
        for name in ("completion_ids", "completion_mask", "sampler_logprobs", "policy_logprobs"):
            t = getattr(self, name)
            if t is not None:
                changes[name] = t[:, :tc]
        return replace(self, **changes)

    def view_pk(self, tensor: torch.Tensor) -> torch.Tensor:
        """Reshape a row tensor `[B, ...]` to `[P, K, ...]` (needs the full, ordered layout)."""
        b = self.batch_size
        expected = torch.arange(b, device=self.prompt_index.device) // self.k
        if b != self.num_prompts * self.k or not torch.equal(self.prompt_index, expected):
            raise ValueError(
                f"Rollout.view_pk: rows are not {self.num_prompts} prompts x {self.k} contiguous samples "
                f"(batch {b}); was the rollout select()-ed?"
            )
        if tensor.shape[0] != b:
            raise ValueError(f"Rollout.view_pk: tensor has {tensor.shape[0]} rows; expected {b}")
        return tensor.reshape(self.num_prompts, self.k, *tensor.shape[1:])

    # ---- model inputs ----------------------------------------------------------------------------
    def vision_inputs(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(`pixel_values`, `image_grid_thw`) for the B rows (each prompt's images once per row)."""
        if self.image_counts is None:
            return None, None
        return gather_vision(self.pixel_values, self.image_grid_thw, self.image_counts, self.prompt_index)

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """Forward inputs for prompt + completion `[B, Lp + Tc]` with the sampler's own prompt encoding.

        Position `Lp - 1 + t` predicts completion token `t`.
        """
        input_ids = torch.cat([self.prompt_ids, self.completion_ids], dim=1)
        attention_mask = torch.cat([self.prompt_mask, self.completion_mask.to(self.prompt_mask.dtype)], dim=1)
        out = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.prompt_mm_token_type_ids is not None:
            # Completion tokens are text: type 0.
            out["mm_token_type_ids"] = torch.cat(
                [self.prompt_mm_token_type_ids, torch.zeros_like(self.completion_ids)], dim=1
            )
            pv, grid = self.vision_inputs()
            if pv is not None:
                out["pixel_values"] = pv
                out["image_grid_thw"] = grid
        return out
