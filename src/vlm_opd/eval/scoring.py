"""Scoring rules of the official benchmark protocols, as pure functions.

Per completion: `ItemScore` (score in [0, 1], the extracted answer, whether an answer could be read at
all, and which rule decided). Per run (one completion per item): group metrics such as HallusionBench's
fAcc/qAcc. Benchmark-specific rules live in their modules under `eval/benchmarks/`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from vlm_opd.rewards.extract import extract_choice, extract_final_answer, extract_final_answer_with_source
from vlm_opd.rewards.verify import verify_math

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


@dataclass(frozen=True)
class Extraction:
    """An answer read from a completion by the caller's own extractor (e.g. another LLM).

    Benchmarks whose official protocol extracts the answer with an LLM (MathVista, MathVerse, LogicVista)
    accept one in `Benchmark.score(..., extraction=...)` in place of that step; the official rule then
    scores `text`, and the item is tagged "extractor:<name>".

    Attributes:
        text: the extracted answer, exactly as the extractor returned it.
        name: a short name of the extractor (model or tool), recorded in the rule tag.
    """

    text: str
    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise TypeError(f"Extraction.text must be a string, got {type(self.text).__name__}")
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("Extraction.name must name the extractor (it is recorded as 'extractor:<name>')")

    @property
    def rule(self) -> str:
        return f"extractor:{self.name}"


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


# ----------------------------------------------------------------- yes / no (HallusionBench)

def extract_yes_no(text: str) -> str | None:
    """"yes", "no", or None when the completion does not commit to exactly one of them.

    Tried in order: the final-answer region (boxed / "the answer is" / "Answer:"), the first word of
    the completion ("Yes, ..."), the last line, then the whole completion; each but the first word
    must contain exactly one of the words "yes" / "no" (the VLMEvalKit yes/no rule).
    """
    if not text or not text.strip():
        return None

    def unique(s: str) -> str | None:
        words = set(re.findall(r"[a-z]+", s.lower()))
        has_yes, has_no = "yes" in words, "no" in words
        return "yes" if has_yes and not has_no else "no" if has_no and not has_yes else None

    region = extract_final_answer(text, fallback=False)
    if region:
        found = unique(region)
        if found:
            return found
    first = re.match(r"\W*([A-Za-z]+)", text)
    if first and first.group(1).lower() in ("yes", "no"):
        return first.group(1).lower()
    last_line = text.strip().splitlines()[-1]
    return unique(last_line) or unique(text)


def hallusion_metrics(rows: Sequence[Mapping], correct: Sequence[float]) -> dict[str, float]:
    """HallusionBench aAcc / fAcc / qAcc in percent, for one run.

    aAcc: all questions. fAcc: per figure (category, subcategory, set_id, figure_id) all questions
    right; VS questions without a figure (figure_id 0) are left out as in the official script.
    qAcc: per question (category, subcategory, set_id, question_id) right on every figure.
    """
    if not rows:
        return {}
    a_acc = 100.0 * sum(correct) / len(rows)
    figures: dict[tuple, list[float]] = defaultdict(list)
    questions: dict[tuple, list[float]] = defaultdict(list)
    for row, c in zip(rows, correct):
        cat, sub, set_id, fig, q = (str(row.get(k)) for k in ("category", "subcategory", "set_id", "figure_id", "question_id"))
        if not (cat == "VS" and fig == "0"):
            figures[(cat, sub, set_id, fig)].append(c)
        questions[(cat, sub, set_id, q)].append(c)
    out = {"aAcc": a_acc}
    if figures:
        out["fAcc"] = 100.0 * sum(all(v >= 1.0 for v in vals) for vals in figures.values()) / len(figures)
    if questions:
        out["qAcc"] = 100.0 * sum(all(v >= 1.0 for v in vals) for vals in questions.values()) / len(questions)
    return out


# ----------------------------------------------------------------- OCRBench

def strip_think(text: str) -> str:
    """Drop `<think>...</think>` blocks: the reasoning is not the prediction."""
    return re.sub(r"<think>.*?</think>", " ", text or "", flags=re.DOTALL)


def ocrbench_match(prediction: str, answers: Sequence[str] | str, dataset_name: str) -> bool:
    """OCRBench's rule: some reference answer is a substring of the prediction.

    Case-insensitive with newlines turned into spaces; for HME100k (formula recognition) case is
    kept and all spaces are removed from both sides instead.
    """
    answers = [answers] if isinstance(answers, str) else list(answers)
    prediction = strip_think(prediction)
    for answer in answers:
        answer = str(answer)
        if dataset_name == "HME100k":
            a = answer.strip().replace("\n", " ").replace(" ", "")
            p = prediction.strip().replace("\n", " ").replace(" ", "")
        else:
            a = answer.lower().strip().replace("\n", " ")
            p = prediction.lower().strip().replace("\n", " ")
        if a and a in p:
            return True
    return False


# ----------------------------------------------------------------- MMMU open questions

def _mmmu_numbers(text: str) -> list[str]:
    with_commas = re.findall(r"-?\b\d{1,3}(?:,\d{3})+\b", text)
    scientific = re.findall(r"-?\d+(?:\.\d+)?[eE][+-]?\d+", text)
    simple = re.findall(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])", text)
    return with_commas + scientific + simple


def _mmmu_normalize(s: str) -> list:
    s = s.strip()
    try:
        return [round(float(s.replace(",", "")), 2)]
    except ValueError:
        s = s.lower()
        return [" " + s, s + " "] if len(s) == 1 else [s]


def mmmu_open_predictions(response: str) -> list:
    """MMMU's `parse_open_response`: candidate strings after key phrases, plus every number in them."""
    response = response.strip().strip(".").lower()
    sub_responses = re.split(r"\.\s(?=[A-Z])|\n", response)
    indicators = ["could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result "]
    keys: list[str] = []
    for i, resp in enumerate(sub_responses):
        inds = indicators + (["="] if i == len(sub_responses) - 1 else [])
        shortest = None
        for ind in inds:
            if ind in resp:
                tail = resp.split(ind)[-1].strip()
                if shortest is None or len(tail) < len(shortest):
                    shortest = tail
        if shortest and shortest.strip() not in [":", ",", ".", "!", "?", ";", "'"]:
            keys.append(shortest)
    if not keys:
        keys = [response]
    preds: list = []
    for resp in list(keys):
        preds.extend(_mmmu_normalize(resp))
        for num in _mmmu_numbers(resp):
            preds.extend(_mmmu_normalize(num))
    return list(dict.fromkeys(preds))


def mmmu_open_correct(predictions: list, gold: str | Sequence[str]) -> bool:
    """MMMU's `eval_open`: a number must equal a reference number; a string must contain a reference string."""
    golds = [gold] if isinstance(gold, str) else list(gold)
    norm: list = []
    for g in golds:
        norm.extend(_mmmu_normalize(str(g)))
    for pred in predictions:
        if isinstance(pred, str):
            if any(isinstance(n, str) and n in pred for n in norm):
                return True
        elif pred in norm:
            return True
    return False
