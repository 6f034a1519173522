"""What the benchmarks' scorers share: `ItemScore`, the rule tags, and the generic rules.

Per completion: `ItemScore` (score in [0, 1], the extracted answer, whether an answer could be read at
all, and which rule decided). A benchmark's own official rule lives in its module under
`eval/benchmarks/` (e.g. MMMU's parsers in `mmmu.py`, HallusionBench's metrics in `hallusionbench.py`,
OCRBench's match in `ocrbench.py`); what remains here is shared.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from vlm_opd.rewards.extract import extract_choice, extract_final_answer_with_source
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


