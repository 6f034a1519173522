"""We-Math: loader, the official prompt, answer reading and the four-dimensional score.

Sources (We-Math/We-Math):
- answer reading: `evaluation/four_dimensional_metrics.py` @ 89a15bd19e47a75221eda6b389be2eed77530854,
  `load_and_process_data` (the same lines in `evaluation/accuracy.py` @ 681e04046050d7bcdaf40fcdd37f86df8041e68c):
  take the text after the last "Answer" (case-sensitive; the whole response if there is none), strip,
  delete every ">", "<", ":" and ".", strip again, and keep the first character if it is one of
  "ABCDEFGH" (else nothing). So "Answer:\\nC" and "<Answer>: <<B>>" read C and B; "The answer is B.",
  "(b)", "**B**" and a lower-case "b" read nothing (wrong); "B, because ..." reads B.
- four-dimensional metrics: `calculate_metrics` / `compute_final_scores` / `update_main_results_df` of
  the same file; S1/S2/S3 from `update_main_results_df` of accuracy.py.
- prompt: the We-Math evaluation template as used by lmms-eval's We-Math task
  (XiaomiMiMo/lmms-eval `lmms_eval/tasks/wemath/utils.py` @ 8c0aee11461bc4088fa8c96cac9491a93bf6b86f,
  `wemath_doc_to_text`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence

from vlm_opd.data.example import Example
from vlm_opd.errors import DataError
from vlm_opd.eval.benchmarks.base import (
    ChoiceBenchmark,
    gold_letter,
    letters_of,
    parse_inline_options,
)
from vlm_opd.eval.judge import Judge
from vlm_opd.eval.scoring import OFFICIAL, Extraction, ItemScore

SOURCE = "We-Math/We-Math evaluation/four_dimensional_metrics.py @ 89a15bd19e47a75221eda6b389be2eed77530854"

PROMPT = (
    "Now, we require you to solve a multiple-choice math question. Please briefly describe your thought process "
    "and provide the final answer(option).\n"
    "Question: {question}\n"
    "Option: {option}\n"
    "Regarding the format, please answer following the template below, and be sure to include two <> symbols:\n"
    "<Thought process>: <<your thought process>> <Answer>: <<your option>>"
)

# Number of multi-step problems in testmini: the official script divides by this constant.
OFFICIAL_GROUPS = 525


def read_answer(response: str) -> str | None:
    """The option letter We-Math's `load_and_process_data` reads from a response, or None."""
    text = response.split("Answer")[-1].strip()
    text = re.sub(r"[><:.]", "", text).strip()
    return text[0] if text and text[0] in "ABCDEFGH" else None


def wemath_four_dimensional(
    rows: Sequence[Mapping], correct: Sequence[float]
) -> tuple[dict[str, float], dict[str, int]]:
    """We-Math's four-dimensional metrics for one run: (metrics in percent, counts).

    Rows sharing an `ID` with keys "2steps_1", "2steps_2", "2steps_multi" (or the 3-step analogue) form
    a problem group. Per group: IK (insufficient knowledge): some sub-step wrong and the composite
    wrong; IG (inadequate generalisation): all sub-steps right, composite wrong; CM (complete mastery):
    composite right with all (strict) / any (loose) sub-step right; RM (rote memorisation): composite
    right with some (strict) / all (loose) sub-steps wrong. Score = (N - 0.5 IG - RM - IK) / N; IK, IG,
    CM are rates over N; RM is a rate over CM + RM; S1 is the sub-step accuracy, S2 / S3 the composite
    accuracy of 2- / 3-step groups (`calculate_metrics`, `compute_final_scores`,
    `update_main_results_df`).

    N: the official script divides by the constant 525 (the testmini group count); here N is the
    number of complete groups, which is 525 on the full testmini. Groups missing a row are skipped and
    counted in counts["incomplete_groups"] (the official left-merge would count their missing answers
    as wrong; that only arises on a partial run).
    """
    by_group: dict[tuple[int, str], dict[str, float]] = defaultdict(dict)
    for row, c in zip(rows, correct):
        key = str(row.get("key") or "")
        m = re.fullmatch(r"([23])steps_(\d+|multi)", key)
        if m:
            by_group[(int(m.group(1)), str(row.get("ID")))][m.group(2)] = c
    counts = dict.fromkeys(["IK", "IG", "CM_strict", "CM_loose", "RM_strict", "RM_loose"], 0)
    n = incomplete = 0
    steps_right: list[float] = []
    composite: dict[int, list[float]] = {2: [], 3: []}
    for (steps, _), parts in by_group.items():
        needed = [str(i) for i in range(1, steps + 1)] + ["multi"]
        if any(p not in parts for p in needed):
            incomplete += 1
            continue
        n += 1
        sub = [parts[str(i)] >= 1.0 for i in range(1, steps + 1)]
        multi = parts["multi"] >= 1.0
        steps_right.extend(float(s) for s in sub)
        composite[steps].append(float(multi))
        if multi:
            counts["CM_strict" if all(sub) else "RM_strict"] += 1
            counts["CM_loose" if any(sub) else "RM_loose"] += 1
        else:
            counts["IG" if all(sub) else "IK"] += 1
    group_counts = {"groups": n, "incomplete_groups": incomplete}
    if n == 0:
        return {}, group_counts
    out = {
        "score_strict": 100.0 * (n - 0.5 * counts["IG"] - counts["RM_strict"] - counts["IK"]) / n,
        "score_loose": 100.0 * (n - 0.5 * counts["IG"] - counts["RM_loose"] - counts["IK"]) / n,
        "IK": 100.0 * counts["IK"] / n,
        "IG": 100.0 * counts["IG"] / n,
        "CM_strict": 100.0 * counts["CM_strict"] / n,
        "CM_loose": 100.0 * counts["CM_loose"] / n,
        "RM_strict": 100.0 * counts["RM_strict"] / max(1, counts["CM_strict"] + counts["RM_strict"]),
        "RM_loose": 100.0 * counts["RM_loose"] / max(1, counts["CM_loose"] + counts["RM_loose"]),
        "S1": 100.0 * sum(steps_right) / len(steps_right),
    }
    for steps in (2, 3):
        if composite[steps]:
            out[f"S{steps}"] = 100.0 * sum(composite[steps]) / len(composite[steps])
    return out, group_counts


class WeMath(ChoiceBenchmark):
    """We-Math (testmini): multiple choice; accuracy and the official four-dimensional score.

    Schema: ID, split, knowledge concept, question, option ("A. ...; B. ..."), answer (letter),
    image_path (image or relative path), key ("2steps_1", "2steps_multi", ...), question number.
    The four-dimensional metrics group the 2- and 3-step problems by ID (`wemath_four_dimensional`);
    the headline is the strict score when groups exist. Rule and sources: see the module docstring.
    """

    name = "wemath"
    title = "WeMath"
    group = "Math"
    hub_path = "We-Math/We-Math"
    hub_split = "testmini"

    def to_example(self, row, index, base):
        w = self.where(index, row, "ID")
        question = str(self.require(row, "question", w))
        option_text = str(self.require(row, "option", w))
        options = parse_inline_options(option_text)
        if not options:
            raise DataError(
                f"{w}: cannot read options from field 'option' ({option_text!r:.80}); expected 'A. ...; B. ...'"
            )
        answer = gold_letter(self.require(row, "answer", w), options, w)
        key = str(row.get("key") or "")
        prompt = PROMPT.format(question=question, option=option_text)
        image = self.image(row, ("image_path", "image", "decoded_image"), base, w)
        row_id = f"{self.require(row, 'ID', w)}@{key}" if key else str(self.require(row, "ID", w))
        return Example(
            problem=prompt, images=[image], answer=answer, id=row_id,
            meta={"options": options, "ID": str(row.get("ID")), "key": key,
                  "knowledge_concept": row.get("knowledge concept")},
        )

    def score(self, completion: str, example: Example, judge: Judge | None = None,
              extraction: Extraction | None = None) -> ItemScore:
        self._no_extraction(extraction)
        letter = read_answer(completion)
        return ItemScore(float(letter is not None and letter == example.answer), letter, letter is not None, OFFICIAL)

    def reference_completion(self, example):
        return f"<Thought process>: Comparing the options with the image. <Answer>: <<{example.answer}>>"

    def wrong_completion(self, example):
        wrong = next(l for l in letters_of(example.meta["options"]) if l != example.answer)
        return f"<Thought process>: Comparing the options with the image. <Answer>: <<{wrong}>>"

    def run_metrics(self, examples, scores):
        metrics, counts = super().run_metrics(examples, scores)
        four, group_counts = wemath_four_dimensional([e.meta for e in examples], [s.score for s in scores])
        metrics.update(four)
        counts.update(group_counts)
        return metrics, counts

    def headline(self, metrics):
        return "score_strict" if "score_strict" in metrics else "accuracy"
