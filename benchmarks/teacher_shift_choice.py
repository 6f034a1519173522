"""Which divergence should `va_opd.va_kind: teacher_shift` use? Scores of each candidate on misread
digits, correctly read digits and everything else, under a trained teacher.

Completions are written, not sampled, so that every kind of token is present in known numbers: for
each held-out image of the demo task, the reference chain ("The bars show 7 and 4. 7 + 4 = 11. ...")
and the chain of a student who misread the first value ("The bars show 3 and 4. 3 + 4 = 7. ..."),
i.e. a wrong digit followed by arithmetic consistent with it ("after_misread": the tokens after the
wrong digit that are not read off the image). The teacher scores both under the real and the pixelated
image; for each token kind we report the mean of the paper's sampled-token VA and of each teacher_shift
candidate, the share of the total mass on the digits read off the image, how often a misread digit makes
the paper's top-20% group (p_v = 0.2, per rollout), the share of non-digit tokens with VA > 0, and what
the `high_group: positive` group holds with and without `va_floor: 0.01`.

Needs a trained demo teacher (`--teacher DIR`: a `vlm-opd demo` run's models/teacher, the cache's
demo-teacher-*/model, or `vlm-opd train configs/demo/teacher_sft.yaml`'s final/). CPU, ~20 s.
The last line printed is one JSON object.

    .venv/bin/python benchmarks/teacher_shift_choice.py --teacher demo-report/models/teacher
"""

from __future__ import annotations

import argparse
import json
import os
import random

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from vlm_opd import algorithms as A  # noqa: E402
from vlm_opd.algorithms.visual_advantage import _high_va_group  # noqa: E402
from vlm_opd.data.degrade import get_degradation  # noqa: E402
from vlm_opd.data.synthetic import generate, reference_solution  # noqa: E402
from vlm_opd.demo.analysis import reading_positions  # noqa: E402
from vlm_opd.demo.recipe import FULL  # noqa: E402
from vlm_opd.models import load_model  # noqa: E402
from vlm_opd.rollout import rollout_from_texts  # noqa: E402
from vlm_opd.scoring import teacher_signals  # noqa: E402

KINDS = ("right_digit", "wrong_digit", "other", "after_misread")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--n", type=int, default=64, help="held-out images (two completions each)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    teacher = load_model(args.teacher)
    teacher.model.eval()
    examples = generate(args.n, 12345, split="eval", **FULL.task)
    rng = random.Random(0)
    texts, exs, truth = [], [], []
    for ex in examples:
        vals = ex.meta["values"]
        wrong = rng.choice([d for d in range(1, 10) if d != vals[0]])
        for stated in (vals, [wrong] + vals[1:]):
            texts.append(reference_solution(ex.meta["task"], stated)[0])
            exs.append(ex)
            truth.append(vals)
    rollout = rollout_from_texts(teacher, exs, texts)
    with torch.no_grad():
        sig = teacher_signals(teacher, rollout, degrade=get_degradation("pixelate", ratio=0.1), need_hidden=True,
                              batch_real_and_degraded=False, need_hidden_degraded=True)
    mask = rollout.completion_mask.float()
    scores = {"sampled": A.visual_advantage(sig.logprobs_real, sig.logprobs_degraded, mask)}
    for div in A.SHIFT_DIVERGENCES:
        scores[div] = A.teacher_shift_va(sig.hidden_real, sig.hidden_degraded, sig.lm_head_weight, mask, divergence=div)
    kinds = torch.full(mask.shape, 2, dtype=torch.long)
    for b in range(mask.shape[0]):
        n = int(mask[b].sum())
        toks = [teacher.tokenizer.decode([i]) for i in rollout.completion_ids[b, :n].tolist()]
        for j, pos in enumerate(reading_positions(toks)):
            kinds[b, pos] = 0 if int(toks[pos].strip()) == truth[b][j] else 1
        wrong_at = (kinds[b, :n] == 1).nonzero()
        if len(wrong_at):  # tokens after a misread that are not read off the image (its arithmetic, the answer)
            after = torch.arange(mask.shape[1]) > int(wrong_at[0])
            kinds[b] = torch.where(after & (kinds[b] == 2), torch.full_like(kinds[b], 3), kinds[b])
    valid = mask.bool()
    out = {"n_rollouts": int(mask.shape[0]), "n_tokens": int(valid.sum()),
           "n_tokens_by_kind": {k: int(((kinds == i) & valid).sum()) for i, k in enumerate(KINDS)}}
    for name, va in scores.items():
        va = va.double()
        total = float(va[valid].sum())
        row = {f"mean_{k}": float(va[(kinds == i) & valid].mean()) for i, k in enumerate(KINDS)}
        other = va[(kinds >= 2) & valid]
        row["p99_other"] = float(other.quantile(0.99))
        row["frac_other_positive"] = float((other > 0).double().mean())
        row["frac_other_above_0.01"] = float((other > 0.01).double().mean())
        # What the high group (p_v = 0.2) holds under high_group=positive: non-digit tokens among its members.
        pos_high = _high_va_group(va, valid, 0.2, "positive")
        row["positive_group_other_share"] = float((pos_high & (kinds >= 2)).sum()) / max(int(pos_high.sum()), 1)
        floored = A.floor_va(va, 0.01)
        pos_high = _high_va_group(floored, valid, 0.2, "positive")
        row["positive_group_other_share_floor_0.01"] = float((pos_high & (kinds >= 2)).sum()) / max(int(pos_high.sum()), 1)
        row["positive_group_digit_recall_floor_0.01"] = float((pos_high & (kinds < 2)).sum()) / max(int(((kinds < 2) & valid).sum()), 1)
        row["max_other"] = float(other.max())
        row["reading_mass_share"] = float(va[(kinds < 2) & valid].sum()) / total if total > 0 else 0.0
        row["wrong_over_right"] = row["mean_wrong_digit"] / max(row["mean_right_digit"], 1e-12)
        row["wrong_over_p99_other"] = row["mean_wrong_digit"] / max(row["p99_other"], 1e-12)
        high = _high_va_group(va, valid, 0.2)
        wrong = (kinds == 1) & valid
        row["wrong_digits_in_top20"] = float((high & wrong).sum()) / max(int(wrong.sum()), 1)
        out[name] = row
    for name in scores:
        r = out[name]
        print(f"{name:18s} right {r['mean_right_digit']:8.3f}  wrong {r['mean_wrong_digit']:8.3f}  other "
              f"{r['mean_other']:7.4f} after-misread {r['mean_after_misread']:7.4f} (all other: p99 {r['p99_other']:.4f}, max {r['max_other']:.3f})  reading share "
              f"{r['reading_mass_share']:.3f}  wrong in top-20% {r['wrong_digits_in_top20']:.2f}  other>0 "
              f"{r['frac_other_positive']:.2f} (>0.01: {r['frac_other_above_0.01']:.3f})  positive group non-digit "
              f"{r['positive_group_other_share']:.2f} (floor 0.01: {r['positive_group_other_share_floor_0.01']:.3f}, "
              f"digits in it {r['positive_group_digit_recall_floor_0.01']:.2f})")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
