"""Sampling backends behind one small interface.

A backend turns left-padded prompt inputs into completion ids plus the log-probs of each sampled
token. `HFGenerateBackend` drives transformers' `generate` (KV cache, batched, stops when every row
hit EOS); `vllm_backend.VLLMBackend` implements the same signature on a vLLM engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from PIL import Image

from vlm_opd.models.loading import LoadedModel


@dataclass
class SampleOutput:
    """What a backend returns for B rows.

    Attributes:
        completion_ids: `[B, T]` sampled ids (anything may follow an EOS; the caller masks it).
        sampler_logprobs: `[B, T]` float32 log-probs under the distribution sampled from
            (temperature, top-p, suppression applied).
        policy_logprobs: `[B, T]` float32 log-probs under the plain T=1 full-vocabulary softmax, or
            None if the backend cannot provide them (the caller then re-scores).
    """

    completion_ids: torch.Tensor
    sampler_logprobs: torch.Tensor
    policy_logprobs: torch.Tensor | None


@runtime_checkable
class SamplerBackend(Protocol):
    """Interface of a sampling backend."""

    def generate(
        self,
        lm: LoadedModel,
        inputs: dict[str, torch.Tensor],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        greedy: bool,
        row_keys: torch.Tensor | None,
        suppress_token_ids: tuple[int, ...],
        eos_token_ids: tuple[int, ...],
        pad_token_id: int,
        row_images: Sequence[Sequence[Image.Image]] | None = None,
    ) -> SampleOutput:
        """Sample one completion per row of `inputs` (left-padded `input_ids [B, Lp]`, ...).

        `row_keys` (`[B]` int64) makes sampling reproducible per row: a row's tokens depend only on
        its key and its own logits, not on the other rows of the batch. None = backend's own RNG.
        `row_images[b]` are row b's images as the processor saw them (engines that process images
        themselves, such as vLLM, need them; backends fed `pixel_values` ignore them).
        """
        ...


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Set logits outside the smallest set with cumulative probability >= top_p to -inf.

    Args:
        logits: `[B, V]`.
    Returns:
        `[B, V]` new tensor; the most likely token is always kept.
    """
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    # Mass strictly before each token; a token is dropped once that mass already reaches top_p.
    mass_before = probs.cumsum(dim=-1) - probs
    drop = mass_before >= top_p
    drop[:, 0] = False
    return logits.scatter(1, order, sorted_logits.masked_fill(drop, float("-inf")))


class RowUniforms:
    """Keyed inverse-CDF sampling: one uniform per row per step, from one generator per row.

    Row b's uniforms come from a CPU `torch.Generator` seeded by its key, drawn once for all steps,
    so a row's sampled tokens depend only on its key and its own logits: not on the other rows of
    the batch, on padding, on the process, or on the device. Each step costs a softmax and a
    float64 cumsum over `[B, V]` (no per-row work; B generator calls once per rollout).
    """

    def __init__(self, row_keys: torch.Tensor, steps: int, device: torch.device):
        u = torch.empty(len(row_keys), steps, dtype=torch.float64)
        for b, key in enumerate(row_keys.tolist()):
            g = torch.Generator()
            g.manual_seed(int(key) & 0x7FFF_FFFF_FFFF_FFFF)
            u[b] = torch.rand(steps, generator=g, dtype=torch.float64)
        self.uniforms = u.t().contiguous().to(device)  # [steps, B]

    def pick(self, logits: torch.Tensor, step: int) -> torch.Tensor:
        """Sample `[B, 1]` token ids from softmax(logits `[B, V]`) with this step's uniforms."""
        # float64 running sum: float32 would drift by ~1e-4 over a 150k vocabulary.
        cdf = torch.softmax(logits.float(), dim=-1).cumsum(dim=-1, dtype=torch.float64)
        cdf = cdf / cdf[:, -1:]  # exact 1 at the end, so every uniform in [0, 1) lands in range
        # right=True: the first token whose cdf exceeds u; a zero-probability token never does.
        return torch.searchsorted(cdf, self.uniforms[step].unsqueeze(1), right=True)


class _StepRecorder:
    """Logits processor that shapes the sampling distribution and records token log-probs.

    At step t it receives the raw next-token logits; the token sampled from them only shows up at
    step t + 1 (as the last input id), so each call first gathers the previous step's log-probs.
    Only the current step's `[B, V]` logits are held, never all steps.

    With `keyed`, it samples the token itself (`RowUniforms.pick`) and returns logits that are 0 at
    that token and -inf elsewhere, and generate runs in greedy mode, so generate's argmax is the
    keyed sample.
    """

    def __init__(self, suppress: torch.Tensor | None, temperature: float, top_p: float, keyed: RowUniforms | None):
        self.suppress = suppress
        self.temperature = temperature
        self.top_p = top_p
        self.keyed = keyed
        self._step = 0
        self._raw: torch.Tensor | None = None  # [B, V] float32 raw logits of the last step
        self._raw_lse: torch.Tensor | None = None  # [B, 1]
        self._proc: torch.Tensor | None = None  # [B, V] sampling logits of the last step
        self._proc_lse: torch.Tensor | None = None  # [B, 1]
        self.policy: list[torch.Tensor] = []  # T x [B, 1]
        self.sampler: list[torch.Tensor] = []

    def _collect(self, tokens: torch.Tensor) -> None:  # tokens [B, 1]
        self.policy.append(self._raw.gather(1, tokens) - self._raw_lse)
        self.sampler.append(self._proc.gather(1, tokens) - self._proc_lse)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self._raw is not None:
            self._collect(input_ids[:, -1:])
        raw = scores.float()
        proc = raw
        if self.suppress is not None:
            proc = proc.index_fill(1, self.suppress, float("-inf"))
        if self.temperature != 1.0:
            proc = proc / self.temperature
        proc = top_p_filter(proc, self.top_p)
        self._raw, self._proc = raw, proc
        self._raw_lse = torch.logsumexp(raw, dim=-1, keepdim=True)
        # With nothing suppressed, T = 1 and no top-p, the two distributions are one.
        self._proc_lse = self._raw_lse if proc is raw else torch.logsumexp(proc, dim=-1, keepdim=True)
        step, self._step = self._step, self._step + 1
        if self.keyed is not None:
            token = self.keyed.pick(proc, step)  # [B, 1]
            return torch.full_like(proc, float("-inf")).scatter_(1, token, 0.0)
        return proc

    def finish(self, last_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gather the final step and return (`sampler [B, T]`, `policy [B, T]`) float32."""
        if self._raw is not None:
            self._collect(last_tokens)
        self._raw = self._proc = None
        return torch.cat(self.sampler, dim=1), torch.cat(self.policy, dim=1)


class HFGenerateBackend:
    """Sampling with transformers' `model.generate` (KV cache, batched, left-padded prompts).

    The model's own generation defaults (repetition penalty, top-k, ... from `generation_config.json`)
    are NOT applied: the sampled distribution is exactly softmax(logits / temperature) with top-p and
    the suppressed ids removed, so its log-probs are known.
    """

    def generate(
        self,
        lm: LoadedModel,
        inputs: dict[str, torch.Tensor],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        greedy: bool,
        row_keys: torch.Tensor | None,
        suppress_token_ids: tuple[int, ...],
        eos_token_ids: tuple[int, ...],
        pad_token_id: int,
        row_images: Sequence[Sequence[Image.Image]] | None = None,  # noqa: ARG002 (pixel_values are in inputs)
    ) -> SampleOutput:
        from transformers import GenerationConfig, LogitsProcessorList

        model = lm.base  # generate on the plain model (no DDP / PEFT wrapper)
        device = inputs["input_ids"].device
        suppress = torch.tensor(suppress_token_ids, dtype=torch.long, device=device) if suppress_token_ids else None
        keyed = RowUniforms(row_keys, max_new_tokens, device) if (row_keys is not None and not greedy) else None
        recorder = _StepRecorder(suppress, 1.0 if greedy else temperature, 1.0 if greedy else top_p, keyed)
        # Keyed sampling picks the token in the recorder; generate then just takes the argmax.
        do_sample = not greedy and keyed is None
        # Every warper neutral: the recorder alone shapes the distribution (top_k=0 disables
        # transformers' default top-k of 50; it is only valid when sampling).
        warpers = dict(temperature=1.0, top_k=0, top_p=1.0) if do_sample else {}
        gen_config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            num_beams=1,
            eos_token_id=list(eos_token_ids),
            pad_token_id=pad_token_id,
            use_cache=True,
            **warpers,
        )
        prompt_len = inputs["input_ids"].shape[1]
        # Swap in a neutral default config so nothing from the checkpoint's generation_config.json
        # (repetition_penalty, top_k, ...) fills the fields we leave at their neutral values.
        saved_config = model.generation_config
        model.generation_config = GenerationConfig()
        # Eval mode while sampling: a training model with gradient checkpointing would otherwise
        # generate without the KV cache (transformers turns use_cache off), and dropout would change
        # the sampled distribution away from the one the log-probs describe.
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                sequences = model.generate(
                    **inputs, generation_config=gen_config, logits_processor=LogitsProcessorList([recorder])
                )
        finally:
            model.generation_config = saved_config
            model.train(was_training)
        completion = sequences[:, prompt_len:]
        sampler_lp, policy_lp = recorder.finish(completion[:, -1:])
        if sampler_lp.shape != completion.shape:
            raise RuntimeError(
                f"HFGenerateBackend: recorded {sampler_lp.shape[1]} steps for {completion.shape[1]} new tokens"
            )
        return SampleOutput(completion_ids=completion, sampler_logprobs=sampler_lp, policy_logprobs=policy_lp)
