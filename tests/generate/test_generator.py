from __future__ import annotations

import pytest

from routerank.data.types import Document, Query
from routerank.errors import RouterankError
from routerank.generate import Generator, score_answers

QUERIES = [
    Query("q1", "Which team won Super Bowl 50?", ("Denver Broncos",)),
    Query("q2", "Who lost Super Bowl 50?", ("Carolina Panthers",)),
    Query("q3", "Where was it played?", ("Levi's Stadium", "Santa Clara")),
]
CONTEXTS = [
    [Document("d1", "The Denver Broncos defeated the Carolina Panthers 24-10.", "Super Bowl 50")],
    [Document("d1", "The Denver Broncos defeated the Carolina Panthers 24-10.", "Super Bowl 50"), "Cats purr."],
    [],
]


def make(loaded, tmp_path=None, **options) -> Generator:
    options.setdefault("progress", False)
    if tmp_path is None:
        options["cache"] = False
    return Generator("tiny", loaded=loaded, cache_dir=tmp_path, **options)


def test_batched_left_padded_generation_equals_one_unpadded_generate_per_prompt(tiny):
    import torch

    model, tokenizer = tiny
    generator = make(tiny, max_new_tokens=6, stops=(), batch_size=3)
    answers = generator.generate(QUERIES, CONTEXTS)
    assert generator.model_calls == 1
    for query, docs, answer in zip(QUERIES, CONTEXTS, answers, strict=True):
        ids = torch.tensor([tokenizer(generator.prompt(query.text, docs))["input_ids"]])
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                eos_token_id=generator.eos_ids, pad_token_id=generator.pad_id,
            )  # fmt: skip
        tokens = out[0, ids.shape[1] :].tolist()
        assert answer.raw == tokenizer.decode(tokens, skip_special_tokens=True)
        assert answer.stopped_by == "length" and answer.prompt_tokens == ids.shape[1]


def test_r0_prompt_has_no_context(tiny):
    generator = make(tiny)
    prompt = generator.prompt("Who lost Super Bowl 50?")
    assert prompt == generator.template.render("Who lost Super Bowl 50?") and "Context" not in prompt
    assert "Carolina" in generator.prompt("Who lost Super Bowl 50?", CONTEXTS[0])
    answer = generator.generate([QUERIES[1]], None)[0]
    assert answer.context.used == () and answer.context.tokens == 0


@pytest.mark.slow  # ~5 s on 2 idle cores: out of the fast lane
def test_a_newline_stops_decoding_and_is_cut_off(scripted):
    generator = make(scripted("Denver Broncos.\nQuestion: who else?"))
    answer = generator.generate(["Who won?"])[0]
    assert answer.text == "Denver Broncos" and answer.stopped_by == "stop"
    assert answer.raw == "Denver Broncos.\n"  # decoding ended at the stop, not at the script's end


def test_leading_newlines_do_not_stop_and_eos_ends_the_answer(scripted):
    answer = make(scripted("\nParis"), stops=("\n",)).generate(["Where?"])[0]
    assert answer.text == "Paris" and answer.stopped_by == "eos" and answer.raw == "\nParis"


def test_a_custom_stop_string_list(scripted):
    answer = make(scripted("It is Paris, I think\nmore"), stops=(", I", "\n")).generate(["Where?"])[0]
    assert answer.text == "It is Paris" and answer.stopped_by == "stop"


def test_max_new_tokens_limits_the_answer(scripted):
    answer = make(scripted("one two three four five six"), max_new_tokens=3).generate(["Count"])[0]
    assert answer.raw == "one two three" and answer.stopped_by == "length"


def test_the_context_budget_truncates_and_says_so(tiny):
    long_doc = Document("long", "Broncos " * 200)
    generator = make(tiny, context_tokens=50, min_doc_tokens=10, max_new_tokens=2)
    answer = generator.generate([QUERIES[0]], [[long_doc, CONTEXTS[0][0]]])[0]
    assert answer.context.used == ("long",) and answer.context.truncated == ("long",)
    assert answer.context.dropped == ("d1",) and answer.context.tokens == 50
    prompt = generator.prompt(QUERIES[0].text, answer.context)
    assert "Broncos " * 20 in prompt and "Broncos " * 30 not in prompt and "24-10" not in prompt
    assert answer.prompt_tokens == len(generator.tokenizer(prompt)["input_ids"])


def test_em_f1_wiring_through_generate(scripted):
    generator = make(scripted("the Denver Broncos."))
    answers = generator.generate(QUERIES[:2], CONTEXTS[:2])
    assert [a.text for a in answers] == ["the Denver Broncos", "the Denver Broncos"]
    scores = score_answers(QUERIES[:2], answers)
    assert scores.per_query == {"q1": (1.0, 1.0), "q2": (0.0, 0.0)}
    assert (scores.em, scores.f1, scores.n) == (0.5, 0.5, 2)


def test_a_rerun_is_served_from_the_cache_without_the_model(tiny, tmp_path):
    first = make(tiny, tmp_path, max_new_tokens=4)
    answers = first.generate(QUERIES, CONTEXTS)
    assert first.model_calls == 1 and not any(a.cached for a in answers) and len(first.cache) == 3

    from routerank.models.llm import tiny_llm

    broken, tokenizer = tiny_llm(seed=5)

    def refuse(*args, **kwargs):
        raise AssertionError("the model was called")

    broken.register_forward_pre_hook(refuse)
    again = make((broken, tokenizer), tmp_path, max_new_tokens=4)
    cached = again.generate(QUERIES, CONTEXTS)
    assert again.model_calls == 0 and all(a.cached for a in cached)
    assert [a.raw for a in cached] == [a.raw for a in answers]
    assert [a.context for a in cached] == [a.context for a in answers]
    edited = [[Document("d1", "The Broncos won.", "Super Bowl 50")], *CONTEXTS[1:]]
    with pytest.raises(AssertionError, match="model was called"):  # same ids, new text: a new key
        again.generate(QUERIES, edited)
    assert make(tiny, tmp_path, max_new_tokens=5).key != first.key  # other settings, other file


def test_a_killed_run_keeps_finished_batches_and_resumes(tiny, tmp_path):
    model, tokenizer = tiny
    generator = make(tiny, tmp_path, max_new_tokens=3, batch_size=1)
    real = model.generate
    calls = {"n": 0}

    def killed_on_second_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    model.generate = killed_on_second_batch
    try:
        with pytest.raises(KeyboardInterrupt):
            generator.generate(QUERIES, CONTEXTS)
    finally:
        del model.generate
    assert len(generator.cache) == 1
    resumed = make(tiny, tmp_path, max_new_tokens=3, batch_size=1)
    answers = resumed.generate(QUERIES, CONTEXTS)
    assert resumed.model_calls == 2 and sum(a.cached for a in answers) == 1


def test_bad_input_is_refused(tiny):
    generator = make(tiny)
    with pytest.raises(RouterankError, match="3 queries but 2 context lists"):
        generator.generate(QUERIES, CONTEXTS[:2])
    with pytest.raises(RouterankError, match="max_new_tokens"):
        make(tiny, max_new_tokens=0)
    with pytest.raises(RouterankError, match="exceeds the model's 2048"):
        make(tiny, context_tokens=5000).generate(["q"], [["word " * 3000]])
    with pytest.raises(RouterankError, match="no gold answers"):
        score_answers([Query("q", "x")], generator.generate(["x"]))


def test_importing_the_generator_loads_no_torch_and_nothing_above_its_layer():
    import subprocess
    import sys

    code = (
        "import sys\nfrom routerank.generate import Generator, score_answers, gold_contexts\n"
        "above = tuple('routerank.' + m for m in ('pipeline', 'route', 'train', 'experiments', 'cli'))\n"
        "print(sorted(m for m in sys.modules if m in ('torch', 'transformers') or m.startswith(above)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_with_template_shares_the_model_but_not_the_cache(tiny, tmp_path):
    chat = make(tiny, tmp_path)
    plain = chat.with_template("plain")
    assert plain.model is chat.model and plain.template.name == "plain" and chat.template.name == "chatml"
    assert plain.key != chat.key and plain.cache.path != chat.cache.path
    assert plain.prompt("Who won?").endswith("Question: Who won?\nAnswer:")


YES_NO = [
    Query("p1", "Does aspirin lower the risk of heart attack?", ("yes",)),
    Query("p2", "Do statins raise cholesterol?", ("no",)),
    Query("p3", "Is it?", ("maybe",)),
]
EVIDENCE = [
    [Document("d1", "Aspirin reduces the risk of heart attack in adults over fifty.", "Aspirin")],
    [Document("d2", "Statins lower cholesterol.", "Statins"), "A second, unrelated passage about cats."],
    [],
]


def test_closed_set_answers_in_one_padded_batch_equal_one_unpadded_forward_per_prompt(tiny):
    import torch

    model, tokenizer = tiny
    generator = make(tiny, choices=("yes", "no", "maybe"), batch_size=3, template="plain")
    firsts = [tokenizer(f" {c}", add_special_tokens=False)["input_ids"][0] for c in ("yes", "no", "maybe")]
    assert generator.choice_ids == firsts  # the plain template's reply starts " {answer}"
    chat = make(tiny, choices=("yes", "no", "maybe"), template="chatml")  # ChatML's starts "{answer}": no space
    assert chat.choice_ids == [tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in ("yes", "no", "maybe")]
    answers = generator.generate(YES_NO, EVIDENCE)
    assert generator.model_calls == 1 and len({a.prompt_tokens for a in answers}) == 3  # three lengths: padding
    for query, docs, answer in zip(YES_NO, EVIDENCE, answers, strict=True):
        ids = torch.tensor([tokenizer(generator.prompt(query.text, docs))["input_ids"]])
        with torch.inference_mode():
            logits = model(input_ids=ids).logits[0, -1, generator.choice_ids]
        assert answer.text == answer.raw == ("yes", "no", "maybe")[int(logits.argmax())]
        assert answer.stopped_by == "choice" and answer.prompt_tokens == ids.shape[1]
    assert generator.settings()["decoding"] == "choice among ['yes', 'no', 'maybe']"
    assert generator.key != make(tiny).key and make(tiny).settings()["decoding"] == "greedy"


@pytest.mark.slow  # ~5 s on 2 idle cores: out of the fast lane
def test_closed_set_answers_follow_the_model_and_score_as_exact_matches(scripted):
    generator = make(scripted(" no"), choices=("yes", "no", "maybe"), template="plain")
    answers = generator.generate(YES_NO, EVIDENCE)
    assert [a.text for a in answers] == ["no", "no", "no"]  # the first call is lifted towards " no"
    assert score_answers(YES_NO, answers).em == pytest.approx(1 / 3)


def test_bad_choices_are_refused_before_anything_is_generated(tiny):
    with pytest.raises(RouterankError, match="distinct, non-empty"):
        make(tiny, choices=("yes", "yes"))
    with pytest.raises(RouterankError, match="distinct, non-empty"):
        make(tiny, choices=("yes", " "))
    with pytest.raises(RouterankError, match="share a first token"):
        make(tiny, choices=("maybe", "maybe not"))
