"""A spelling corrector whose dictionary is the corpus being searched (on symspellpy).

A general-purpose speller "corrects" the rare terms a domain lives on (a drug, a statute, a gene). This one knows
only the corpus's own words, so it changes a query word only when the corpus has never seen it, and only into a word
the corpus uses at least `min_count` times. Candidates come from symspellpy's symmetric-delete lookup: the closest
edit distance first (Damerau-OSA), then the most frequent word in the corpus.

The rules, each there to avoid a harmful edit:

- a word the corpus contains (even once) is left alone;
- numbers, words with a digit (`IL6`, `covid19`) and words shorter than `min_length` are never touched;
- nor are symbols and acronyms: words in mixed case (`dLNs`, `aPKCz`) and UPPER-case words of up to
  `ACRONYM_LENGTH` letters (`PGK`), which a corpus often lacks and which no edit makes right;
- punctuation and spacing stay as they are; only the misspelled words' characters change;
- the casing style of the original word (lower, Title, UPPER) is given to the replacement.

Each `Correction` lists its `Edit`s as character spans of the original query, so a caller can show or undo them.

The vocabulary (word counts) is saved as a TSV beside a JSON header; `speller_for` caches it under
`cache_root()/spellers/` keyed by corpus fingerprint and settings, so counting a corpus is paid once. symspellpy is an
optional dependency (`pip install 'routerank[understand]'`), imported only when a speller is built.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from routerank.data.types import Corpus
from routerank.errors import CorruptIndexError, MissingDependencyError, SpecError
from routerank.fsutil import atomic_dir, cache_root

SETTINGS: dict[str, str] = {
    "max_edit_distance": "the largest edit distance a correction may have: 1 is safer, 2 fixes more of the "
    "typos of long words; choose on train/dev queries with injected typos (`noise.add_typos`)",
    "min_count": "how often the corpus must use a word for it to be proposed: 2 keeps the corpus's own one-off "
    "typos out of the suggestions; raise it on noisy corpora, choose on train/dev",
    "prefix_length": "symspellpy's prefix length: 7 is its default, a speed/memory trade with no effect on quality "
    "for words up to that long",
    "lowercase": "count and look up words case-insensitively (True), or keep case as a distinction (False)",
    "min_length": "words shorter than this are never corrected (3: short words are too ambiguous to fix)",
}
"""The knobs of `CorpusSpeller.from_corpus`, and how to choose them: the two that matter for quality,
`max_edit_distance` (1 or 2) and `min_count`, are to be chosen on train/dev queries, never on test."""

VOCABULARY_FILE = "vocabulary.tsv"
HEADER_FILE = "speller.json"
FORMAT_VERSION = 1
ACRONYM_LENGTH = 4
"""UPPER-case words up to this long are taken for acronyms (`IBP`, `SFM`) and never corrected."""
_TOKEN = re.compile(r"[^\W_]+")


@dataclass(frozen=True, slots=True)
class SpellerSettings:
    """How a speller is built and what it may change; see `SETTINGS` for each knob and how to choose it."""

    max_edit_distance: int = 2
    min_count: int = 2
    prefix_length: int = 7
    lowercase: bool = True
    min_length: int = 3

    def __post_init__(self) -> None:
        if self.max_edit_distance < 1:
            raise SpecError(
                f"max_edit_distance={self.max_edit_distance} corrects nothing", fix="use 1 or 2 (see SETTINGS)"
            )
        if self.prefix_length <= self.max_edit_distance:
            raise SpecError(
                f"prefix_length={self.prefix_length} must exceed max_edit_distance={self.max_edit_distance}",
                fix="keep the default prefix_length=7",
            )
        if self.min_count < 1 or self.min_length < 1:
            raise SpecError("min_count and min_length must be at least 1", fix="use the defaults 2 and 3")

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> SpellerSettings:
        """Settings from keyword arguments; an unknown name raises `SpecError` naming the known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise SpecError(f"unknown speller settings {unknown}", fix=f"choose among {sorted(known)}")
        return cls(**settings)

    @property
    def key(self) -> str:
        """12 hex digits naming these settings in cache paths."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Edit:
    """One corrected word: `original[start:end]` of the query became `replacement`, `distance` edits away, a word the
    corpus uses `count` times."""

    start: int
    end: int
    original: str
    replacement: str
    distance: int
    count: int


@dataclass(frozen=True, slots=True)
class Correction:
    """A corrected query: its text and the edits made, as spans of the original query, left to right."""

    original: str
    text: str
    edits: tuple[Edit, ...] = ()

    @property
    def changed(self) -> bool:
        """Whether any word was corrected."""
        return bool(self.edits)


def count_words(corpus: Corpus, lowercase: bool = True) -> Counter[str]:
    """How often each token (a run of letters and digits) occurs in the corpus's titles and texts."""
    counts: Counter[str] = Counter()
    for doc in corpus.documents:
        text = doc.full_text.lower() if lowercase else doc.full_text
        counts.update(_TOKEN.findall(text))
    return counts


def _symbol_like(word: str) -> bool:
    mixed = not (word.islower() or word.isupper() or (word[:1].isupper() and word[1:].islower()))
    return mixed or (word.isupper() and len(word) <= ACRONYM_LENGTH)


def _match_case(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper() and like[1:].islower():
        return word[:1].upper() + word[1:]
    return word


def _symspell(counts: Mapping[str, int], settings: SpellerSettings) -> tuple[Any, Any]:
    try:
        from symspellpy import SymSpell, Verbosity  # deferred: optional dependency, needed once a speller is built
    except ImportError as error:
        raise MissingDependencyError(
            "the corpus speller needs symspellpy", fix="pip install 'routerank[understand]'"
        ) from error
    index = SymSpell(settings.max_edit_distance, settings.prefix_length, settings.min_count)
    for word, count in counts.items():
        if count >= settings.min_count:
            index.create_dictionary_entry(word, count)
    return index, Verbosity.CLOSEST


class CorpusSpeller:
    """Corrects the query words a corpus has never seen into close words it uses often (see the module docstring)."""

    def __init__(
        self, counts: Mapping[str, int], settings: SpellerSettings | None = None, corpus_fingerprint: str = ""
    ):
        """`counts`: word → occurrences in the corpus (lower-cased if `settings.lowercase`); `corpus_fingerprint`:
        the corpus they were counted from, kept to tell a stale saved vocabulary from a current one."""
        self.settings = settings or SpellerSettings()
        self.counts: dict[str, int] = {w: int(c) for w, c in counts.items() if c > 0}
        self.corpus_fingerprint = corpus_fingerprint
        self._index, self._closest = _symspell(self.counts, self.settings)

    @classmethod
    def from_corpus(
        cls,
        corpus: Corpus,
        max_edit_distance: int = 2,
        min_count: int = 2,
        prefix_length: int = 7,
        lowercase: bool = True,
        min_length: int = 3,
    ) -> CorpusSpeller:
        """Count the corpus's words and index them; each argument is described in `SETTINGS`."""
        settings = SpellerSettings(max_edit_distance, min_count, prefix_length, lowercase, min_length)
        return cls(count_words(corpus, lowercase), settings, corpus.fingerprint)

    @property
    def fingerprint(self) -> str:
        """sha256 over the settings and the word counts: equal fingerprints correct every query the same way."""
        h = hashlib.sha256(json.dumps(asdict(self.settings), sort_keys=True).encode())
        for word, count in sorted(self.counts.items()):
            h.update(f"{word}\t{count}\n".encode())
        return h.hexdigest()

    def known(self, word: str) -> bool:
        """Whether the corpus contains `word` (in the speller's case folding)."""
        return (word.lower() if self.settings.lowercase else word) in self.counts

    def suggest(self, word: str) -> tuple[str, int, int] | None:
        """The best replacement of an unknown `word` as (word, distance, count), or None when there is none within
        `max_edit_distance` (or the word is known, has a digit, is too short, or looks like a symbol or acronym)."""
        if len(word) < self.settings.min_length or not word.isalpha() or self.known(word) or _symbol_like(word):
            return None
        key = word.lower() if self.settings.lowercase else word
        found = self._index.lookup(key, self._closest, self.settings.max_edit_distance)
        if not found:
            return None
        best = min(found, key=lambda s: (s.distance, -s.count, s.term))
        return best.term, best.distance, best.count

    def correct(self, query: str) -> Correction:
        """The query with each unknown word replaced by its best suggestion, casing style kept."""
        pieces, edits, last = [], [], 0
        for match in _TOKEN.finditer(query):
            word = match.group()
            best = self.suggest(word)
            if best is None:
                continue
            term, distance, count = best
            replacement = _match_case(term, word)
            pieces += [query[last : match.start()], replacement]
            edits.append(Edit(match.start(), match.end(), word, replacement, distance, count))
            last = match.end()
        pieces.append(query[last:])
        return Correction(query, "".join(pieces), tuple(edits))

    def correct_all(self, queries: list[str]) -> list[Correction]:
        """`correct` of each query, in order."""
        return [self.correct(q) for q in queries]

    def save(self, folder: str | Path) -> Path:
        """Write the vocabulary (TSV of word, count; most frequent first) and a JSON header with the settings and
        fingerprints, swapping the folder into place atomically."""
        folder = Path(folder)
        header = {
            "format": FORMAT_VERSION,
            "settings": asdict(self.settings),
            "corpus_fingerprint": self.corpus_fingerprint,
            "fingerprint": self.fingerprint,
            "words": len(self.counts),
        }
        rows = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))
        with atomic_dir(folder) as tmp:
            (tmp / VOCABULARY_FILE).write_text("".join(f"{w}\t{c}\n" for w, c in rows), encoding="utf-8")
            (tmp / HEADER_FILE).write_text(json.dumps(header, indent=2) + "\n", encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> CorpusSpeller:
        """Read a saved speller; a missing, truncated or altered file raises `CorruptIndexError`."""
        folder = Path(folder)
        header_path, vocabulary_path = folder / HEADER_FILE, folder / VOCABULARY_FILE
        try:
            header = json.loads(header_path.read_text(encoding="utf-8"))
            counts = {}
            for number, line in enumerate(vocabulary_path.read_text(encoding="utf-8").splitlines(), start=1):
                word, _, count = line.partition("\t")
                if not word or not count.isdigit():
                    raise CorruptIndexError("expected `word<TAB>count`", path=vocabulary_path, line=number)
                counts[word] = int(count)
            settings = SpellerSettings.of(header["settings"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CorruptIndexError(
                f"cannot read the saved speller ({error})", path=folder, fix="delete the folder and build it again"
            ) from error
        speller = cls(counts, settings, header.get("corpus_fingerprint", ""))
        if speller.fingerprint != header.get("fingerprint"):
            raise CorruptIndexError(
                "the vocabulary does not match its recorded fingerprint",
                path=folder,
                fix="delete the folder and build it again",
            )
        return speller


def speller_folder(corpus: Corpus, settings: SpellerSettings) -> Path:
    """Where `speller_for` caches the speller of a corpus with these settings."""
    return cache_root() / "spellers" / f"{corpus.fingerprint[:16]}-{settings.key}"


def speller_for(corpus: Corpus, **settings: Any) -> CorpusSpeller:
    """The corpus's speller, built once and cached under `cache_root()/spellers/`; `settings` as in
    `CorpusSpeller.from_corpus` (an unknown name raises `SpecError`). A corrupt cache entry is rebuilt."""
    chosen = SpellerSettings.of(settings)
    folder = speller_folder(corpus, chosen)
    if (folder / HEADER_FILE).exists():
        try:
            speller = CorpusSpeller.load(folder)
        except CorruptIndexError:
            speller = None
        if speller is not None and speller.corpus_fingerprint == corpus.fingerprint and speller.settings == chosen:
            return speller
    speller = CorpusSpeller(count_words(corpus, chosen.lowercase), chosen, corpus.fingerprint)
    speller.save(folder)
    return speller
