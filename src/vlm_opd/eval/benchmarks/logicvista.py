"""LogicVista: loader, prompt, and the official extraction + exact set match.

Source: Yijia-Xiao/LogicVista `eval/extract_accuracy.py` @ c8019a83c234d533223dfc5963c6c856ed554278.
- entry: the response after "ASSISTANT:" if present (the text between the first and second one),
  else the whole response.
- a stripped entry of one character that is a letter outside a-e, or neither a letter nor a digit,
  is the non-answer "ZZZZZ" without asking GPT; an empty entry stays [""] (wrong); anything else goes
  to GPT-4 with the prompt below (temperature 0.2 there, 0 here), whose reply must be a JSON object
  {"choices": [str, ...]} (langchain's PydanticOutputParser); a reply that cannot be read becomes
  "ZZZZZ" (the official script first asks other LLMs to repair it; not reproduced).
- verdict: the extracted list and the release's answer split on ", " are lower-cased, sorted and must
  be equal ("A, C" == ["c", "a"]; ["A"] != "A, C"; "b" == "B").

Without a judge, `offline_extract` (documented, not official) stands in for GPT. Prompt: the repository
publishes no generation prompt; the release's question (which carries its options and answer format)
is sent unchanged.
"""

from __future__ import annotations

import json
import re

from vlm_opd.data.example import Example
from vlm_opd.errors import DataError
from vlm_opd.eval.benchmarks.base import Benchmark
from vlm_opd.eval.judge import Judge
from vlm_opd.eval.scoring import OFFLINE, Extraction, ItemScore
from vlm_opd.rewards.extract import extract_final_answer

SOURCE = "Yijia-Xiao/LogicVista eval/extract_accuracy.py @ c8019a83c234d533223dfc5963c6c856ed554278"

NON_ANSWER = "ZZZZZ"

# langchain PydanticOutputParser(Answer).get_format_instructions() for the official `Answer` model.
FORMAT_INSTRUCTIONS = (
    "The output should be formatted as a JSON instance that conforms to the JSON schema below.\n\n"
    'As an example, for the schema {"properties": {"foo": {"title": "Foo", "description": "a list of strings", '
    '"type": "array", "items": {"type": "string"}}}, "required": ["foo"]}\n'
    'the object {"foo": ["bar", "baz"]} is a well-formatted instance of the schema. '
    'The object {"properties": {"foo": ["bar", "baz"]}} is not well-formatted.\n\n'
    "Here is the output schema:\n```\n"
    '{"properties": {"choices": {"description": "multiple choice answer of a list of letters or numbers chosen by '
    'the given text", "items": {"type": "string"}, "title": "Choices", "type": "array"}}, "required": ["choices"]}'
    "\n```"
)

# The official template, indentation included.
EXTRACT_TEMPLATE = (
    "\n            You are a information extractor that extracts multiple choice letter answer choices\n"
    "                from a paragraph that contains the answer choice and sometimes and explaination of why that "
    'choice is correct to the following question: "{question}"\n\n'
    "                What letter did the following answer choose? If the answer did not select a letter answer "
    "choice, first try to infer the answer based off the given choices.\n"
    "                If it does not seem like the given answer corresponds to an answer choice OR if there is no "
    "selected answer, please just respond with the string ZZZZZ.\n"
    "                Make sure you answer with ONLY the letters chosen.\nHere is what I need you to extract "
    'from:\nThe answer is "{entry}"\n{format_instructions}\n'
    "            Helpful Answer:\n            "
)


def extraction_prompt(question: str, entry: str) -> str:
    return EXTRACT_TEMPLATE.format(question=question, entry=entry, format_instructions=FORMAT_INSTRUCTIONS)


def entry_of(response: str) -> str:
    """The part of the response the official script reads."""
    return response.split("ASSISTANT:")[1] if "ASSISTANT:" in response else response


def needs_llm(entry: str) -> list[str] | None:
    """The official pre-GPT rules: the answer list they fix, or None when GPT is asked."""
    s = entry.strip()
    if not s:
        return [s]
    if len(s) == 1 and ((s.isalpha() and s.lower() not in "abcde") or (not s.isalpha() and not s.isnumeric())):
        return [NON_ANSWER]
    return None


def parse_choices(reply: str) -> list[str] | None:
    """`{"choices": [...]}` from a reply (optionally in a ```json fence), as PydanticOutputParser reads it."""
    match = re.search(r"\{.*\}", reply.strip(), flags=re.DOTALL)
    if not match:
        return None
    try:
        obj = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    choices = obj.get("choices") if isinstance(obj, dict) else None
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        return None
    return choices


def matches(predicted: list[str], answer: str) -> bool:
    """The official comparison: lower-cased, sorted lists equal; the answer is split on ", "."""
    return sorted(p.lower() for p in predicted) == sorted(a.lower() for a in answer.split(", "))


_TOKEN = re.compile(r"(?<![A-Za-z])([A-H]|I(?!\s*['a-z]))(?![A-Za-z])")


def offline_extract(entry: str) -> list[str]:
    """Documented rule standing in for GPT (not official): the option letters (A-I; "I" followed by a
    lower-case word is the pronoun) or else the numbers in the final-answer region ("Answer: A, C",
    `\\boxed{}`, "the answer is"), or in the whole reply when it is at most five words; else ZZZZZ."""
    text = entry.replace("*", "")
    region = extract_final_answer(text, fallback=False)
    if region is None and 0 < len(text.split()) <= 5:
        region = text
    if region is None:
        return [NON_ANSWER]
    letters = _TOKEN.findall(region)
    found = letters or re.findall(r"-?\d+(?:\.\d+)?", region)
    return sorted(set(found)) if found else [NON_ANSWER]


class LogicVista(Benchmark):
    """LogicVista. Schema (data/dataset.json of the official repo, an object keyed by id): imagename,
    question, answer (one or more letters "A, C", or a number), reasoning, skill, capability; images in
    data/images/. No hub release: pass the repo's data directory. Scoring: see the module docstring."""

    name = "logicvista"
    title = "LogicVista"
    group = "VOLD"
    hub_path = None
    uses_judge = True

    def to_example(self, row, index, base):
        row_id = str(row.get("_key") or row.get("id") or row.get("index") or index)
        w = f"{self.title} row {index} (id {row_id!r})"
        question = str(self.require(row, "question", w))
        answer = str(self.require(row, "answer", w))
        gold = [a for a in answer.split(", ")]
        if any(not a.strip() for a in gold):
            raise DataError(f"{w}: answer {answer!r} must be one or more answers separated by ', '")
        image = self.image(row, ("image", "imagename", "image_path"), base, w)
        return Example(problem=question, images=[image], answer=answer, id=row_id,
                       meta={"gold_set": sorted(gold), "question": question, "skill": row.get("skill")})

    def score(self, completion: str, example: Example, judge: Judge | None = None,
              extraction: Extraction | None = None) -> ItemScore:
        """Official verdict. `extraction.text` is the extractor's reply: a {"choices": [...]} JSON object
        or a comma-separated list such as "A, C"."""
        entry = entry_of(completion)
        fixed = needs_llm(entry)  # the official rules before the LLM step apply to every extractor
        if fixed is not None:
            choices = fixed
            rule = extraction.rule if extraction is not None else judge.rule if judge is not None else OFFLINE
        elif extraction is not None:
            choices = parse_choices(extraction.text)
            if choices is None:
                choices = [c.strip() for c in extraction.text.split(",") if c.strip()] or [NON_ANSWER]
            rule = extraction.rule
        elif judge is not None:
            choices = parse_choices(judge.complete(extraction_prompt(example.meta["question"], entry)))
            choices, rule = (choices if choices is not None else [NON_ANSWER]), judge.rule
        else:
            choices, rule = offline_extract(entry), OFFLINE
        parsed = bool(choices) and choices != [""] and NON_ANSWER not in choices
        return ItemScore(float(matches(choices, example.answer)), ", ".join(choices), parsed, rule)

    def reference_completion(self, example):
        return f"Following the pattern.\nAnswer: {example.answer}"

    def wrong_completion(self, example):
        return "Following the pattern.\nAnswer: Z"
