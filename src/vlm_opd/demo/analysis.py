"""The demo's closing analysis: rollouts of every student on the same held-out prompts, scored by the
teacher under the real and the pixelated image, turned into the VA histogram, the token heatmap and
the reading-token statistics of the report.

The table's accuracy / mean-VA numbers come from the training runs' own evaluations (metrics.jsonl),
so the table, the trajectory plot and a rerun with `vlm-opd train` agree; this pass adds the
per-token view, on its own sample (`analysis_prompts` x `analysis_k` rollouts at T = 1.0).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vlm_opd.data.example import Example

_DIGIT = re.compile(r"^\s*\d+\s*$")


@dataclass
class ModelRollouts:
    """One model's rollouts on the analysis prompts with the teacher's per-token VA."""

    label: str
    texts: list[str]
    tokens: list[list[str]]  # decoded one id at a time, per rollout
    va: list[np.ndarray]  # [T_b] per rollout
    correct: list[bool]
    values: list[list[int]]  # the printed values of each rollout's image
    k: int
    # With `objective=True`: where OPD's and VA-OPD's objectives put their weight on these rollouts.
    objective: dict[str, dict[str, float]] | None = None
    # With `objective`: the share of each method's summed token weight w_t (not w_t x KL_t) per kind.
    objective_weight: dict[str, dict[str, float]] | None = None

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.correct)) if self.correct else float("nan")


def reading_positions(tokens: list[str]) -> list[int]:
    """Indices of the digit tokens of the first sentence ("The bars show 7 and 4."): the values read
    off the image. Everything after the first "." is arithmetic on those values and the boxed answer."""
    out = []
    for j, tok in enumerate(tokens):
        if "." in tok:
            break
        if _DIGIT.match(tok):
            out.append(j)
    return out


def score_model(lm, teacher, examples: list[Example], *, label: str, k: int, max_new_tokens: int, seed: int,
                degrade, batch_prompts: int = 16, objective: dict[str, dict[str, Any]] | None = None) -> ModelRollouts:
    """Sample `k` rollouts per example from `lm` at T = 1.0 and score their per-token VA under `teacher`.

    `objective` ({method: loss spec}, see `recipe.method_va_params`) also measures, on these rollouts,
    how each method's loss distributes its weight over token kinds (`objective_weights`).
    """
    from vlm_opd import algorithms as A
    from vlm_opd.rewards import accuracy_reward
    from vlm_opd.rollout import sample
    from vlm_opd.scoring import teacher_signals

    texts, tokens, vas, correct, values = [], [], [], [], []
    sums: dict[str, dict[str, float]] = {}
    wsums: dict[str, dict[str, float]] = {}
    need_shift = objective is not None and any(s["va_kind"] == "teacher_shift" for s in objective.values())
    lm.model.eval()
    for start in range(0, len(examples), batch_prompts):
        chunk = examples[start:start + batch_prompts]
        with torch.no_grad():
            rollout = sample(lm, chunk, k=k, max_new_tokens=max_new_tokens, temperature=1.0, seed=seed + start)
            sig = teacher_signals(teacher, rollout, degrade=degrade, need_hidden=objective is not None,
                                  need_hidden_degraded=need_shift)
        mask = rollout.completion_mask.float()
        va = A.visual_advantage(sig.logprobs_real, sig.logprobs_degraded, mask.to(sig.logprobs_real.device))
        first = len(tokens)
        for b in range(rollout.batch_size):
            n = int(mask[b].sum())
            ids = rollout.completion_ids[b, :n].tolist()
            tokens.append([lm.tokenizer.decode([i]) for i in ids])
            vas.append(va[b, :n].double().cpu().numpy())
            texts.append(rollout.texts[b])
            correct.append(accuracy_reward(rollout.texts[b], chunk[b // k]) > 0)
            values.append([int(v) for v in chunk[b // k].meta.get("values", [])])
        if objective is not None:
            kinds = _token_kinds(tokens[first:], values[first:], mask.shape[1])
            for method, shares in objective_weights(lm, teacher, rollout, sig, va, mask, kinds, objective).items():
                for kind in TOKEN_KINDS:
                    sums.setdefault(method, dict.fromkeys(TOKEN_KINDS, 0.0))[kind] += shares["mass"][kind]
                    wsums.setdefault(method, dict.fromkeys(TOKEN_KINDS, 0.0))[kind] += shares["weight"][kind]
    out = ModelRollouts(label=label, texts=texts, tokens=tokens, va=vas, correct=correct, values=values, k=k)
    if objective is not None:
        norm = lambda d: {kind: v / max(sum(d.values()), 1e-12) for kind, v in d.items()}  # noqa: E731
        out.objective = {m: norm(d) for m, d in sums.items()}
        out.objective_weight = {m: norm(d) for m, d in wsums.items()}
    return out


TOKEN_KINDS = ("right_digit", "wrong_digit", "other")


def _token_kinds(tokens: list[list[str]], values: list[list[int]], width: int) -> torch.Tensor:
    """`[B, T]` long: 0 a read-off digit stated right, 1 one stated wrong, 2 any other token (incl. padding)."""
    kinds = torch.full((len(tokens), width), 2, dtype=torch.long)
    for b, (toks, vals) in enumerate(zip(tokens, values)):
        for j, pos in enumerate(reading_positions(toks)):
            if j < len(vals):
                kinds[b, pos] = 0 if int(toks[pos].strip()) == vals[j] else 1
    return kinds


def method_va(spec: dict[str, Any], sig, va_sampled: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`[B, T]` the VA a method's training step would use on this rollout batch: the paper's sampled VA
    (`va_sampled`) or `teacher_shift_va` from the teacher's two hidden states (`va_kind`), then
    `floor_va` (`va_floor`), exactly as `train.step.distill_loss` does."""
    from vlm_opd import algorithms as A

    if spec["va_kind"] == "teacher_shift":
        if sig.hidden_degraded is None or sig.hidden_real is None:
            raise ValueError("method_va: teacher_shift needs the teacher's real and degraded hidden states")
        va = A.teacher_shift_va(sig.hidden_real, sig.hidden_degraded, sig.lm_head_weight,
                                mask.to(sig.hidden_real.device), divergence=spec["shift_divergence"])
    else:
        va = va_sampled
    va = va.to(device=mask.device, dtype=mask.dtype)
    if spec["va_floor"] > 0:
        va = A.floor_va(va, spec["va_floor"])
    return va


def objective_weights(student, teacher, rollout, sig, va, mask, kinds,
                      specs: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Where each method's objective puts its weight on one rollout batch (no training).

    The per-token reverse KL to the teacher is computed as in training; the weight a loss gives to a
    token is w_t = d loss / d KL_t (autograd through `va_opd_loss` with the method's own VA definition,
    rollout weights and groups; OPD is its plain token mean). Returns, per method in `specs`,
    {"mass": {kind: sum of w_t * KL_t}, "weight": {kind: sum of w_t}} over the token kinds of `kinds`.
    """
    from vlm_opd import algorithms as A
    from vlm_opd.scoring import completion_hidden, per_token_divergence

    with torch.no_grad():
        hidden = completion_hidden(student, rollout, images="real")  # [B, T, Hs]
        if sig.hidden_real is None:
            from vlm_opd.scoring import teacher_signals

            sig = teacher_signals(teacher, rollout, degrade=None, need_hidden=True)
        kl = per_token_divergence(hidden, student.lm_head_weight, sig.hidden_real, sig.lm_head_weight,
                                  mask.to(hidden.device))  # [B, T]
    pk = rollout.view_pk
    out = {}
    m = mask.to(kl.device)
    for method, spec in specs.items():
        with torch.no_grad():
            va_m = method_va(spec, sig, va, m)
        leaf = kl.detach().clone().requires_grad_(True)
        loss, _ = A.va_opd_loss(pk(leaf), pk(va_m), pk(m), tau=spec["tau"], top_frac=spec["top_frac"],
                                lam=spec["lam"], reweight=spec["reweight"], grouped=spec["grouped"],
                                high_group=spec["high_group"])
        (weight,) = torch.autograd.grad(loss, leaf)
        weight = weight.detach() * m
        mass = weight * kl.detach()
        k = kinds.to(mass.device)
        out[method] = {"mass": {kind: float(mass[k == i].sum()) for i, kind in enumerate(TOKEN_KINDS)},
                       "weight": {kind: float(weight[k == i].sum()) for i, kind in enumerate(TOKEN_KINDS)}}
    return out


def answer_stats(lm, examples: list[Example], *, k: int, max_new_tokens: int, seed: int,
                 batch_prompts: int = 16) -> dict[str, float]:
    """Accuracy of `k` rollouts per example at T = 1.0 (no teacher) and, when the examples carry a
    shortcut hint (`meta["hint"]`), how often the answer copies it where it is NOT the answer
    (`hint_follow_when_wrong`, over those rollouts; None if there are none)."""
    from vlm_opd.rewards import accuracy_reward
    from vlm_opd.rewards import verify_math
    from vlm_opd.rewards.extract import extract_final_answer
    from vlm_opd.rollout import sample

    correct, follow, n_wrong_hint = 0, 0, 0
    n = 0
    lm.model.eval()
    for start in range(0, len(examples), batch_prompts):
        chunk = examples[start:start + batch_prompts]
        with torch.no_grad():
            rollout = sample(lm, chunk, k=k, max_new_tokens=max_new_tokens, temperature=1.0, seed=seed + start)
        for b, text in enumerate(rollout.texts):
            ex = chunk[b // k]
            n += 1
            correct += accuracy_reward(text, ex) > 0
            if "hint" in ex.meta and not ex.meta.get("hint_is_answer", False):
                n_wrong_hint += 1
                follow += bool(verify_math(extract_final_answer(text), str(ex.meta["hint"])))
    return {"accuracy": correct / max(n, 1), "n": n,
            "hint_follow_when_wrong": follow / n_wrong_hint if n_wrong_hint else None,
            "n_hint_wrong": n_wrong_hint}


def reading_stats(r: ModelRollouts) -> dict[str, float]:
    """VA on the read-off digits vs the rest, split by whether each digit was read right.

    Returns shares and means over all rollouts: `reading_token_frac` (read-off digits / all tokens),
    `reading_va_share` (their share of the VA mass), `reading_mean_va` / `other_mean_va`, and
    `right_digit_mean_va` / `wrong_digit_mean_va` (None when no digit of that kind was stated), and
    `reading_accuracy` (rollouts whose first sentence states exactly the printed values).
    """
    total = sum(float(v.sum()) for v in r.va)
    n_tokens = sum(v.size for v in r.va)
    read_mass, n_read, right, wrong, exact = 0.0, 0, [], [], 0
    for toks, v, vals in zip(r.tokens, r.va, r.values):
        pos = reading_positions(toks)
        read_mass += float(v[pos].sum()) if pos else 0.0
        n_read += len(pos)
        stated = [int(toks[j].strip()) for j in pos]
        exact += stated == vals
        for j, (said, true) in enumerate(zip(stated, vals)):
            (right if said == true else wrong).append(float(v[pos[j]]))
    mean = lambda xs: float(np.mean(xs)) if xs else None  # noqa: E731
    return {
        "reading_accuracy": exact / max(len(r.va), 1),
        "reading_token_frac": n_read / max(n_tokens, 1),
        "reading_va_share": read_mass / total if total > 0 else 0.0,
        "reading_mean_va": read_mass / max(n_read, 1),
        "other_mean_va": (total - read_mass) / max(n_tokens - n_read, 1),
        "right_digit_mean_va": mean(right),
        "wrong_digit_mean_va": mean(wrong),
        "n_right_digits": len(right),
        "n_wrong_digits": len(wrong),
    }


def heatmap_panels(runs: list[ModelRollouts], prompt: str, index: int = 0) -> list[dict[str, Any]]:
    """Figure 6 panels: rollout `index` of every model (the same held-out prompt for all)."""
    return [{"label": r.label, "prompt": prompt, "tokens": r.tokens[index], "va": r.va[index].tolist(),
             "correct": bool(r.correct[index])} for r in runs]


def hint_stats(r: ModelRollouts, examples: list[Example]) -> dict[str, Any]:
    """On rollouts of `examples` (k per example, in order): how often the final answer copies the
    shortcut hint where the hint is NOT the answer (`hint_follow_when_wrong`; None without such cases)."""
    from vlm_opd.rewards import verify_math
    from vlm_opd.rewards.extract import extract_final_answer

    follow, n = 0, 0
    for b, text in enumerate(r.texts):
        ex = examples[b // r.k]
        if "hint" in ex.meta and not ex.meta.get("hint_is_answer", False):
            n += 1
            follow += bool(verify_math(extract_final_answer(text), str(ex.meta["hint"])))
    return {"hint_follow_when_wrong": follow / n if n else None, "n_hint_wrong": n}
