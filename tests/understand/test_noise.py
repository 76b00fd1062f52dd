from __future__ import annotations

import random
import re

import pytest

from routerank.errors import RouterankError
from routerank.understand.noise import KEYBOARD_NEIGHBOURS, NOISE_RATES, TYPO_KINDS, add_typos, corrupt_word

WORD = re.compile(r"[^\W_]+")
TEXT = "Vitamin D deficiency raises the risk of 2 diseases in IL6 knockout mice, doesn't it?"


def osa_distance(a: str, b: str) -> int:
    """Damerau (optimal string alignment) distance, written out so the test does not trust the code under test."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def test_rates_and_kinds():
    assert NOISE_RATES == (0.0, 0.05, 0.10, 0.20)
    assert set(TYPO_KINDS) == {"deletion", "insertion", "substitution", "transposition", "keyboard"}


def test_rate_zero_is_identity():
    assert add_typos(TEXT, 0.0, 7) == TEXT


def test_same_arguments_same_output_and_seed_matters():
    noisy = add_typos(TEXT, 0.5, 7)
    assert noisy == add_typos(TEXT, 0.5, 7) == add_typos(TEXT, 0.5, "7")
    assert noisy != TEXT
    assert len({add_typos(TEXT, 0.5, seed) for seed in range(10)}) > 5


def test_exact_output_is_pinned():
    # independent of PYTHONHASHSEED and of the process: a changed value means every benchmark file changes
    assert add_typos("alpha beta gamma", 1.0, 0) == "lapha betar gmma"


def test_numbers_digits_short_words_and_punctuation_kept():
    noisy = add_typos(TEXT, 1.0, 3)
    original, changed = WORD.findall(TEXT), WORD.findall(noisy)
    assert len(original) == len(changed)
    for a, b in zip(original, changed, strict=True):
        if len(a) < 3 or not a.isalpha():
            assert a == b
        else:
            assert a != b and osa_distance(a, b) == 1
    assert re.sub(r"[^\W_]+", "", noisy) == re.sub(r"[^\W_]+", "", TEXT)


def test_rate_is_roughly_honoured_and_levels_nest():
    text = " ".join(("alpha beta gamma delta epsilon zeta theta kappa lambda sigma " * 200).split())
    original = text.split()
    previous: set[int] = set()
    for rate in (0.05, 0.1, 0.2):
        changed = {i for i, (a, b) in enumerate(zip(original, add_typos(text, rate, 1).split(), strict=True)) if a != b}
        assert abs(len(changed) / len(original) - rate) < 0.03
        assert previous <= changed
        previous = changed


@pytest.mark.parametrize("kind", TYPO_KINDS)
def test_each_kind_is_one_edit_away(kind):
    rng = random.Random(5)
    for word in ("vitamin", "Deficiency", "RNA", "aaa", "mice", "STATUTE"):
        for _ in range(30):
            typo = corrupt_word(word, kind, rng)
            assert typo != word
            assert osa_distance(typo, word) == 1 <= 2
            assert typo.isalpha()
            if kind == "deletion":
                assert len(typo) == len(word) - 1
            elif kind == "insertion":
                assert len(typo) == len(word) + 1
            else:
                assert len(typo) == len(word)


def test_keyboard_typos_use_neighbouring_keys():
    assert set(KEYBOARD_NEIGHBOURS["d"]) == set("ersfxc")
    assert set(KEYBOARD_NEIGHBOURS["q"]) == set("wa")
    rng = random.Random(0)
    for _ in range(50):
        typo = corrupt_word("dddd", "keyboard", rng)
        (new,) = set(typo) - {"d"}
        assert new in KEYBOARD_NEIGHBOURS["d"]
    assert all(a in KEYBOARD_NEIGHBOURS[b] for a in KEYBOARD_NEIGHBOURS for b in KEYBOARD_NEIGHBOURS[a])


def test_bad_arguments_speak():
    with pytest.raises(RouterankError, match="outside"):
        add_typos(TEXT, 1.5, 0)
    with pytest.raises(RouterankError, match="unknown typo kind"):
        corrupt_word("word", "swap", random.Random(0))
