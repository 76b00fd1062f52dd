"""GenRead and HyDE on a scripted LLM: exact prompts, the run that carries generated passages, caching, the
pipeline specs (`genread`, `hyde(...)`, `mix(...)`), and genread joining an R3AG pool."""

from __future__ import annotations

import pytest

from routerank.data.types import Corpus, Document, Query, Ranking
from routerank.errors import RouterankError, SpecError
from routerank.generate import genread
from routerank.generate.context import retrieved_contexts
from routerank.generate.genread import GenRead, HyDE, PassageWriter, clean_passage
from routerank.models.llm import tiny_llm
from routerank.pipeline import Pipeline, build, llm_cost, parse
from routerank.rerank.base import BaseReranker
from routerank.retrieve.bm25 import BM25Retriever

VITAMIN = "Vitamin D is made in the skin under sunlight and keeps bones strong by helping calcium uptake."
CORPUS = Corpus(
    [
        Document("d1", "Sunlight exposure and calcium absorption in bone health."),
        Document("d2", "Cats purr when they are content."),
        Document("d3", "The stock market fell sharply on Monday."),
    ]
)


def scripted_model(outputs: list[str]):
    """A tiny model that writes outputs[i] in its i-th generate() call, then EOS (every row of a batch alike):
    a forward hook on the LM head lifts the next scripted token. A forward over a whole prompt (more than one
    position) starts a new call."""
    model, tokenizer = tiny_llm(seed=1)
    scripts = [[*tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id] for text in outputs]
    state = {"call": -1, "step": 0}

    def start(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and ids.shape[1] > 1:
            state["call"], state["step"] = state["call"] + 1, 0

    def lift(module, inputs, logits):
        script = scripts[min(state["call"], len(scripts) - 1)]
        logits[:, -1, script[min(state["step"], len(script) - 1)]] += 1e4
        state["step"] += 1
        return logits

    model.model.register_forward_pre_hook(start, with_kwargs=True)
    model.lm_head.register_forward_hook(lift)
    return model, tokenizer


def writer_for(outputs: list[str], tmp_path) -> PassageWriter:
    return PassageWriter(loaded=scripted_model(outputs), cache_dir=tmp_path / "generations", max_new_tokens=40)


def test_the_passage_prompt_is_exact(tmp_path):
    writer = writer_for(["x"], tmp_path)
    assert writer.generators[0].prompt("Does vitamin D help bones?") == (
        "<|im_start|>system\nWrite a short background passage of facts that answers the question. Write plain prose, "
        "not a conversation.<|im_end|>\n"
        "<|im_start|>user\nQuestion: Who designed the Eiffel Tower?<|im_end|>\n<|im_start|>assistant\n"
        "The Eiffel Tower is a wrought-iron lattice tower in Paris, completed in 1889 for the World's Fair. It was "
        "designed and built by the engineering company of Gustave Eiffel; the engineers Maurice Koechlin and Emile "
        "Nouguier drew its first plans.<|im_end|>\n"
        "<|im_start|>user\nQuestion: Does vitamin D help bones?<|im_end|>\n<|im_start|>assistant\n"
    )
    second = writer.generators[1].prompt("Does vitamin D help bones?")
    assert "Write a short encyclopedia entry about the subject of the question." in second


def test_clean_passage_drops_markup_and_cuts_at_a_blank_line():
    assert (
        clean_passage("\n\n  Vitamin D  is made\nin skin.\n\nQuestion: more<|im_end|>") == "Vitamin D is made in skin."
    )
    assert clean_passage("<|im_end|>") == ""


def test_genread_returns_generated_passages_in_a_run_that_carries_them(tmp_path):
    reader = GenRead(passages=2, writer=writer_for([VITAMIN, "Bones need calcium."], tmp_path))
    run = reader.search([Query("q1", "does vitamin D help bones")], k=100)
    ids = run["q1"].doc_ids
    assert len(ids) == 2 and all(d.startswith("gen:") for d in ids)
    assert [run.documents[d].text for d in ids] == [VITAMIN, "Bones need calcium."]
    assert all(run.documents[d].metadata["generated"] for d in ids)
    assert list(run["q1"].scores) == sorted(run["q1"].scores, reverse=True)
    assert reader.cost()["llm_calls"] == 2 and reader.cost()["generated_tokens"] > 10
    assert reader.search([Query("q1", "does vitamin D help bones")], k=1)["q1"].doc_ids == ids[:1]
    contexts = retrieved_contexts([Query("q1", "x")], run, CORPUS, 3)
    assert [d.text for d in contexts[0]] == [VITAMIN, "Bones need calcium."]


def test_genread_leaves_out_empty_and_repeated_passages(tmp_path):
    reader = GenRead(passages=3, writer=writer_for([VITAMIN, VITAMIN, ""], tmp_path))
    assert len(reader.search(["does vitamin D help bones"], k=3)["q0"].doc_ids) == 1


def test_genread_passages_are_cached_and_ids_are_stable(tmp_path):
    first = GenRead(writer=writer_for([VITAMIN], tmp_path))
    run = first.search(["does vitamin D help bones"], k=1)
    again = GenRead(writer=writer_for(["something else entirely"], tmp_path))
    rerun = again.search(["does vitamin D help bones"], k=1)
    assert rerun["q0"].doc_ids == run["q0"].doc_ids
    assert rerun.documents[rerun["q0"].doc_ids[0]].text == VITAMIN
    assert again.writer.generators[0].model_calls == 0  # read from the cache, no decoding


def test_genread_refuses_a_bad_passage_count(tmp_path):
    with pytest.raises(RouterankError, match="1 to 3 passages"):
        GenRead(passages=4, writer=writer_for(["x"], tmp_path))


def test_hyde_searches_with_the_query_plus_the_passage(tmp_path):
    bm25 = BM25Retriever()
    bm25.index(CORPUS)
    query = Query("q1", "does vitamin D help")
    assert "d1" not in bm25.search([query], 3)["q1"].doc_ids  # no shared word
    hyde = HyDE(bm25, writer=writer_for([VITAMIN], tmp_path))
    run = hyde.search([query], 3)
    assert run.name == "hyde(bm25)" and run["q1"].doc_ids[0] == "d1"
    assert hyde.last_queries[0].text == f"does vitamin D help {VITAMIN}"
    alone = HyDE(bm25, mode="passage", writer=hyde.writer)
    assert alone.expand([query])[0].text == VITAMIN
    with pytest.raises(RouterankError, match="unknown hyde mode"):
        HyDE(bm25, mode="both", writer=hyde.writer)


class Overlap(BaseReranker):
    """Scores a document by how many of the query's words it holds."""

    name = "overlap"

    def rerank(self, query, docs, top_k=None):
        words = set(query.text.lower().split())
        return Ranking.from_scores({d.id: len(words & set(d.text.lower().split())) for d in docs}, top_k)


@pytest.fixture
def shared_writer(tmp_path, monkeypatch):
    """The writer every spec with the default LLM gets, scripted."""
    writer = writer_for([VITAMIN], tmp_path)
    monkeypatch.setitem(genread._WRITERS, ("smollm2", ()), writer)
    return writer


def test_specs_parse_and_refuse_bad_forms():
    assert parse("hyde(bm25)").children[0].name == "bm25"
    assert parse("hyde(dense,mode=passage)").arg == "mode=passage"
    assert parse("mix(2*hybrid,1*genread)").weights == (2.0, 1.0)
    for bad, message in [
        ("mix(bm25,genread)", "whole count"),
        ("mix(1.5*bm25,1*genread)", "whole count"),
        ("hyde(bm25,dense)", "exactly one"),
    ]:
        with pytest.raises(SpecError, match=message):
            parse(bad)
    for bad, message in [("genread:n=x", "not a whole number"), ("genread:k=2", "bad genread option")]:
        with pytest.raises(SpecError, match=message):
            build(bad, CORPUS, cache=False)


def test_mix_stacks_retrieved_then_generated_and_reranks_both(shared_writer):
    pipeline = build("mix(2*bm25,1*genread)", CORPUS, cache=False)
    run = pipeline.search([Query("q1", "calcium bone health market")], 10)
    ids = run["q1"].doc_ids
    assert ids[:2] == ("d1", "d3") and len(ids) == 3 and ids[2].startswith("gen:")
    assert run.documents[ids[2]].text == VITAMIN
    assert llm_cost(pipeline)["passages"] == 1
    reranking = Pipeline(pipeline, [(Overlap(), 3)], CORPUS)
    reranked = reranking.search([Query("q1", "calcium bone vitamin D skin")], 3)
    assert reranked["q1"].doc_ids[0].startswith("gen:")  # the generated passage holds the query's words
    assert reranked.documents[reranked["q1"].doc_ids[0]].text == VITAMIN


def test_hyde_spec_wraps_a_cached_index(shared_writer):
    pipeline = build("hyde(bm25)", CORPUS, cache=False)
    assert (
        isinstance(pipeline, HyDE) and pipeline.search([Query("q1", "does vitamin D help")], 2)["q1"].doc_ids[0] == "d1"
    )
    cost = llm_cost(pipeline)
    assert (cost["llm_calls"], cost["passages"], cost["cached"]) == (1, 1, 0) and cost["generated_tokens"] > 5
    pipeline.search([Query("q1", "does vitamin D help")], 2)
    assert llm_cost(pipeline)["cached"] == 1
