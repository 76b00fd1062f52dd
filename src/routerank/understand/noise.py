"""Seeded typo injection, to measure how retrieval and the speller hold up on misspelled queries.

Each alphabetic word of at least three letters is corrupted with probability `rate` by one edit: a deleted,
inserted or substituted letter, two adjacent letters swapped, or a letter replaced by a neighbouring key on a
QWERTY keyboard. Every edit is one Damerau (OSA) edit, so the typo is at distance 1 from the word.

The randomness is `random.Random` seeded with a string (hashed with sha512, independent of `PYTHONHASHSEED`), so
`(text, rate, seed)` always gives the same output. Each word draws the same numbers whatever the rate, so the words
corrupted at a lower rate are a subset of those at a higher rate, with the same typos: the noise levels are nested.
"""

from __future__ import annotations

import random
import re

from routerank.errors import RouterankError

NOISE_RATES: tuple[float, ...] = (0.0, 0.05, 0.10, 0.20)
"""The typo rates of the benchmark: the share of eligible words corrupted."""

TYPO_KINDS: tuple[str, ...] = ("deletion", "insertion", "substitution", "transposition", "keyboard")
"""The edits `corrupt_word` knows, one chosen uniformly per corrupted word."""

MIN_WORD_LENGTH = 3
"""Words shorter than this are never corrupted (a typo in "of" or "is" says little)."""

_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_WORD = re.compile(r"[^\W_]+")


def _keyboard_neighbours() -> dict[str, str]:
    where = {key: (row, col) for row, keys in enumerate(_ROWS) for col, key in enumerate(keys)}
    neighbours = {}
    for key, (row, col) in where.items():
        near = []
        for other, (r, c) in where.items():
            # rows are staggered by about half a key, so the row below touches columns col-1 and col
            touching = (r == row and abs(c - col) == 1) or (r == row + 1 and c in (col - 1, col))
            touching = touching or (r == row - 1 and c in (col, col + 1))
            if touching:
                near.append(other)
        neighbours[key] = "".join(sorted(near))
    return neighbours


KEYBOARD_NEIGHBOURS: dict[str, str] = _keyboard_neighbours()
"""Each lower-case letter → the letters on the keys touching it on a QWERTY keyboard."""


def _same_case(new: str, old: str) -> str:
    return new.upper() if old.isupper() else new


def corrupt_word(word: str, kind: str, rng: random.Random) -> str:
    """`word` with one typo of `kind` (one of `TYPO_KINDS`), at a position drawn from `rng`; always differs from
    `word` (a transposition of a word of one repeated letter falls back to a substitution)."""
    if kind not in TYPO_KINDS:
        raise RouterankError(f"unknown typo kind {kind!r}", fix=f"choose one of {list(TYPO_KINDS)}")
    if not word:
        raise RouterankError("cannot corrupt an empty word", fix="pass a word of at least one letter")
    i = rng.randrange(len(word))
    if kind == "deletion":
        return word[:i] + word[i + 1 :]
    if kind == "insertion":
        j = rng.randrange(len(word) + 1)
        neighbour = word[min(j, len(word) - 1)]
        return word[:j] + _same_case(rng.choice(_LETTERS), neighbour) + word[j:]
    if kind == "transposition":
        swaps = [j for j in range(len(word) - 1) if word[j].lower() != word[j + 1].lower()]
        if swaps:
            j = rng.choice(swaps)
            return word[:j] + word[j + 1] + word[j] + word[j + 2 :]
        kind = "substitution"
    old = word[i]
    if kind == "keyboard" and old.lower() in KEYBOARD_NEIGHBOURS:
        pool = KEYBOARD_NEIGHBOURS[old.lower()]
    else:
        pool = _LETTERS.replace(old.lower(), "")
    return word[:i] + _same_case(rng.choice(pool), old) + word[i + 1 :]


def add_typos(text: str, rate: float, seed: int | str) -> str:
    """`text` with each alphabetic word of 3+ letters corrupted by one typo with probability `rate`; punctuation,
    spacing, numbers and words with digits are kept. Deterministic for `(text, rate, seed)`; rate 0 is the identity."""
    if not 0.0 <= rate <= 1.0:
        raise RouterankError(f"typo rate {rate} is outside [0, 1]", fix="pass a share of words, e.g. 0.1")
    if rate == 0.0:
        return text
    rng = random.Random(f"{seed}:{text}")
    pieces, last = [], 0
    for match in _WORD.finditer(text):
        word = match.group()
        draw, kind, word_seed = rng.random(), rng.choice(TYPO_KINDS), rng.getrandbits(64)
        if draw < rate and word.isalpha() and len(word) >= MIN_WORD_LENGTH:
            pieces.append(text[last : match.start()])
            pieces.append(corrupt_word(word, kind, random.Random(word_seed)))
            last = match.end()
    pieces.append(text[last:])
    return "".join(pieces)
