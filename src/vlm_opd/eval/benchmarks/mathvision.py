"""MATH-Vision: loader, the official prompt and the official rule scorer.

Sources (mathllm/MATH-V @ 1d361180b02cbff417c77c02acf1b4cacf2d55ea):
- prompt: `models/Qwen-VL.py::geninput`: 'Please solve the problem step by step and put your answer in
  one "\\boxed{}". If it is a multiple choice question, only one letter is allowed in the "\\boxed{}".'
  + newline + question + newline + "(A) ..\\n(B) ..\\n...(E) ..\\n" (options are listed only when
  they are not just the letters A-E).
- answer reading: `evaluation/evaluate.py::evaluate` (the `model_answer` block, reproduced step by
  step in `read_answer`) and `evaluation/utils.py::find_math_answer` / `_strip_string`.
- verdict: `is_equal(gt, answer) or is_equal(gt_option_value, answer)` of `evaluation/utils.py`:
  lower-case both, empty -> wrong, equal after `strip()` -> right, then `eval_tuple` on both and
  string equality, then both read as numbers and compared after `round(x, 2)`. Units are not removed
  except the few `find_math_answer` drops ("units", "km", "m^3", degrees, "\\text"): "6 cm" is no
  number, "6" vs "6.004" is right, "0.499" vs "0.5" is right.

One deliberate difference: the official number step is `eval(str(latex2sympy(x)))` with latex2sympy2
(ANTLR 4.7) in a `from math import *` namespace. latex2sympy2 cannot be installed beside math-verify's
latex2sympy2_extended (they pin different ANTLR runtimes), and `eval` of model output is unsafe, so
here latex2sympy2_extended parses and SymPy evaluates: the expression must be a finite real number
(symbols, infinities and complex values fail, as NameError-raising strings do officially). The two
parsers can disagree on unusual LaTeX; plain numbers, fractions, roots and pi agree.
"""

from __future__ import annotations

import math
import re
from typing import Any

from vlm_opd.data.example import IMAGE_PLACEHOLDER, Example
from vlm_opd.eval.benchmarks.base import (
    Benchmark,
    blank,
    gold_letter,
    letters_of,
    parse_list_field,
)
from vlm_opd.eval.judge import Judge
from vlm_opd.eval.scoring import OFFICIAL, Extraction, ItemScore
from vlm_opd.rewards.extract import option_letters

SOURCE = "mathllm/MATH-V evaluation/evaluate.py + evaluation/utils.py @ 1d361180b02cbff417c77c02acf1b4cacf2d55ea"

INSTRUCTION = ('Please solve the problem step by step and put your answer in one "\\boxed{}". '
               'If it is a multiple choice question, only one letter is allowed in the "\\boxed{}".\n')


# ----------------------------------------------------------------- utils.py: find_math_answer

def _fix_fracs(string: str) -> str:
    parts = string.split("\\frac")
    out = parts[0]
    for part in parts[1:]:
        out += "\\frac"
        if part[:1] == "{":
            out += part
            continue
        if len(part) < 2:
            return string
        a, b, rest = part[0], part[1], part[2:]
        out += ("{" + a + "}{" + b + "}" + rest) if b != "{" else ("{" + a + "}" + b + rest)
    return out


def _fix_a_slash_b(string: str) -> str:
    if len(string.split("/")) != 2:
        return string
    a, b = string.split("/")
    try:
        a_int, b_int = int(a), int(b)
    except ValueError:
        return string
    if string != f"{a_int}/{b_int}":
        return string
    return "\\frac{" + str(a_int) + "}{" + str(b_int) + "}"


def _fix_sqrt(string: str) -> str:
    if "\\sqrt" not in string:
        return string
    splits = string.split("\\sqrt")
    out = splits[0]
    for split in splits[1:]:
        out += ("\\sqrt{" + split[0] + "}" + split[1:]) if split and split[0] != "{" else ("\\sqrt" + split)
    return out


def _strip_string(string: str) -> str:
    """`_strip_string` of utils.py, in its order (note: `_fix_fracs` only runs when "sqrt" is present)."""
    string = string.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    string = string.replace("tfrac", "frac").replace("dfrac", "frac")
    string = string.replace("\\left", "").replace("\\right", "")
    string = string.replace("^{\\circ}", "").replace("^\\circ", "")
    string = string.replace("\\$", "").replace("$", "")
    string = string.split("\\text{ ")[0]
    string = string.replace("\\%", "")
    string = string.replace(" .", " 0.").replace("{.", "{0.")
    if not string:
        return string
    if string[0] == ".":
        string = "0" + string
    if len(string.split("=")) == 2:
        string = string.split("=")[-1]
    if len(string.split("\\approx")) == 2:
        string = string.split("\\approx")[-1]
    if "sqrt" in string:
        string = _fix_sqrt(string)
    string = string.replace(" ", "")
    if "sqrt" in string:
        string = _fix_fracs(string)
    if string == "0.5":
        string = "\\frac{1}{2}"
    return _fix_a_slash_b(string)


def find_math_answer(s: str) -> str:
    """`find_math_answer` of utils.py: lower-case, the greedy `oxed{(.*)}` content, cut at an unopened
    "}", the part after the last "=" and "\\approx", LaTeX and a few units removed, `_strip_string`."""
    s = s.lower()
    s = s.replace("{}", "")
    boxed = re.findall(r"oxed{(.*)}", s, flags=re.S)
    ans = boxed[-1] if boxed else s
    close, open_ = ans.find("}"), ans.find("{")
    if close != -1 and (open_ == -1 or close < open_):
        ans = ans.split("}")[0]
    ans = ans.split("=")[-1].split("\\approx")[-1]
    for old, new in ((" ", ""), ("\\,", ""), ("∞", "\\infty"), ("+\\infty", "\\infty"), ("\\\\", "\\"),
                     ("\n", ""), ("\\text", ""), ("\\mbox", ""), ("bmatrix", "pmatrix"), ("\\left", ""),
                     ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("{m}^3", ""), ("m^3", ""),
                     ("{units}", ""), ("units", ""), ("{km}", ""), ("km", "")):
        ans = ans.replace(old, new)
    return _strip_string(ans)


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def read_answer(response: str) -> str:
    """The `model_answer` evaluate.py computes from a response (before `is_equal`)."""
    answer = response.strip()
    for c in "ABCDE":
        if (answer.endswith(f" {c}.") or answer.endswith(f" ({c}).") or answer.startswith(f"{c}\n")
                or answer.startswith(f"({c})\n") or answer.startswith(f"({c}) {c}\n")):
            answer = c
    tail = answer.split("is ")[-1].rstrip(".")
    if _is_number(tail):
        answer = tail
    if "oxed{" not in answer:
        for flag in ("the final answer is", "the answer is", "the correct answer is", "the answer should be"):
            for f in (flag, flag.replace("the", "The")):
                raw = answer
                answer = answer.split(f)[-1].strip()
                if f in raw:
                    answer = answer.split("\n")[0].split(". ")[0]
    elif answer.count("oxed{") > 1:
        answer = "\\boxed{" + answer.split("oxed{")[-1]
    answer = find_math_answer(answer)
    for letter in "abcde":
        answer = answer.replace(f"({letter})", letter)
    for letter in "abcde":
        answer = answer.replace("{" + letter + "}", letter)
    return answer.rstrip(".").lstrip(":").strip()


# ----------------------------------------------------------------- utils.py: is_equal

def _number(latex: str) -> float | int:
    """Stand-in for `eval(str(latex2sympy(x)))`: a finite real number, else ValueError."""
    from latex2sympy2_extended import latex2sympy  # math-verify's parser; imported lazily (slow import)

    expr = latex2sympy(latex)
    if not getattr(expr, "is_number", False):
        raise ValueError(f"not a number: {latex!r}")
    if getattr(expr, "is_Integer", False):
        return int(expr)
    value = complex(expr.evalf())
    if value.imag != 0 or not math.isfinite(value.real):
        raise ValueError(f"not a finite real number: {latex!r}")
    return value.real


def _eval_tuple(s: str) -> str:
    """`eval_tuple`: "(a,b)" / "[a,b]" with every element evaluated and rounded to 2 decimals."""
    parts = s[1:-1].split(",")
    try:
        if s[0] in "([" and s[-1] == {"(": ")", "[": "]"}[s[0]] and len(parts) > 1:
            items = [sub if ("infty" in sub or sub in ("a", "-a")) else str(round(_number(sub), 2)) for sub in parts]
            return f"{s[0]}{','.join(items)}{s[-1]}"
    except Exception:  # noqa: BLE001 - the official code returns the string unchanged on any error
        return s
    return s


def is_equal(asw: str, gt_asw: str) -> bool:
    """`is_equal` of utils.py."""
    asw, gt_asw = asw.lower(), gt_asw.lower()
    if asw.replace(" ", "") == "" or gt_asw.replace(" ", "") == "":
        return False
    if gt_asw.strip() == asw.strip():
        return True
    asw, gt_asw = _eval_tuple(asw), _eval_tuple(gt_asw)
    if gt_asw == asw:
        return True
    try:
        return round(_number(gt_asw), 2) == round(_number(asw), 2)
    except Exception:  # noqa: BLE001 - the official code counts any error as "not equal"
        return False


class MathVision(Benchmark):
    """MATH-Vision (test). Schema: id, question (`<image1>` markers), options (list; empty for free-form,
    ["A", ..., "E"] when the options are drawn in the image), image / decoded_image, answer, solution,
    level, subject. Prompt and scorer: the official ones (see the module docstring)."""

    name = "mathvision"
    title = "MathVision"
    group = "VOLD"
    hub_path = "MathLLMs/MathVision"
    hub_split = "test"

    def to_example(self, row, index, base):
        w = self.where(index, row, "id")
        question = str(self.require(row, "question", w))
        answer = str(self.require(row, "answer", w)).strip()
        options = [] if blank(row.get("options")) else [str(o) for o in parse_list_field(row["options"], w, "options")]
        listed = ""
        if options and "".join(options) != "".join(option_letters(len(options))):
            listed = "".join(f"({l}) {o}\n" for l, o in zip(option_letters(len(options)), options))
        if options:
            answer = gold_letter(answer, options, w)
        prompt = INSTRUCTION + f"{question}\n{listed}"
        image = self.image(row, ("decoded_image", "image"), base, w)
        markers = re.findall(r"<image\d*>", prompt)
        prompt = re.sub(r"<image\d*>", IMAGE_PLACEHOLDER, prompt) if len(markers) == 1 else prompt
        meta: dict[str, Any] = {"level": row.get("level"), "subject": row.get("subject")}
        if options:
            meta["options"] = options
        return Example(problem=prompt, images=[image], answer=answer, id=str(row.get("id") or index), meta=meta)

    def score(self, completion: str, example: Example, judge: Judge | None = None,
              extraction: Extraction | None = None) -> ItemScore:
        """`is_equal(gt, answer) or is_equal(gt_value, answer)` on evaluate.py's `model_answer`."""
        self._no_extraction(extraction)
        answer = read_answer(completion)
        options = example.meta.get("options")
        value = options[ord(example.answer) - ord("A")] if options else ""
        correct = is_equal(example.answer, answer) or is_equal(value, answer)
        return ItemScore(float(correct), answer, answer.replace(" ", "") != "", OFFICIAL)

    def wrong_completion(self, example):
        if example.meta.get("options"):
            wrong = next(l for l in letters_of(example.meta["options"]) if l != example.answer)
            return f"\\boxed{{{wrong}}}"
        return super().wrong_completion(example)
