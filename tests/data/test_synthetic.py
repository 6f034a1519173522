"""The synthetic task: determinism, correct answers, fixed label slots, disjoint splits, numbers
destroyed by pixelation while the layout survives, and a lossless JSONL round trip."""

from __future__ import annotations

import re

import numpy as np
import pytest

from vlm_opd.data import IMAGE_PLACEHOLDER, load_examples
from vlm_opd.data.degrade import blank, pixelate
from vlm_opd.data.synthetic import (
    TASKS,
    SynthConfig,
    _font,
    _font_size,
    _is_held_out,
    _label_slots,
    corpus_texts,
    generate,
    make_splits,
    reference_solution,
    render_diagram,
    write_dataset,
)
from vlm_opd.errors import ConfigError, DataError


def _arr(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


def _key(example) -> tuple:
    return example.meta["task"], tuple(example.meta["values"])


def test_same_seed_gives_identical_examples_and_prefixes():
    a, b = generate(16, seed=5), generate(16, seed=5)
    for x, y in zip(a, b):
        assert (x.problem, x.answer, x.solution, x.id, x.meta) == (y.problem, y.answer, y.solution, y.id, y.meta)
        assert x.images[0].tobytes() == y.images[0].tobytes()
    assert [e.id for e in generate(6, seed=5)] == [e.id for e in a[:6]], "generate(n) is a prefix of generate(n+k)"
    assert generate(6, seed=5)[3].images[0].tobytes() == a[3].images[0].tobytes()
    other = generate(16, seed=6)
    assert [_key(e) for e in other] != [_key(e) for e in a]


def test_answers_and_solutions_are_right():
    examples = generate(200, seed=1)
    assert {e.meta["task"] for e in examples} == set(TASKS)
    for e in examples:
        task, values = e.meta["task"], e.meta["values"]
        expected = {
            "triangle": sum(values),
            "rectangle": 2 * sum(values),
            "bar-sum": sum(values),
            "bar-diff": max(values) - min(values),
        }[task]
        assert e.answer == str(expected)
        assert e.solution.endswith(f"The answer is \\boxed{{{expected}}}.")
        # The chain starts by reading every printed number, in slot order.
        assert [int(v) for v in re.findall(r"\d+", e.solution)][: len(values)] == values
        assert e.problem.startswith(IMAGE_PLACEHOLDER) and e.problem.count(IMAGE_PLACEHOLDER) == 1
        assert len(e.images) == 1 and e.images[0].mode == "RGB" and e.images[0].size == (56, 56)
        assert all(1 <= v <= 9 for v in values)
        assert len(values) == (2 if task == "rectangle" else 3)
        if task == "triangle":
            a, b, c = sorted(values)
            assert a + b > c, "triangle sides must satisfy the triangle inequality"


def test_reference_solution_example():
    assert reference_solution("triangle", [3, 5, 7]) == ("The sides are 3, 5 and 7. 3 + 5 + 7 = 15. The answer is \\boxed{15}.", "15")
    solution, answer = reference_solution("bar-diff", [4, 9])
    assert answer == "5" and "9 - 4 = 5" in solution


def test_knobs():
    examples = generate(40, seed=2, num_values=2, tasks=["bar-sum", "bar-diff"], image_size=84, value_range=(10, 99))
    assert {e.meta["task"] for e in examples} == {"bar-sum", "bar-diff"}
    assert all(len(e.meta["values"]) == 2 and all(10 <= v <= 99 for v in e.meta["values"]) for e in examples)
    assert {e.images[0].size for e in examples} == {(84, 84)}


@pytest.mark.parametrize(
    "knobs, pattern",
    [
        ({"num_values": 4}, "num_values"),
        ({"value_range": (0, 100)}, "value_range"),
        ({"value_range": (5, 3)}, "value_range"),
        ({"tasks": ("circle",)}, "tasks"),
        ({"tasks": ()}, "tasks"),
        ({"image_size": 60}, "multiple of 28"),
        ({"image_size": 28}, "multiple of 28"),
        ({"holdout_fraction": 1.0}, "holdout_fraction"),
        ({"colour": "red"}, "unknown option"),
        ({"filler_sentences": 9}, "filler_sentences"),
        ({"filler_sentences": True}, "filler_sentences"),
        ({"filler_skew": -1}, "filler_skew"),
    ],
)
def test_bad_knobs_are_config_errors(knobs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        generate(1, seed=0, **knobs)


def test_filler_sentences_lengthen_the_chain_without_touching_what_needs_the_image():
    knobs = dict(num_values=2, tasks=["bar-sum"], value_range=(1, 9))
    plain = generate(30, seed=4, **knobs)
    filled = generate(30, seed=4, filler_sentences=3, **knobs)
    assert generate(30, seed=4, filler_sentences=3, **knobs)[7].solution == filled[7].solution  # deterministic
    sentence = re.compile(r"(Let me|I will|Now I|Next I|So I) \w+ [\w ]+?\.")
    for p, f in zip(plain, filled):
        # same task, values, image and answer; the filler sits between the arithmetic and the answer
        assert (p.answer, p.meta["values"], p.problem) == (f.answer, f.meta["values"], f.problem)
        assert np.array_equal(_arr(p.images[0]), _arr(f.images[0]))
        head, tail = p.solution.split(" The answer is ")
        assert f.solution.startswith(head + " ") and f.solution.endswith(" The answer is " + tail)
        middle = f.solution[len(head) + 1 : -len(" The answer is " + tail)]
        assert len(sentence.findall(middle)) == 3 and not re.search(r"\d", middle)
    assert len({f.solution.split(" The answer is ")[0] for f in filled}) > 25  # the phrasing varies
    # skew makes the first option of each slot more frequent
    skewed = " ".join(e.solution for e in generate(200, seed=1, filler_sentences=2, filler_skew=2.0, **knobs))
    uniform = " ".join(e.solution for e in generate(200, seed=1, filler_sentences=2, **knobs))
    assert skewed.count("Let me") > 2 * uniform.count("Let me")
    assert all("check" not in t for t in corpus_texts(20, seed=0, **knobs))
    assert any("Let me" in t or "I will" in t for t in corpus_texts(20, seed=0, filler_sentences=2, **knobs))


def test_splits_do_not_overlap():
    train, held_out = make_splits(400, 150, seed=3)
    assert len(train) == 400 and len(held_out) == 150
    train_keys, eval_keys = {_key(e) for e in train}, {_key(e) for e in held_out}
    assert not train_keys & eval_keys
    assert all(_is_held_out(3, t, v, 0.2) for t, v in eval_keys)
    assert not {e.id for e in train} & {e.id for e in held_out}
    # A different seed holds out different combinations.
    _, eval_other = make_splits(0, 150, seed=4)
    assert {_key(e) for e in eval_other} != eval_keys


def test_split_with_no_possible_combination_fails_clearly():
    # One possible rectangle (3, 3): it is either held out or not, so one split is empty.
    with pytest.raises(ConfigError, match="widen value_range"):
        make_splits(2, 2, seed=0, tasks=("rectangle",), value_range=(3, 3))


def test_labels_sit_in_fixed_slots():
    """All black ink (the digits) over many examples stays inside small boxes around the slots."""
    for task in TASKS:
        size, n = 56, 3
        slots = _label_slots(task, n)
        left, top, right, bottom = _font(_font_size(task, n, size, 1)).getbbox("8", anchor="mm")
        allowed = np.zeros((size, size), dtype=bool)
        for fx, fy in slots:
            cx, cy = fx * size, fy * size
            x0, x1 = int(cx + left - 3), int(np.ceil(cx + right + 3))
            y0, y1 = int(cy + top - 3), int(np.ceil(cy + bottom + 3))
            allowed[max(0, y0) : y1, max(0, x0) : x1] = True
        assert allowed.mean() < 0.45, "slot boxes should be a small part of the image"
        ink = np.zeros((size, size), dtype=bool)
        for e in generate(60, seed=11, tasks=(task,)):
            ink |= _arr(e.images[0]).max(axis=2) < 80
        assert ink.any()
        assert not (ink & ~allowed).any(), f"{task}: digits outside their slots"
        # Every slot gets used.
        for fx, fy in slots:
            assert ink[int(fy * size) - 6 : int(fy * size) + 6, int(fx * size) - 6 : int(fx * size) + 6].any()


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("size", [56, 84])
def test_pixelation_kills_digits_but_keeps_layout(task, size):
    n = 2 if task == "rectangle" else 3
    for style in range(3):
        ones = render_diagram(task, [1] * n, image_size=size, style_seed=style, max_digits=1)
        eights = render_diagram(task, [8] * n, image_size=size, style_seed=style, max_digits=1)
        orig = np.abs(_arr(ones) - _arr(eights))
        pix = np.abs(_arr(pixelate(ones)) - _arr(pixelate(eights)))
        # Originals: crisp, full-contrast differences on many pixels.
        assert orig.max() >= 200 and (orig > 128).sum() >= 30
        # Pixelated: the digits are smeared into faint grey blocks, never a crisp difference.
        assert pix.max() < 128
        assert (pix > 64).sum() < (orig > 64).sum() / 2
        # Layout and colour survive: far from a blank image, and different styles stay different.
        pixelated = pixelate(eights)
        assert np.abs(_arr(pixelated) - _arr(blank(pixelated))).mean() > 10
        restyled = [
            pixelate(render_diagram(task, [8] * n, image_size=size, style_seed=s, max_digits=1)) for s in range(100, 104)
        ]
        assert max(np.abs(_arr(pixelated) - _arr(r)).mean() for r in restyled) > 5


def test_write_and_load_round_trip(tmp_path):
    examples = generate(12, seed=9, image_size=84)
    path = write_dataset(examples, tmp_path, name="train")
    assert path == tmp_path / "train.jsonl" and len(list((tmp_path / "images").glob("train-*.png"))) == 12
    loaded = load_examples(path)
    assert len(loaded) == len(examples)
    for a, b in zip(examples, loaded):
        assert (a.problem, a.answer, a.solution, a.id, a.meta) == (b.problem, b.answer, b.solution, b.id, b.meta)
        assert a.images[0].tobytes() == b.images[0].tobytes()
    # Writing the same examples again gives the same bytes (deterministic PNG + JSON).
    again = write_dataset(generate(12, seed=9, image_size=84), tmp_path / "again", name="train")
    assert again.read_bytes() == path.read_bytes()
    assert (tmp_path / "again/images/train-000003-0.png").read_bytes() == (tmp_path / "images/train-000003-0.png").read_bytes()


def test_write_dataset_rejects_meta_that_would_not_round_trip(tmp_path):
    ex = generate(1, seed=0)[0]
    ex.meta["question"] = "clash"
    with pytest.raises(DataError, match="question"):
        write_dataset([ex], tmp_path)
    ex.meta = {"obj": object()}
    with pytest.raises(DataError, match="JSON"):
        write_dataset([ex], tmp_path)


def test_corpus_texts():
    texts = corpus_texts(100, seed=0)
    assert len(texts) == 200
    assert IMAGE_PLACEHOLDER not in "".join(texts)
    assert sum("\\boxed{" in t for t in texts) == 100
    assert corpus_texts(100, seed=0) == texts
    assert len({t for t in texts[::2]}) == len(TASKS), "every task's question appears"
    # Same sampling as generate: the texts match the generated examples.
    first = generate(1, seed=0)[0]
    assert texts[:2] == [first.problem.replace(IMAGE_PLACEHOLDER, ""), first.solution]


def test_two_digit_labels_fit_or_fail_clearly():
    # Two-digit labels at 84 px still get a readable font for every task.
    assert min(_font_size(t, 3, 84, 2) for t in TASKS) >= 16
    # Enough room at 56 px for one digit, at a large font.
    assert min(_font_size(t, 3, 56, 1) for t in TASKS) >= 19
    SynthConfig(value_range=(1, 99), image_size=84)
