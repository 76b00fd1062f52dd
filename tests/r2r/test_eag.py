from __future__ import annotations

import pytest

from routerank.errors import SpecError
from routerank.r2r.eag import EntityAbstractor


@pytest.fixture(scope="module")
def abstractor():
    return EntityAbstractor("ner+patterns")


def test_same_entity_gets_the_same_placeholder_in_query_and_document(abstractor):
    pair = abstractor.abstract_pair(
        "Did Apple Inc. pay John Smith in 2019?",
        "In 2019, Apple Inc. paid $1,496.5 million to John Smith; Microsoft paid nothing.",
    )
    assert pair.query == "Did [ORG_1] pay [PERSON_1] in [DATE_1]?"
    assert pair.document.startswith("In [DATE_1], [ORG_1] paid [MONEY_1] to [PERSON_1]; [ORG_2] paid")
    assert pair.mapping["[ORG_1]"] == "apple inc." and pair.mapping["[MONEY_1]"] == "$1,496.5 million"


def test_domain_patterns_give_typed_placeholders(abstractor):
    legal = abstractor.abstract_pair(
        "Is Section 302 of the Indian Penal Code applicable?",
        "Section 302 of the Indian Penal Code punishes murder, see Ram v. State.",
    )
    assert "[STATUTE_1]" in legal.query and legal.document.startswith("[STATUTE_1] punishes murder")
    assert "[CASE_1]" in legal.document
    medical = abstractor.abstract_pair("does aspirin prevent colorectal cancer", "Aspirin and colorectal cancer risk")
    assert medical.query == "does [DRUG_1] prevent [DISEASE_1]"
    assert medical.document == "[DRUG_1] and [DISEASE_1] risk"
    finance = abstractor.abstract_pair("What was NASDAQ: AAPL revenue growth?", "Revenue grew 12.5% in fiscal 2020.")
    assert "[TICKER_1]" in finance.query and "[PERCENT_1]" in finance.document


def test_abstraction_is_idempotent(abstractor):
    first = abstractor.abstract_pair(
        "Did Apple Inc. pay John Smith $5 million in 2019?",
        "Apple Inc. paid John Smith $5 million under Article 709 of the Civil Code.",
    )
    again = abstractor.abstract_pair(first.query, first.document)
    assert (again.query, again.document) == (first.query, first.document) and again.mapping == {}


def test_granularity_levels(abstractor):
    text = ("Did Apple Inc. take aspirin?", "Apple Inc. sells aspirin.")
    assert EntityAbstractor("none").abstract_pair(*text).query == text[0]
    ner_only = EntityAbstractor("ner", nlp=abstractor.nlp).abstract_pair(*text)
    assert "[ORG_1]" in ner_only.query and "aspirin" in ner_only.query
    full = abstractor.abstract_pair(*text)
    assert "[DRUG_1]" in full.query and "[DRUG_1]" in full.document
    with pytest.raises(SpecError):
        EntityAbstractor("everything")
    with pytest.raises(SpecError):
        EntityAbstractor(domains=["astrology"])
