"""What every benchmark shares: the `Benchmark` base class, row and option helpers.

Each benchmark is a small class. `load()` reads the official schema from a local copy (a directory, or a
.parquet/.jsonl/.json file) or from the hub name users would pass, and turns every row into an
`Example` whose `problem` is the prompt of the benchmark's protocol (with `<image>` markers where the
release places images). `score()` applies the official scoring rule to one completion, and
`run_metrics()` aggregates one run (one completion per item) into the protocol's metrics, in percent.

Spec strings name a benchmark and optionally its source: "mathvista" (hub), "mathvista:/data/MathVista"
(local copy), "local:/data/my_eval.jsonl" (training schema: problem / images / answer).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from vlm_opd.data.example import Example
from vlm_opd.errors import ConfigError, DataError
from vlm_opd.eval.io import load_image, read_hub, read_rows
from vlm_opd.eval.judge import (
    Judge,
)
from vlm_opd.eval.scoring import (
    Extraction,
    LENIENT,
    ItemScore,
    score_choice,
)
from vlm_opd.rewards.extract import extract_choice, option_letters
from vlm_opd.rewards.rewards import gold_choice_letter

MC_DIRECT = "Answer with the option's letter from the given choices directly."

GROUPS = ("Math", "Visual", "VOLD", "Local")


def blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (
        isinstance(value, (list, tuple, dict)) and len(value) == 0
    )


def parse_list_field(value: Any, where: str, field: str) -> list:
    """A list stored as a list, a JSON string, or a Python repr string (MMMU's `options`)."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        for parse in (json.loads, ast.literal_eval):
            try:
                parsed = parse(text)
            except (ValueError, SyntaxError):
                continue
            if isinstance(parsed, (list, tuple)):
                return list(parsed)
    raise DataError(f"{where}: field {field!r} must be a list (or its string form), got {value!r:.80}")


class Benchmark:
    """Base class: reading rows, building `Example`s, scoring and aggregating.

    Args:
        source: local path of the release (directory or file); None loads `hub_path` with `datasets`.
        prompt_suffix: text appended on a new line to every prompt (e.g. an answer-format request).
    """

    name: ClassVar[str]
    title: ClassVar[str]
    group: ClassVar[str]
    hub_path: ClassVar[str | None] = None
    hub_config: ClassVar[str | None] = None
    hub_split: ClassVar[str] = "test"
    uses_judge: ClassVar[bool] = False  # official protocol reads answers with an LLM
    image_dirs: ClassVar[tuple[str, ...]] = ("images",)
    # Opt-in lenient multiple-choice parsing (`vlm-opd eval --lenient`, `evaluate(lenient=True)`): the
    # runner sets it on the instance. Its numbers are tagged LENIENT and reported as not comparable.
    lenient: bool = False

    def __init__(self, source: str | Path | None = None, prompt_suffix: str | None = None):
        self.source = None if source in (None, "") else Path(source)
        self.prompt_suffix = prompt_suffix

    # -- identity

    @property
    def spec(self) -> str:
        return self.name if self.source is None else f"{self.name}:{self.source}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"

    # -- loading

    def read(self) -> tuple[list[dict], Path | None]:
        """Raw rows of the release and the directory relative image paths start from."""
        if self.source is not None:
            return read_rows(self.source, self.title, split=self.hub_split)
        if self.hub_path is None:
            raise DataError(f"{self.title}: there is no hub release to load; pass a local copy as '{self.name}:/path'")
        return read_hub(self.hub_path, self.hub_config, self.hub_split, self.title, self.name), None

    def load(self, limit: int | None = None) -> list[Example]:
        """The benchmark as `Example`s (first `limit` rows if given); ids are unique."""
        rows, base = self.read()
        if not rows:
            raise DataError(f"{self.title}: the release at {self.source or self.hub_path} has no rows")
        if limit is not None:
            if limit < 1:
                raise ConfigError(f"limit must be >= 1, got {limit}")
            rows = rows[:limit]
        examples = []
        seen: dict[str, int] = {}
        for index, row in enumerate(rows):
            ex = self.to_example(row, index, base)
            ex.meta.setdefault("benchmark", self.name)
            if self.prompt_suffix:
                ex.problem = f"{ex.problem}\n{self.prompt_suffix}"
            if ex.id in seen:
                raise DataError(f"{self.title}: rows {seen[ex.id]} and {index} share the id {ex.id!r}")
            seen[ex.id] = index
            examples.append(ex)
        return examples

    def where(self, index: int, row: Mapping | None = None, id_field: str | None = None) -> str:
        """'<Title> row <i> (<id field> <value>)' for error messages."""
        if row is not None and id_field and row.get(id_field) is not None:
            return f"{self.title} row {index} ({id_field} {row.get(id_field)!r})"
        return f"{self.title} row {index}"

    def require(self, row: Mapping, field: str, where: str) -> Any:
        value = row.get(field)
        if blank(value):
            raise DataError(f"{where}: missing required field {field!r} (fields present: {', '.join(sorted(row))})")
        return value

    def image(self, row: Mapping, fields: Sequence[str], base: Path | None, where: str):
        """The first non-empty image field of `fields`, decoded; DataError if there is none."""
        for field in fields:
            if not blank(row.get(field)):
                return load_image(row[field], base, f"{where} field {field!r}", self.image_dirs)
        raise DataError(f"{where}: no image (expected one of the fields {', '.join(map(repr, fields))})")

    def to_example(self, row: dict, index: int, base: Path | None) -> Example:  # pragma: no cover
        raise NotImplementedError

    # -- scoring

    def score(self, completion: str, example: Example, judge: Judge | None = None,
              extraction: Extraction | None = None) -> ItemScore:  # pragma: no cover
        """Score one completion with the benchmark's official rule.

        Args:
            judge: the LLM for protocols with an LLM step (`uses_judge`); others ignore it.
            extraction: an answer read by the caller's own extractor, for benchmarks whose protocol
                extracts with an LLM (MathVista, MathVerse, LogicVista); it replaces that step and the
                item is tagged "extractor:<name>". Benchmarks without such a step raise ConfigError.
        """
        raise NotImplementedError

    def _no_extraction(self, extraction: Extraction | None) -> None:
        if extraction is not None:
            raise ConfigError(
                f"{self.title}: its official protocol has no answer-extraction step; an outside extraction "
                f"({extraction.rule}) cannot be used"
            )
    def score_item(self, completion: str, example: Example, judge: Judge | None = None,
                   extraction: Extraction | None = None) -> ItemScore:
        """What the runner calls: the official `score()`, or, when `self.lenient` is set and the item is
        multiple choice (`choice_options`), the lenient parser (`score_lenient_choice`, tagged LENIENT).
        Items that are not multiple choice are always scored by `score()`."""
        if self.lenient:
            options = self.choice_options(example)
            if options:
                return score_lenient_choice(completion, options, example.answer)
        return self.score(completion, example, judge, extraction=extraction)

    def choice_options(self, example: Example) -> Sequence[str] | Mapping[str, str] | None:
        """The options of a multiple-choice item (a list lettered A, B, ... or a letter -> text mapping),
        None for other items. Default: `example.meta["options"]`, where every loader here keeps them."""
        return example.meta.get("options") or None

    def run_metrics(
        self, examples: Sequence[Example], scores: Sequence[ItemScore]
    ) -> tuple[dict[str, float], dict[str, int]]:
        """Metrics of one run in percent, and counts. Default: plain accuracy."""
        if not examples:
            return {}, {}
        return {"accuracy": 100.0 * sum(s.score for s in scores) / len(scores)}, {}

    def headline(self, metrics: Mapping[str, float]) -> str:
        """Name of the metric shown in the summary table."""
        return "accuracy"

    # -- reference answers (tests and smoke runs)

    def reference_completion(self, example: Example) -> str:
        """A completion this benchmark's rule scorer marks correct."""
        return f"Let me think step by step.\nThe answer is \\boxed{{{example.answer}}}."

    def wrong_completion(self, example: Example) -> str:
        """A completion this benchmark's rule scorer marks wrong."""
        return "Let me think step by step.\nThe answer is \\boxed{-987654321}."


# ================================================================= multiple-choice helpers

def score_lenient_choice(completion: str, options: Sequence[str] | Mapping[str, str], gold: str) -> ItemScore:
    """The explicit, NON-official lenient multiple-choice parser, tagged LENIENT.

    `rewards.extract.extract_choice`: the MMMU rule without its random fallback, plus leniency no
    official scorer has (lowercase letters, markdown / LaTeX wrappers stripped, "X)" labels, an option's
    exact text at any length, the "answer is" / boxed region first). `gold` is the reference letter or
    the reference option's text. Numbers scored this way are NOT comparable with the papers.
    """
    letter = extract_choice(completion, options)
    gold_letter_ = gold_choice_letter(str(gold), options) or str(gold).strip().upper()
    return ItemScore(float(letter is not None and letter == gold_letter_), letter, letter is not None, LENIENT)


class ChoiceBenchmark(Benchmark):
    """Benchmarks scored by reading an option letter (MMMU rule, no random fallback)."""

    def score(self, completion: str, example: Example, judge: Judge | None = None,
              extraction: Extraction | None = None) -> ItemScore:
        self._no_extraction(extraction)
        return score_choice(completion, example.meta["options"], example.answer)

    def reference_completion(self, example: Example) -> str:
        return f"Comparing the options with the image.\nAnswer: {example.answer}"

    def wrong_completion(self, example: Example) -> str:
        wrong = next(l for l in letters_of(example.meta["options"]) if l != example.answer)
        return f"Comparing the options with the image.\nAnswer: {wrong}"


def letters_block(options: Sequence[str], style: str) -> str:
    fmt = {"paren": "({l}) {o}", "dot": "{l}. {o}"}[style]
    return "\n".join(fmt.format(l=l, o=o) for l, o in zip(option_letters(len(options)), options))


def letters_of(options: Sequence[str] | Mapping[str, str]) -> list[str]:
    """Option letters of a list (A, B, ...) or of a letter -> text mapping."""
    return list(options) if isinstance(options, Mapping) else option_letters(len(options))


def gold_letter(answer: Any, options: Sequence[str] | Mapping[str, str], where: str) -> str:
    letter = gold_choice_letter(str(answer), options)
    if letter is None:
        raise DataError(
            f"{where}: answer {answer!r} is neither an option letter ({', '.join(letters_of(options))}) "
            "nor the text of an option"
        )
    return letter


_INLINE_OPTION = re.compile(r"(?:^|[\s,;(])([A-H])\s*[:.：．)]\s*")


def parse_inline_options(text: str, letters: str = "ABCDEFGH") -> dict[str, str]:
    """Options written inside a question ("Choices:\\nA:2\\nB:3", "Options: A: x, B: y", "A. 3cm; B. 4cm").

    Returns letter -> text for a consecutive run of letters starting at A, or {} if none is found.
    """
    for marker in ("Choices:", "Options:", "Option:"):
        pos = text.rfind(marker)
        if pos != -1:
            text = text[pos + len(marker):]
            break
    hits = [(m.group(1), m.start(1), m.end()) for m in _INLINE_OPTION.finditer(text) if m.group(1) in letters]
    # Keep the run A, B, C, ... in order; stray capitals elsewhere break nothing.
    run: list[tuple[str, int, int]] = []
    for letter, start, end in hits:
        if letter == chr(ord("A") + len(run)):
            run.append((letter, start, end))
    options = {}
    for i, (letter, _, end) in enumerate(run):
        stop = run[i + 1][1] if i + 1 < len(run) else len(text)
        options[letter] = text[end:stop].strip().rstrip(",;").strip()
    return options if len(options) >= 2 else {}
