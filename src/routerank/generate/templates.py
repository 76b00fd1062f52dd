"""Answer prompts, as data: one template per model family, tested for exact text.

A prompt is a head (the instruction), two worked examples, then the question:

    head  |  ask(example 1) + reply(answer 1)  |  ask(example 2) + reply(answer 2)  |  ask(question)

`ask` ends where the answer begins. The open-book form numbers the context documents; the closed-book form (R0,
no documents) has no context at all, and its own examples. The examples are there because a 135M model told
only to "answer briefly" still answers in sentences; two short worked answers make it copy a span instead.
They are invented text, so no dataset's questions leak into the prompt.

The plain template (v3) also has a yes/no example, and leaves its documents unnumbered. With v2's two extractive
examples and numbered documents, SmolLM2 answered 61-66% of PubMedQA's yes/no questions with a document number
("1") or an example's answer ("1889"), and 10-20% of SQuAD's. On 60 train queries per set with hybrid top 3, v3
raised answer F1 from 0.12 to 0.17 (SQuAD-dev), 0.07 to 0.43 (PubMedQA) and 0.09 to 0.14 (TAT-QA). In the
closed-book prompt the yes/no example comes first: last, its "no" leaked into factoid answers.

Answers change with the wording, so every template carries a version that goes into the generation cache key:
edit a template or its examples, bump its version.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from routerank.errors import SpecError

OPEN_BOOK_INSTRUCTION = "Answer each question with a short phrase copied from the context."
CLOSED_BOOK_INSTRUCTION = "Answer each question with a short phrase."


@dataclass(frozen=True)
class Example:
    """A worked example: context documents (none for closed-book), a question and its short answer."""

    documents: tuple[str, ...]
    question: str
    answer: str


OPEN_BOOK_EXAMPLES = (
    Example(
        (
            "The Eiffel Tower was completed in 1889 for the World's Fair in Paris. It was designed by the engineering "
            "firm of Gustave Eiffel.",
        ),
        "When was the Eiffel Tower completed?",
        "1889",
    ),
    Example(
        (
            "Marie Curie shared the 1903 Nobel Prize in Physics with Pierre Curie and Henri Becquerel for their "
            "research on radioactivity.",
        ),
        "Who shared the 1903 Nobel Prize in Physics with Marie Curie?",
        "Pierre Curie and Henri Becquerel",
    ),
)
CLOSED_BOOK_EXAMPLES = (
    Example((), "What is the capital of France?", "Paris"),
    Example((), "Who wrote Hamlet?", "William Shakespeare"),
)
YES_NO_OPEN_BOOK = Example(
    ("Regular exercise lowered resting blood pressure in all three trial groups compared with controls.",),
    "Does regular exercise lower blood pressure?",
    "yes",
)
YES_NO_CLOSED_BOOK = Example((), "Is the Sun a planet?", "no")

COT_OPEN_INSTRUCTION = (
    "Answer each question from the context. First reason step by step, then give the short answer on a last "
    'line that starts with "Answer:".'
)
COT_CLOSED_INSTRUCTION = (
    "Answer each question. First reason step by step, then give the short answer on a last line that starts "
    'with "Answer:".'
)
COT_OPEN_EXAMPLES = (
    Example(
        OPEN_BOOK_EXAMPLES[0].documents,
        OPEN_BOOK_EXAMPLES[0].question,
        "The context says the tower was completed in 1889 for the World's Fair.\nAnswer: 1889",
    ),
    Example(
        YES_NO_OPEN_BOOK.documents,
        YES_NO_OPEN_BOOK.question,
        "Exercise lowered resting blood pressure in every trial group, so it does.\nAnswer: yes",
    ),
)
COT_CLOSED_EXAMPLES = (
    Example((), "Is the Sun a planet?", "The Sun is a star, and planets orbit stars.\nAnswer: no"),
    Example(
        (),
        "Who wrote Hamlet?",
        "Hamlet is a tragedy by the English playwright William Shakespeare.\nAnswer: William Shakespeare",
    ),
)


@dataclass(frozen=True)
class AnswerTemplate:
    """One model family's prompt for short-answer QA.

    `head` is formatted with {instruction}; `open_ask` with {context} and {question}; `closed_ask` with {question};
    `reply` with {answer}. Each context document becomes `document` (formatted with {n}, from 1, and {text}),
    joined by `separator`.
    """

    name: str
    version: int
    head: str
    open_ask: str
    closed_ask: str
    reply: str
    document: str = "[{n}] {text}"
    separator: str = "\n"
    open_instruction: str = OPEN_BOOK_INSTRUCTION
    closed_instruction: str = CLOSED_BOOK_INSTRUCTION
    open_examples: tuple[Example, ...] = OPEN_BOOK_EXAMPLES
    closed_examples: tuple[Example, ...] = CLOSED_BOOK_EXAMPLES

    def ask(self, question: str, documents: Sequence[str] = ()) -> str:
        """One question's turn up to where its answer begins: open-book with `documents` as the context, closed-book
        without them."""
        if not documents:
            return self.closed_ask.format(question=question)
        context = self.separator.join(self.document.format(n=n, text=text) for n, text in enumerate(documents, 1))
        return self.open_ask.format(context=context, question=question)

    def render(self, question: str, documents: Sequence[str] = ()) -> str:
        """The whole prompt; no `documents` gives the closed-book (R0) prompt, with no context at all."""
        instruction = self.open_instruction if documents else self.closed_instruction
        examples = self.open_examples if documents else self.closed_examples
        parts = [self.head.format(instruction=instruction)]
        for example in examples:
            parts.append(self.ask(example.question, example.documents) + self.reply.format(answer=example.answer))
        parts.append(self.ask(question, documents))
        return "".join(parts)

    @property
    def key(self) -> dict[str, object]:
        """Everything that shapes the prompt, for cache keys."""
        return dict(self.__dict__)


TEMPLATES: dict[str, AnswerTemplate] = {
    # ChatML, as SmolLM2-Instruct and Qwen were tuned on: the instruction is the system turn, each example a
    # user turn and an assistant turn.
    "chatml": AnswerTemplate(
        name="chatml",
        version=2,
        head="<|im_start|>system\n{instruction}<|im_end|>\n",
        open_ask="<|im_start|>user\nContext:\n{context}\n\nQuestion: {question}<|im_end|>\n<|im_start|>assistant\n",
        closed_ask="<|im_start|>user\nQuestion: {question}<|im_end|>\n<|im_start|>assistant\n",
        reply="{answer}<|im_end|>\n",
    ),
    # For base models and families without a chat format: text to complete after an "Answer:" cue.
    # Documents unnumbered, one blank line apart, and a yes/no example in each prompt (see the module docstring).
    "plain": AnswerTemplate(
        name="plain",
        version=3,
        head="{instruction}\n\n",
        open_ask="Context:\n{context}\nQuestion: {question}\nAnswer:",
        closed_ask="Question: {question}\nAnswer:",
        reply=" {answer}\n\n",
        document="{text}",
        separator="\n\n",
        open_examples=(*OPEN_BOOK_EXAMPLES, YES_NO_OPEN_BOOK),
        closed_examples=(YES_NO_CLOSED_BOOK, *CLOSED_BOOK_EXAMPLES),
    ),
    # Chain of thought: reasoning, then a line that starts with "Answer:". Decode it with a stop at a blank line
    # (stops=("\\n\\n",)) and room to reason (max_new_tokens=128), and read the answer with `cot_answer(raw)`.
    "cot": AnswerTemplate(
        name="cot",
        version=1,
        head="{instruction}\n\n",
        open_ask="Context:\n{context}\nQuestion: {question}\nReasoning:",
        closed_ask="Question: {question}\nReasoning:",
        reply=" {answer}\n\n",
        document="{text}",
        separator="\n\n",
        open_instruction=COT_OPEN_INSTRUCTION,
        closed_instruction=COT_CLOSED_INSTRUCTION,
        open_examples=COT_OPEN_EXAMPLES,
        closed_examples=COT_CLOSED_EXAMPLES,
    ),
}

_ANSWER_MARK = re.compile(r"answer\s*:", re.IGNORECASE)


def cot_answer(text: str) -> str:
    """The answer in a chain-of-thought output: the text after the last "Answer:" marker, up to the end of its
    line; with no marker, the last non-empty line. Empty for empty output."""
    marks = list(_ANSWER_MARK.finditer(text))
    if marks:
        return text[marks[-1].end() :].strip().split("\n", 1)[0].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


CHAT_MARKUP = re.compile(r"<\|[^|>]*\|>")  # ChatML turn markers, as a 135M model sometimes writes them into its text


def chatml_task(name: str, instruction: str, examples: Sequence[Example], version: int = 1) -> AnswerTemplate:
    """A ChatML template for a task that is not open-book QA (decomposing, rewriting, writing a passage): the
    instruction as the system turn, each worked example a user turn ("Question: ...") and an assistant turn, the same
    prompt with or without documents."""
    ask = "<|im_start|>user\nQuestion: {question}<|im_end|>\n<|im_start|>assistant\n"
    return AnswerTemplate(
        name=name,
        version=version,
        head="<|im_start|>system\n{instruction}<|im_end|>\n",
        open_ask=ask,
        closed_ask=ask,
        reply="{answer}<|im_end|>\n",
        open_instruction=instruction,
        closed_instruction=instruction,
        open_examples=(),
        closed_examples=tuple(examples),
    )


def get_template(name: str) -> AnswerTemplate:
    """The answer template of that name; an unknown name is refused with the known ones."""
    if name not in TEMPLATES:
        raise SpecError(f"unknown answer template {name!r}", fix=f"choose one of {sorted(TEMPLATES)}")
    return TEMPLATES[name]


def template_for(tokenizer) -> AnswerTemplate:
    """The family's template: ChatML when the tokenizer knows its turn markers, else plain."""
    vocab = tokenizer.get_vocab()
    if "<|im_start|>" in vocab and "<|im_end|>" in vocab:
        return TEMPLATES["chatml"]
    return TEMPLATES["plain"]
