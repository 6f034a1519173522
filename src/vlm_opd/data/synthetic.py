"""A seeded synthetic visual-reasoning task: read printed numbers off a diagram, then add them up.

Each example is a small diagram (a triangle, a rectangle or a bar chart) with numbers printed at
FIXED label slots, and a question whose answer needs those numbers plus a little arithmetic:

    triangle    3 side labels (a valid triangle)   perimeter   a + b + c
    rectangle   width and height labels            perimeter   2 * (w + h)
    bar-sum     2-3 bars, a value under each       sum of the values
    bar-diff    2-3 bars, a value under each       largest value minus smallest value

Why it looks like this (DESIGN.md, "Measured here"):
- Tiny vision encoders trained from scratch learn to read digits quickly only when the digits sit
  at a few fixed positions in a large clear font; numbers placed anywhere stayed at chance. So each
  task kind has 2-3 label slots, labels jitter by at most 2 px (the shape by 1 px), and the font is
  the largest that keeps every label inside the image, off the shape and apart from its
  neighbours (about 40% of the side for one digit; fixed per task kind and image size).
- The answer depends on the printed digits only: shapes, colours and bar heights come from a style
  seed independent of the numbers (bar heights do NOT encode the values). After
  `pixelate(ratio=0.1)` the layout and colours survive while each digit becomes a few faint grey
  blocks. Caveat, measured: those blocks still carry each digit's ink distribution, and because
  the slots are fixed, a nearest-neighbour reader fitted on *pixelated* crops recovers the digit
  60-99% of the time. A model trained on clean images (the teacher) does not read them (DESIGN.md:
  digit log-prob -8.3 pixelated vs -0.06 real), which is what visual advantage relies on.
- Image sides are multiples of 28 (Qwen2-VL patch 14 x merge 2), so processors never resize.

Everything is a pure function of its arguments: the same seed gives byte-identical images and
texts. `make_splits` holds out a seed-dependent share of the (task, values) combinations for
evaluation, so held-out questions are never seen in training (or, with `holdout="images"`, only
new images of possibly seen combinations: the demo uses this, see `SynthConfig.holdout`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from PIL import Image, ImageDraw, ImageFont

from vlm_opd.data.example import IMAGE_PLACEHOLDER, Example
from vlm_opd.errors import ConfigError, DataError

TASKS: tuple[str, ...] = ("triangle", "rectangle", "bar-sum", "bar-diff")

# Slot centres as fractions of the image side, per task kind. Label text is centred on the slot.
_TRIANGLE_SLOTS = ((0.17, 0.36), (0.83, 0.36), (0.50, 0.80))  # left side, right side, base
_RECTANGLE_SLOTS = ((0.68, 0.19), (0.20, 0.66))  # width (above the top edge), height (left of it)
_BAR_SLOTS = {2: ((0.27, 0.80), (0.73, 0.80)), 3: ((0.16, 0.80), (0.50, 0.80), (0.84, 0.80))}

_MIN_FONT_PX = 10
_MIN_BAR, _MAX_BAR = 0.14, 0.48  # bar heights, fractions of the side
_AXIS = (90, 90, 90)
_SHAPE_JITTER_PX = 1  # the shape moves less: it is context, the labels are the signal
_JITTER_PX = 2  # max label offset in pixels; larger offsets slow down learning to read
# Saturated, well separated colours: they survive pixelation and make the layout visible.
_PALETTE = (
    (214, 39, 40),
    (31, 119, 180),
    (44, 160, 44),
    (255, 127, 14),
    (148, 103, 189),
    (23, 190, 207),
    (140, 86, 75),
    (227, 119, 194),
)
_BACKGROUND = (255, 255, 255)
_INK = (0, 0, 0)
_SPLITS = ("all", "train", "eval")


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the synthetic task (validated on construction).

    Attributes:
        num_values: number of bars in the bar tasks (2 or 3). The triangle always has 3 labels
            and the rectangle 2; they ignore this knob.
        value_range: inclusive (low, high) range of the printed integers, 0 <= low <= high <= 99.
            Single digits (the default 1..9) are learned much faster than two-digit numbers.
        tasks: the task kinds to draw from (a non-empty subset of TASKS), chosen uniformly.
        image_size: image side in pixels; a multiple of 28, at least 56 (84+ for 2-digit values).
        holdout_fraction: share of (task, values) combinations reserved for the "eval" split.
        holdout: what the "eval" split holds out. "values" (default): `holdout_fraction` of the
            (task, values) combinations, so eval questions are never seen in training. "images":
            every combination may appear in both splits, drawn from independent streams, so eval
            images (style, jitter) are new but their values may not be; use it when the arithmetic
            of unseen combinations is not the point (a tiny model memorises single-digit sums and
            does not generalise them to held-out pairs) and the test is reading new images.
        filler_sentences: number of image-independent "checking" sentences inserted into the
            reference chain after the arithmetic (default 0: the original short chain). Each is
            drawn at random per example from a small grammar with several free word choices
            (`filler_text`), so the chain gets many high-entropy language tokens that carry no
            visual information, while the tokens that need the image stay the same few digits.
        filler_skew: Zipf exponent of the filler's word choices: option i of each slot has weight
            1 / (i + 1) ** filler_skew (default 0: uniform). A different phrasing habit over the
            same words, e.g. for a student cold-started in its own style (`DemoRecipe.student_task`).
        shortcut: a language shortcut (default 0: off). When > 0 every question ends with a hint,
            "A note on the chart says the answer is H.", and on the "train" and "all" splits H is the
            true answer with probability `shortcut`; otherwise (and always when it is not) H is the
            answer of an independent draw of values for the same task, so H carries no information.
            A blind answerer that copies H scores about `shortcut` on those splits (well above the
            ~11% of always answering the most common sum), without reading anything.
        shortcut_eval: the same probability on the "eval" split (default 0: the held-out split where
            the shortcut fails and only reading helps; set it to `shortcut` to evaluate with the
            shortcut intact). Only used when `shortcut` > 0. The images, values and reference chains
            are those of the task without the knob; only the question's last sentence is added.
    """

    num_values: int = 3
    value_range: tuple[int, int] = (1, 9)
    tasks: tuple[str, ...] = TASKS
    image_size: int = 56
    holdout_fraction: float = 0.2
    holdout: str = "values"
    filler_sentences: int = 0
    filler_skew: float = 0.0
    shortcut: float = 0.0
    shortcut_eval: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.num_values, bool) or self.num_values not in (2, 3):
            raise ConfigError(f"synthetic: num_values must be 2 or 3, got {self.num_values!r}")
        vr = self.value_range
        if (
            not isinstance(vr, (tuple, list))
            or len(vr) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in vr)
            or not 0 <= vr[0] <= vr[1] <= 99
        ):
            raise ConfigError(f"synthetic: value_range must be (low, high) integers with 0 <= low <= high <= 99, got {vr!r}")
        object.__setattr__(self, "value_range", (int(vr[0]), int(vr[1])))
        tasks = (self.tasks,) if isinstance(self.tasks, str) else tuple(self.tasks)
        unknown = [t for t in tasks if t not in TASKS]
        if not tasks or unknown:
            raise ConfigError(f"synthetic: tasks must be a non-empty subset of {', '.join(TASKS)}; got {list(tasks)!r}")
        object.__setattr__(self, "tasks", tuple(dict.fromkeys(tasks)))  # de-duplicate, keep order
        size = self.image_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 56 or size % 28:
            raise ConfigError(f"synthetic: image_size must be a multiple of 28 and >= 56, got {size!r}")
        hf = self.holdout_fraction
        if isinstance(hf, bool) or not isinstance(hf, (int, float)) or not 0.0 < hf < 1.0:
            raise ConfigError(f"synthetic: holdout_fraction must be in (0, 1), got {hf!r}")
        if self.holdout not in ("values", "images"):
            raise ConfigError(f"synthetic: holdout must be 'values' or 'images', got {self.holdout!r}")
        fs = self.filler_sentences
        if isinstance(fs, bool) or not isinstance(fs, int) or not 0 <= fs <= 8:
            raise ConfigError(f"synthetic: filler_sentences must be an integer in 0..8, got {fs!r}")
        sk = self.filler_skew
        if isinstance(sk, bool) or not isinstance(sk, (int, float)) or not 0.0 <= sk <= 10.0:
            raise ConfigError(f"synthetic: filler_skew must be a number in [0, 10], got {sk!r}")
        for name in ("shortcut", "shortcut_eval"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ConfigError(f"synthetic: {name} must be a probability in [0, 1], got {v!r}")
        _check_labels_fit(self)


# ----------------------------------------------------------------------------------------------
# Drawing


@lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _label_slots(task: str, num_values: int) -> tuple[tuple[float, float], ...]:
    if task == "triangle":
        return _TRIANGLE_SLOTS
    if task == "rectangle":
        return _RECTANGLE_SLOTS
    return _BAR_SLOTS[num_values]


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    task: str,
    num_values: int,
    size: int,
    offset: tuple[int, int],
    colours: Sequence[Any],
    fills: Sequence[Any],
    bar_heights: Sequence[float],
) -> None:
    """Draw the task's shape (everything but the labels); bar heights are fractions of the side."""
    dx, dy = offset
    line = max(2, round(size / 28))
    if task == "triangle":
        corners = ((0.50, 0.10), (0.36, 0.58), (0.64, 0.58))  # apex, base left, base right
        pts = [(fx * size + dx, fy * size + dy) for fx, fy in corners]
        draw.polygon(pts, fill=fills[0], outline=colours[0], width=line)
    elif task == "rectangle":
        box = (0.46 * size + dx, 0.42 * size + dy, 0.90 * size + dx, 0.90 * size + dy)
        draw.rectangle(box, fill=fills[0], outline=colours[0], width=line)
    else:
        baseline = 0.56 * size + dy
        half_w = (0.15 if num_values == 2 else 0.11) * size
        for i, (fx, _fy) in enumerate(_label_slots(task, num_values)):
            cx = fx * size + dx
            draw.rectangle((cx - half_w, baseline - bar_heights[i] * size, cx + half_w, baseline), fill=colours[i])
        draw.line((0.04 * size, baseline + 1, 0.96 * size, baseline + 1), fill=colours[-1], width=1)


@lru_cache(maxsize=64)
def _keepout_mask(task: str, num_values: int, size: int) -> Image.Image:
    """Every pixel the shape can cover under any style (max bar height, any jitter), as an L mask."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    for dx in range(-_SHAPE_JITTER_PX, _SHAPE_JITTER_PX + 1):
        for dy in range(-_SHAPE_JITTER_PX, _SHAPE_JITTER_PX + 1):
            _draw_shape(draw, task, num_values, size, (dx, dy), [255] * 4, [255] * 4, [_MAX_BAR] * 3)
    return mask


def _labels_fit(task: str, num_values: int, image_size: int, font_size: int, digits: int) -> bool:
    """Whether the widest label ("8", "88") stays inside the image, off the shape, and clear of
    the other labels, wherever the jitter puts it."""
    left, top, right, bottom = _font(font_size).getbbox("8" * digits, anchor="mm")
    pad = _JITTER_PX
    # Neighbouring labels need a visible gap, or "11" "73" reads as "1173".
    gap = max(2.0, 0.2 * font_size)
    mask = _keepout_mask(task, num_values, image_size)
    boxes: list[tuple[float, float, float, float]] = []
    for fx, fy in _label_slots(task, num_values):
        cx, cy = fx * image_size, fy * image_size
        box = (cx + left - pad, cy + top - pad, cx + right + pad, cy + bottom + pad)
        if box[0] < 0 or box[1] < 0 or box[2] > image_size or box[3] > image_size:
            return False
        if any(box[0] < b[2] + gap and b[0] < box[2] + gap and box[1] < b[3] + gap and b[1] < box[3] + gap for b in boxes):
            return False
        if mask.crop(tuple(int(round(v)) for v in box)).getbbox() is not None:
            return False
        boxes.append(box)
    return True


@lru_cache(maxsize=256)
def _font_size(task: str, num_values: int, image_size: int, digits: int) -> int:
    """The largest font (up to 42% of the side for 1 digit, 32% for 2) whose labels fit the slots.

    Large glyphs are what a tiny from-scratch encoder can learn to read; the size depends only on
    the layout, never on the values, so it is the same for every example of a task kind.
    """
    cap = round(image_size * (0.42 if digits == 1 else 0.32))
    floor = max(_MIN_FONT_PX, round(image_size * 0.18))
    for font_size in range(cap, floor - 1, -1):
        if _labels_fit(task, num_values, image_size, font_size, digits):
            return font_size
    raise ConfigError(
        f"synthetic: {digits}-digit labels of task {task!r} do not fit a {image_size}px image at a readable "
        f"font size (>= {floor}px); use a larger image_size (e.g. {image_size + 28}) or a single-digit value_range"
    )


def _check_labels_fit(cfg: SynthConfig) -> None:
    """Raise ConfigError now (not mid-generation) if some task's labels cannot be drawn legibly."""
    digits = len(str(cfg.value_range[1]))
    for task in cfg.tasks:
        _font_size(task, cfg.num_values, cfg.image_size, digits)


def _tint(colour: tuple[int, int, int], amount: float = 0.75) -> tuple[int, int, int]:
    """Mix a colour with white (light fill that keeps black digits readable on top)."""
    return tuple(round(c + (255 - c) * amount) for c in colour)  # type: ignore[return-value]


def render_diagram(
    task: str,
    values: Sequence[int],
    *,
    image_size: int = 56,
    style_seed: int = 0,
    max_digits: int | None = None,
) -> Image.Image:
    """Draw the diagram of one example.

    The style (colours, bar heights, <= 2 px jitter of shape and labels) comes from `style_seed`
    alone, so two calls that differ only in `values` differ only in the printed digits.

    Args:
        task: one of TASKS.
        values: the printed integers in slot order (3 for triangle, 2 for rectangle, 2-3 for bars).
        image_size: side in pixels (a multiple of 28).
        style_seed: seed of the drawing style.
        max_digits: digits of the largest possible value, which sets the font size; defaults to
            the digits of max(values). `generate` passes the value range's, so the font does not
            change from one example to the next.

    Returns:
        An RGB image of size (image_size, image_size).
    """
    if task not in TASKS:
        raise ConfigError(f"synthetic: unknown task {task!r}; valid: {', '.join(TASKS)}")
    values = [int(v) for v in values]
    expected = (2, 3) if task.startswith("bar-") else (len(_label_slots(task, 3)),)
    if len(values) not in expected:
        raise ConfigError(f"synthetic: task {task!r} needs {' or '.join(map(str, expected))} values, got {len(values)}")
    if any(not 0 <= v <= 99 for v in values):
        raise ConfigError(f"synthetic: values must be in 0..99, got {values}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 28:
        raise ConfigError(f"synthetic: image_size must be an integer >= 28, got {image_size!r}")
    digits = max_digits or max(len(str(v)) for v in values)
    slots = _label_slots(task, len(values))
    s = image_size
    rng = random.Random(f"vlm-opd-synth-style|{style_seed}")
    colours = rng.sample(_PALETTE, 3)

    def jitter() -> int:
        return rng.randint(-_JITTER_PX, _JITTER_PX)

    image = Image.new("RGB", (s, s), _BACKGROUND)
    offset = (rng.randint(-_SHAPE_JITTER_PX, _SHAPE_JITTER_PX), rng.randint(-_SHAPE_JITTER_PX, _SHAPE_JITTER_PX))
    # Bar heights are decorative and independent of the printed values (see module docstring).
    heights = [rng.uniform(_MIN_BAR, _MAX_BAR) for _ in range(3)]
    draw = ImageDraw.Draw(image)
    _draw_shape(draw, task, len(values), s, offset, colours + [_AXIS], [_tint(c) for c in colours], heights)
    font = _font(_font_size(task, len(values), s, digits))
    for value, (fx, fy) in zip(values, slots):
        draw.text((fx * s + jitter(), fy * s + jitter()), str(value), fill=_INK, font=font, anchor="mm")
    return image


# ----------------------------------------------------------------------------------------------
# Questions and reference solutions

_QUESTIONS = {
    "triangle": "The side lengths are printed next to the triangle. What is its perimeter?",
    "rectangle": "The width and the height are printed next to the rectangle. What is its perimeter?",
    "bar-sum": "Each bar has its value printed below it. What is the sum of the values?",
    "bar-diff": "Each bar has its value printed below it. What is the largest value minus the smallest value?",
}


def _join(values: Sequence[int]) -> str:
    words = [str(v) for v in values]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


# Image-independent "checking" sentences (`SynthConfig.filler_sentences`): subject, verb, object and
# adverb are drawn independently and uniformly, so every sentence has four free choices (about
# ln 5 + ln 6 + ln 6 + ln 6 = 7 nats) that no image can inform.
_FILLER_SUBJECTS = ("Let me", "I will", "Now I", "Next I", "So I")
_FILLER_VERBS = ("check", "verify", "confirm", "recheck", "review", "inspect")
_FILLER_OBJECTS = ("the sum", "this result", "the numbers", "my work", "each step", "the addition")
_FILLER_ADVERBS = ("again", "carefully", "once more", "slowly", "to be sure", "step by step")


def filler_text(n: int, rng: random.Random, skew: float = 0.0) -> str:
    """`n` image-independent checking sentences drawn from `rng` (empty for n == 0); `skew` > 0
    makes earlier options of each slot more likely (weights 1 / (i + 1) ** skew)."""

    def pick(options: Sequence[str]) -> str:
        if not skew:
            return rng.choice(options)
        return rng.choices(options, weights=[(i + 1) ** -skew for i in range(len(options))])[0]

    return " ".join(
        f"{pick(_FILLER_SUBJECTS)} {pick(_FILLER_VERBS)} {pick(_FILLER_OBJECTS)} {pick(_FILLER_ADVERBS)}."
        for _ in range(n)
    )


def _filler(cfg: SynthConfig, seed: int, split: str, index: int) -> str:
    """Example `index`'s filler sentences ("" without `filler_sentences`), from a stream of its own,
    so the task, values and style of the example are those of the filler-free task."""
    if not cfg.filler_sentences:
        return ""
    rng = random.Random(f"vlm-opd-synth-filler|{seed}|{split}|{index}")
    return filler_text(cfg.filler_sentences, rng, cfg.filler_skew)


def reference_solution(task: str, values: Sequence[int], filler: str = "") -> tuple[str, str]:
    """The short reference chain and the final answer for `task` on `values`.

    The chain reads the numbers first, then does the arithmetic, then boxes the answer, e.g.
    `"The sides are 3, 5 and 7. 3 + 5 + 7 = 15. The answer is \\boxed{15}."`.

    `filler` (image-independent sentences, see `filler_text`) goes between the arithmetic and the
    final answer.

    Returns:
        (solution, answer) where answer is the integer result as a string.
    """
    values = [int(v) for v in values]
    if task == "triangle":
        answer = sum(values)
        steps = f"The sides are {_join(values)}. {' + '.join(map(str, values))} = {answer}."
    elif task == "rectangle":
        w, h = values
        answer = 2 * (w + h)
        steps = f"The width is {w} and the height is {h}. The perimeter is 2 * ({w} + {h}) = {answer}."
    elif task == "bar-sum":
        answer = sum(values)
        steps = f"The bars show {_join(values)}. {' + '.join(map(str, values))} = {answer}."
    elif task == "bar-diff":
        hi, lo = max(values), min(values)
        answer = hi - lo
        steps = (
            f"The bars show {_join(values)}. The largest is {hi} and the smallest is {lo}. "
            f"{hi} - {lo} = {answer}."
        )
    else:
        raise ConfigError(f"synthetic: unknown task {task!r}; valid: {', '.join(TASKS)}")
    if filler:
        steps = f"{steps} {filler}"
    return f"{steps} The answer is \\boxed{{{answer}}}.", str(answer)


# ----------------------------------------------------------------------------------------------
# Sampling

_ENUMERATE_LIMIT = 20_000  # combination spaces up to this size are listed exactly, larger ones sampled
_MAX_TRIES = 10_000


def _values_count(task: str, num_values: int) -> int:
    return len(_label_slots(task, num_values))


def _is_held_out(seed: int, task: str, values: Sequence[int], fraction: float) -> bool:
    """Seeded, process-independent coin flip per (task, values) combination (sha256, not hash())."""
    digest = hashlib.sha256(f"vlm-opd-synth-holdout|{seed}|{task}|{','.join(map(str, values))}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < fraction


def _wanted(split: str, held_out: bool) -> bool:
    return split == "all" or held_out == (split == "eval")


def _is_valid(task: str, values: Sequence[int]) -> bool:
    """Shapes need positive sides, and a triangle's sides must satisfy the triangle inequality."""
    if task == "triangle":
        a, b, c = sorted(values)
        return a > 0 and a + b > c
    if task == "rectangle":
        return min(values) > 0
    return True


def _accept(cfg: SynthConfig, seed: int, task: str, split: str, values: Sequence[int]) -> bool:
    if cfg.holdout == "images":  # splits differ only by their independent sampling streams
        return _is_valid(task, values)
    return _is_valid(task, values) and _wanted(split, _is_held_out(seed, task, values, cfg.holdout_fraction))


@lru_cache(maxsize=64)
def _eligible(cfg: SynthConfig, seed: int, task: str, split: str) -> tuple[tuple[int, ...], ...] | None:
    """All combinations of `task` that belong to `split`, or None when there are too many to list."""
    lo, hi = cfg.value_range
    n = _values_count(task, cfg.num_values)
    if (hi - lo + 1) ** n > _ENUMERATE_LIMIT:
        return None
    combos = itertools.product(range(lo, hi + 1), repeat=n)
    chosen = tuple(c for c in combos if _accept(cfg, seed, task, split, c))
    if not chosen:
        raise ConfigError(
            f"synthetic: split {split!r} has no valid (task, values) combination for task {task!r} with "
            f"value_range {cfg.value_range} and holdout_fraction {cfg.holdout_fraction}; widen value_range"
        )
    return chosen


@dataclass(frozen=True)
class _Spec:
    task: str
    values: tuple[int, ...]
    style_seed: int


def _sample_spec(cfg: SynthConfig, seed: int, split: str, index: int) -> _Spec:
    # One independent stream per example: example i does not depend on n, so generate(n) is a
    # prefix of generate(n + 1). String seeds are hashed with sha512: stable across processes.
    rng = random.Random(f"vlm-opd-synth|{seed}|{split}|{index}")
    task = rng.choice(cfg.tasks)
    values = _draw_values(cfg, seed, task, split, rng)
    return _Spec(task, tuple(values), rng.getrandbits(32))


def _draw_values(cfg: SynthConfig, seed: int, task: str, split: str, rng: random.Random) -> tuple[int, ...]:
    eligible = _eligible(cfg, seed, task, split)
    if eligible is not None:
        return tuple(rng.choice(eligible))
    lo, hi = cfg.value_range
    n = _values_count(task, cfg.num_values)
    for _ in range(_MAX_TRIES):
        values = tuple(rng.randint(lo, hi) for _ in range(n))
        if _accept(cfg, seed, task, split, values):
            return values
    # pragma: no cover - needs holdout_fraction within ~1e-4 of 0 or 1
    raise ConfigError(f"synthetic: could not draw a valid {split!r} combination for task {task!r}")


SHORTCUT_HINT = " A note on the chart says the answer is {hint}."


def _question(cfg: SynthConfig, seed: int, split: str, index: int, spec: _Spec) -> tuple[str, dict[str, Any]]:
    """The question text of example `index` and its shortcut meta ({} without `shortcut`).

    The hint comes from a stream of its own (like the filler), so the task, values and style of the
    example are those of the task without the knob."""
    question = _QUESTIONS[spec.task]
    if not cfg.shortcut:
        return question, {}
    rng = random.Random(f"vlm-opd-synth-shortcut|{seed}|{split}|{index}")
    p = cfg.shortcut_eval if split == "eval" else cfg.shortcut
    answer = reference_solution(spec.task, spec.values)[1]
    if rng.random() < p:
        hint = answer
    else:  # the answer of an independent draw: the hint's marginal is the answer's, but it says nothing
        hint = reference_solution(spec.task, _draw_values(cfg, seed, spec.task, split, rng))[1]
    return question + SHORTCUT_HINT.format(hint=hint), {"hint": int(hint), "hint_is_answer": hint == answer}


def _check_count(n: Any, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"synthetic: {name} must be a non-negative integer, got {n!r}")
    return n


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"synthetic: seed must be an integer, got {seed!r}")
    return seed


def generate(n: int, seed: int = 0, *, split: str = "all", **knobs: Any) -> list[Example]:
    """Generate `n` examples, deterministically from `seed`.

    Args:
        n: number of examples.
        seed: same seed (and knobs) -> byte-identical images and identical texts.
        split: "all" draws from every (task, values) combination; "train" only from combinations
            not held out, "eval" only from held-out ones (see `make_splits`).
        **knobs: fields of `SynthConfig`: num_values, value_range, tasks, image_size,
            holdout_fraction, holdout, filler_sentences, filler_skew, shortcut, shortcut_eval.

    Returns:
        Examples with one RGB image each; `problem` starts with the `<image>` marker, `answer` is
        the integer result, `solution` the reference chain, `meta` holds `task` and `values` (and,
        with `shortcut`, the stated `hint` and `hint_is_answer`).
    """
    n = _check_count(n, "n")
    seed = _check_seed(seed)
    if split not in _SPLITS:
        raise ConfigError(f"synthetic: split must be one of {', '.join(_SPLITS)}, got {split!r}")
    cfg = _config(knobs)
    digits = len(str(cfg.value_range[1]))
    examples = []
    for index in range(n):
        spec = _sample_spec(cfg, seed, split, index)
        solution, answer = reference_solution(spec.task, spec.values, _filler(cfg, seed, split, index))
        image = render_diagram(
            spec.task, spec.values, image_size=cfg.image_size, style_seed=spec.style_seed, max_digits=digits
        )
        question, shortcut_meta = _question(cfg, seed, split, index, spec)
        examples.append(
            Example(
                problem=IMAGE_PLACEHOLDER + question,
                images=[image],
                answer=answer,
                solution=solution,
                id=f"synth-{seed}-{split}-{index:06d}",
                meta={"task": spec.task, "values": list(spec.values), **shortcut_meta},
            )
        )
    return examples


def make_splits(n_train: int, n_eval: int, seed: int = 0, **knobs: Any) -> tuple[list[Example], list[Example]]:
    """Train and held-out examples whose (task, values) combinations never overlap.

    About `holdout_fraction` of all combinations (chosen by `seed`) are reserved for evaluation;
    train examples are drawn from the rest. Combinations may repeat within a split (with a
    different style), so small value ranges still give as many examples as asked for.

    Returns:
        (train, eval) lists of `Example`.
    """
    _check_count(n_train, "n_train")
    _check_count(n_eval, "n_eval")
    return generate(n_train, seed, split="train", **knobs), generate(n_eval, seed, split="eval", **knobs)


def corpus_texts(n: int, seed: int = 0, **knobs: Any) -> list[str]:
    """Texts for training a tokenizer: for each of `n` examples its question and its solution.

    Uses the same sampling as `generate` (without drawing images, so it is fast) and covers every
    task kind in `tasks`. The `<image>` marker is left out: it is a special token of the model.

    Returns:
        A list of 2 * n strings (question, solution, question, solution, ...).
    """
    n = _check_count(n, "n")
    seed = _check_seed(seed)
    cfg = _config(knobs)
    texts = []
    for index in range(n):
        spec = _sample_spec(cfg, seed, "all", index)
        texts.append(_question(cfg, seed, "all", index, spec)[0])
        texts.append(reference_solution(spec.task, spec.values, _filler(cfg, seed, "all", index))[0])
    return texts


def _config(knobs: dict[str, Any]) -> SynthConfig:
    valid = set(SynthConfig.__dataclass_fields__)
    unknown = sorted(set(knobs) - valid)
    if unknown:
        raise ConfigError(f"synthetic: unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
    if isinstance(knobs.get("tasks"), list):
        knobs = {**knobs, "tasks": tuple(knobs["tasks"])}
    if isinstance(knobs.get("value_range"), list):
        knobs = {**knobs, "value_range": tuple(knobs["value_range"])}
    return SynthConfig(**knobs)


# ----------------------------------------------------------------------------------------------
# Writing


def write_dataset(examples: Sequence[Example], out_dir: str | Path, *, name: str = "train") -> Path:
    """Write `examples` as `<out_dir>/<name>.jsonl` plus PNGs under `<out_dir>/images/`.

    The layout follows Geometry3K: each row has `id`, `problem` (with `<image>` markers),
    `images` (PNG paths relative to the JSONL file), `answer`, `solution`, and every `meta` key
    as its own column. `load_examples` reads it back to equal examples (same pixels).

    Raises:
        DataError: a meta key collides with a column the loader interprets, a meta value is not
            JSON-serialisable, or an image is not a PIL image.

    Returns:
        The path of the JSONL file.
    """
    from vlm_opd.data.loading import RESERVED_COLUMNS

    if not re.fullmatch(r"[A-Za-z0-9._-]+", name or ""):
        raise ConfigError(f"write_dataset: name must be a plain file stem (letters, digits, . _ -), got {name!r}")
    out = Path(out_dir)
    image_dir = out / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for row, ex in enumerate(examples):
        clash = sorted(k for k in ex.meta if k in RESERVED_COLUMNS)
        if clash:
            raise DataError(
                f"write_dataset: example {ex.id!r} has meta key(s) {', '.join(clash)} that the loader reads as "
                "Example fields; rename them"
            )
        paths = []
        for k, image in enumerate(ex.images):
            if not isinstance(image, Image.Image):
                raise DataError(f"write_dataset: example {ex.id!r} image {k} is a {type(image).__name__}, not a PIL image")
            rel = f"images/{name}-{row:06d}-{k}.png"
            image.save(out / rel, format="PNG")
            paths.append(rel)
        record = {"id": ex.id, "problem": ex.problem, "images": paths, "answer": ex.answer, "solution": ex.solution}
        record.update(ex.meta)
        try:
            lines.append(json.dumps(record, ensure_ascii=False))
        except (TypeError, ValueError) as err:
            raise DataError(f"write_dataset: example {ex.id!r} has meta that is not JSON-serialisable: {err}") from err
    path = out / f"{name}.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path
