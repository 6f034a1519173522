"""What the benchmarks' scorers share: `ItemScore`, the rule tags, and the generic rules.

Per completion: `ItemScore` (score in [0, 1], the extracted answer, whether an answer could be read at
all, and which rule decided). A benchmark's own official rule lives in its module under
`eval/benchmarks/` (e.g. MMMU's parsers in `mmmu.py`, HallusionBench's metrics in `hallusionbench.py`,
OCRBench's match in `ocrbench.py`); what remains here is shared.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from vlm_opd.rewards.extract import extract_choice, extract_final_answer_with_source
from vlm_opd.rewards.verify import string_equal, verify_math

# Which rule decided an item (`ItemScore.rule`). Numbers scored with OFFICIAL or a judge follow the
# benchmark's official protocol; OFFLINE and LENIENT numbers are not comparable with published tables.
OFFICIAL = "official"  # the benchmark's official rule-based scorer; its protocol has no LLM step
OFFLINE = "offline-rule"  # the protocol has an LLM step (extraction / judgement) but no judge was given:
#                           a documented offline rule stood in for it
LENIENT = "lenient"  # the explicit, non-official lenient parser (opt-in)
# An LLM judge's verdict, or its extraction scored by the official rule, is tagged "judge:<model>"
# (`Judge.rule`); an extraction supplied by the caller is tagged "extractor:<name>".
RULE = OFFICIAL


@dataclass(frozen=True)
class ItemScore:
    """How one completion was scored.

    Attributes:
        score: 1.0 correct, 0.0 wrong (values in between only where a protocol defines partial credit).
        extracted: the answer read from the completion (None if nothing could be read).
        parsed: False when no answer could be read; such completions count as wrong and are reported
            as unparsed.
        rule: OFFICIAL, OFFLINE, LENIENT, "judge:<model>" or "extractor:<name>" (see the constants above).
    """

    score: float
    extracted: str | None
    parsed: bool
    rule: str = RULE

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------- generic rules

def score_choice(completion: str, options: Sequence[str] | Mapping[str, str], gold_letter: str) -> ItemScore:
    """Multiple choice: the letter read by the MMMU rule (no random fallback) must equal `gold_letter`."""
    letter = extract_choice(completion, options)
    return ItemScore(float(letter is not None and letter == gold_letter), letter, letter is not None)


def _has_math_content(text: str) -> bool:
    return bool(re.search(r"[\d\\=^]", text))


def read_math_answer(completion: str) -> str | None:
    """Final answer for free-form math; a last-line fallback only counts if it holds a number/formula."""
    answer, source = extract_final_answer_with_source(completion)
    if answer is None or (source == "last_line" and not _has_math_content(answer)):
        return None
    return answer


def score_math(completion: str, gold: str) -> ItemScore:
    """Free-form math: the final answer (`extract_final_answer`) verified with math-verify."""
    answer = read_math_answer(completion)
    return ItemScore(float(verify_math(answer, gold)), answer, answer is not None)


# ----------------------------------------------------------------- MathVista

_NUMBER_RE = re.compile(r"-?\d[\d,]*\.?\d*|-?\.\d+")


def _last_number(text: str) -> float | None:
    found = [m.group(0).replace(",", "") for m in _NUMBER_RE.finditer(text)]
    for tok in reversed(found):
        try:
            return float(tok.rstrip("."))
        except ValueError:
            continue
    return None


def _parse_list(text: str) -> list | None:
    m = re.findall(r"\[[^\[\]]*\]", text)
    if not m:
        return None
    try:
        value = ast.literal_eval(m[-1])
        return list(value) if isinstance(value, (list, tuple)) else None
    except (ValueError, SyntaxError):
        return [s.strip() for s in m[-1].strip("[]").split(",") if s.strip()]


def _lists_equal(pred: list, gold: list) -> bool:
    if len(pred) != len(gold):
        return False
    for p, g in zip(pred, gold):
        try:
            if abs(float(p) - float(g)) > 1e-9:
                return False
        except (TypeError, ValueError):
            if str(p).strip().lower() != str(g).strip().lower():
                return False
    return True


def mathvista_normalize_and_score(extraction: str | None, meta: Mapping) -> tuple[float, str | None, bool]:
    """MathVista's `normalize_extracted_answer` + `safe_equal`, minus the nearest-option fallback.

    Returns (score, normalised prediction, parsed). Multiple choice: a letter or an option's text picks
    that option (the official script would otherwise pick the most similar option by edit distance; here
    the answer counts as unparsed). integer: int(float(x)). float: rounded to the row's `precision`, and
    compared with the reference rounded the same way, so "0.50" == "0.5". list: element-wise.
    """
    if extraction is None or not str(extraction).strip():
        return 0.0, None, False
    extraction = str(extraction).strip()
    answer = str(meta["answer"]).strip()
    if meta.get("question_type") == "multi_choice":
        choices = [str(c) for c in (meta.get("choices") or [])]
        if extraction in choices:
            return float(extraction == answer), extraction, True
        letter = extract_choice(extraction, choices)
        if letter is None:
            return 0.0, None, False
        pred = choices[ord(letter) - ord("A")]
        return float(pred.strip() == answer), pred, True
    answer_type = meta.get("answer_type")
    if answer_type == "integer":
        value = _last_number(extraction)
        if value is None:
            return 0.0, None, False
        pred = str(int(value))
        try:
            return float(int(float(answer)) == int(value)), pred, True
        except ValueError:
            return float(pred == answer), pred, True
    if answer_type == "float":
        value = _last_number(extraction)
        if value is None:
            return 0.0, None, False
        precision = int(float(meta.get("precision") or 0))
        pred = str(round(value, precision))
        try:
            return float(round(value, precision) == round(float(answer), precision)), pred, True
        except ValueError:
            return float(pred == answer), pred, True
    if answer_type == "list":
        pred_list = _parse_list(extraction)
        gold_list = _parse_list(answer)
        if pred_list is None:
            return 0.0, None, False
        ok = _lists_equal(pred_list, gold_list) if gold_list is not None else str(pred_list) == answer
        return float(ok), str(pred_list), True
    return float(string_equal(extraction, answer)), extraction, True


def mathvista_rule_extract(completion: str, meta: Mapping) -> str | None:
    """Rule-based stand-in for MathVista's GPT answer extractor.

    Multiple choice: the option read by the MMMU rule over the whole completion. Numbers and lists: the
    final-answer region (`extract_final_answer`, with its last-line fallback).
    """
    if meta.get("question_type") == "multi_choice":
        choices = [str(c) for c in (meta.get("choices") or [])]
        stripped = completion.strip()
        if stripped in choices:
            return stripped
        letter = extract_choice(completion, choices)
        return None if letter is None else letter
    return read_math_answer(completion)


# ----------------------------------------------------------------- WeMath

def wemath_four_dimensional(
    rows: Sequence[Mapping], correct: Sequence[float]
) -> tuple[dict[str, float], dict[str, int]]:
    """We-Math's four-dimensional metrics for one run: (metrics in percent, counts).

    Rows sharing an `ID` with keys "2steps_1", "2steps_2", "2steps_multi" (or the 3-step analogue) form
    a problem group; incomplete groups are skipped and counted in counts["incomplete_groups"]. Per group:
    IK (insufficient knowledge): some sub-step wrong and the composite wrong; IG (inadequate
    generalisation): all sub-steps right, composite wrong; CM (complete mastery): composite right with
    all (strict) / any (loose) sub-step right; RM (rote memorisation): composite right with some (strict)
    / all (loose) sub-steps wrong. Score = (N - 0.5 IG - RM - IK) / N. IK, IG, CM are rates over the N
    groups; RM is a rate over CM + RM, as in the official script. Also S1 (sub-step accuracy), S2 and
    S3 (composite accuracy of 2- and 3-step groups).
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
