"""The synthetic task's language shortcut (`shortcut`, `shortcut_eval`): a blind answerer that only sees
the question text beats chance on the main split and is at chance on the held-out split."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import pytest

from vlm_opd.data.synthetic import generate
from vlm_opd.errors import ConfigError

TASK = {"tasks": ["bar-sum"], "num_values": 2, "value_range": [1, 9], "image_size": 56, "holdout": "images"}


def _blind_rule(train):
    """A blind model fitted on training data: for each question text (the image is not looked at),
    the most frequent answer; unseen questions get the most frequent answer overall."""
    by_question = defaultdict(Counter)
    for ex in train:
        by_question[ex.problem][ex.answer] += 1
    overall = Counter(ex.answer for ex in train).most_common(1)[0][0]
    table = {q: c.most_common(1)[0][0] for q, c in by_question.items()}
    return lambda ex: table.get(ex.problem, overall)


def _accuracy(rule, examples) -> float:
    return sum(rule(ex) == ex.answer for ex in examples) / len(examples)


def _binomial_se(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


def test_blind_answerer_beats_chance_on_main_split_and_not_on_held_out():
    knobs = {**TASK, "shortcut": 0.6}
    pool = generate(3000, 0, split="train", **knobs)
    train, fresh = pool[:2000], pool[2000:]  # generate(n) is a prefix of generate(n + 1)
    held_out = generate(1000, 0, split="eval", **knobs)
    # Chance for a blind answerer without the hint: always answer the most common sum. Two uniform digits
    # 1-9 sum to 10 in 9 of 81 cases.
    chance = 9 / 81
    # P(an independent hint equals the answer) = sum over sums s of P(s)^2.
    coincidence = sum((min(s - 1, 19 - s) / 81) ** 2 for s in range(2, 19))
    rule = _blind_rule(train)
    main_acc, held_acc = _accuracy(rule, fresh), _accuracy(rule, held_out)
    n = 1000
    # Main split: the hint is the answer 60% of the time (plus the chance agreements of the other 40%).
    assert main_acc > chance + 10 * _binomial_se(chance, n), main_acc
    assert abs(main_acc - (0.6 + 0.4 * coincidence)) < 4 * _binomial_se(0.6, n), main_acc
    # Held-out split: the hint is independent of the answer, so the blind answerer cannot beat chance;
    # having learned to copy the hint, it scores the coincidence rate (~7%).
    assert held_acc < chance + 3 * _binomial_se(chance, n), held_acc
    assert abs(held_acc - coincidence) < 4 * _binomial_se(coincidence, n), held_acc
    # The best blind rule on the held-out split (always the most common sum) is exactly at chance.
    assert abs(sum(ex.answer == "10" for ex in held_out) / n - chance) < 4 * _binomial_se(chance, n)
    # The shortcut is real on the main split: the hint matches the answer in ~60%, on held-out in ~7%.
    assert abs(sum(ex.meta["hint_is_answer"] for ex in fresh) / n - 0.6 - 0.4 * coincidence) < 4 * _binomial_se(0.6, n)
    assert abs(sum(ex.meta["hint_is_answer"] for ex in held_out) / n - coincidence) < 4 * _binomial_se(coincidence, n)


def test_shortcut_changes_only_the_question():
    plain = generate(20, 3, split="train", **TASK)
    hinted = generate(20, 3, split="train", **TASK, shortcut=0.9)
    for a, b in zip(plain, hinted):
        assert a.images[0].tobytes() == b.images[0].tobytes()
        assert (a.answer, a.solution, a.meta["values"]) == (b.answer, b.solution, b.meta["values"])
        assert b.problem.startswith(a.problem) and b.problem.endswith(f"the answer is {b.meta['hint']}.")
    # shortcut_eval = shortcut keeps the shortcut on the held-out split.
    kept = generate(400, 0, split="eval", **TASK, shortcut=0.9, shortcut_eval=0.9)
    assert sum(ex.meta["hint_is_answer"] for ex in kept) / 400 > 0.8
    for bad in (-0.1, 1.5, True, "0.5"):
        with pytest.raises(ConfigError, match="shortcut"):
            generate(1, 0, **TASK, shortcut=bad)
