"""Query likelihood: score = mean log P(query tokens | document) under the same decoder backbone.

A 135M model's yes/no judgement is near random zero-shot, while the likelihood of the query given the
document does separate relevant from irrelevant (UPR, Sachan et al. 2022), so this is the zero-shot baseline.
"""

from __future__ import annotations

from routerank.rerank.pointwise import PointwiseLLMReranker
from routerank.rerank.templates import QLM_PROMPT


class QueryLikelihoodReranker(PointwiseLLMReranker):
    """`qlm[:llm]`: a document's score is the mean log-probability of the query's tokens after a prompt that
    shows the document and asks for a question (module docstring).

    Options are PointwiseLLMReranker's; its yes/no template, instruction and prefix cache play no part in the score."""

    kind = "qlm"

    def doc_ids(self, document: str) -> list[int]:
        """The prompt's token ids up to the query, with the document (cut to `max_doc_tokens`) in its place."""
        passage = self._ids(" " + document)[: self.max_doc_tokens]
        head, _, tail = QLM_PROMPT.partition(" {document}")
        return self._ids(head) + passage + self._ids(tail)

    def _score_query(self, query: str, docs: list[str], bar) -> list[float]:
        query_ids = self._ids(" " + query.strip())
        rows = [self.doc_ids(doc) + query_ids for doc in docs]
        scores = [0.0] * len(rows)
        for batch in self._batches([len(r) for r in rows]):
            values = self._likelihood([rows[i] for i in batch], len(query_ids))
            for i, value in zip(batch, values, strict=True):
                scores[i] = value
            bar.update(len(batch))
        return scores

    def _likelihood(self, rows: list[list[int]], query_len: int) -> list[float]:
        # heavy: torch loads only when a model runs
        import torch

        ids, mask = self.right_pad(rows)
        with torch.inference_mode():
            hidden = self._decoder(input_ids=ids, attention_mask=mask).last_hidden_state
            self.forward_passes += 1
            starts = torch.tensor([len(r) - query_len - 1 for r in rows])
            positions = starts.unsqueeze(1) + torch.arange(query_len)
            picked = hidden[torch.arange(len(rows)).unsqueeze(1), positions.to(self.device)]
            logits = self.model.get_output_embeddings()(picked).to(torch.float32).log_softmax(-1)
            targets = ids[torch.arange(len(rows)).unsqueeze(1), (positions + 1).to(self.device)]
            return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1).mean(-1).cpu().tolist()
