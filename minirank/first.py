"""FIRST (chapter 3): rank a window from the logits of the first identifier the model would write.

FIRST (Reddy et al., 2024, §3.2) shows the model the same listwise prompt as generation (chapter 2),
ending with the answer's opening ``[``, runs *one* forward pass, and sorts the window's passages by
the logits of their identifier tokens (``A``, ``B``, ...) at that last position: no decoding.

:func:`identifier_logits` is that readout, and the only one in the book: inference here sorts its
output, and training (chapter 5, :mod:`minirank.train`) puts the ranking loss of FIRST eq. 2 on it.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from minirank import prompts as P
from minirank.forward import last_logits_kwargs, positions
from minirank.listwise import TextListwiseReranker, Window


def identifier_logits(answer_logits: torch.Tensor, identifier_ids: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """FIRST's scores: the logit of each passage's identifier token at the first answer position.

    ``answer_logits``: ``(batch, vocabulary)``, the logits at the position after the prompt's ``[``
    (the last prompt position); ``identifier_ids``: ``(m,)`` token ids shared by the batch, or
    ``(batch, m)`` one row per window. Returns ``(batch, m)`` float32 scores, higher = ranked higher
    (FIRST §3.2). Differentiable, so training (chapter 5) backpropagates through it.
    """
    if answer_logits.dim() != 2:
        raise ValueError(f"answer_logits must be (batch, vocabulary), got shape {tuple(answer_logits.shape)}")
    ids = torch.as_tensor(identifier_ids, dtype=torch.long, device=answer_logits.device)
    if ids.dim() == 1:
        ids = ids.expand(answer_logits.shape[0], -1)
    if ids.dim() != 2 or ids.shape[0] != answer_logits.shape[0]:
        raise ValueError(f"identifier_ids must be (m,) or (batch={answer_logits.shape[0]}, m), got {tuple(ids.shape)}")
    return answer_logits.float().gather(1, ids)


def order_from_scores(scores: Sequence[float]) -> list[int]:
    """Indices by decreasing score, ties in input order (how FIRST ranks a window)."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


class FirstReranker(TextListwiseReranker):
    """FIRST (§3.2): rank a window by the logits of its identifier tokens at the first answer token.

    One forward pass per window; no decoding. Ties keep the input order.
    """

    name = "first"

    def __init__(self, model, tokenizer, window: int = 20, stride: int | None = None, style: str = "alpha",
                 max_passage_tokens: int | None = P.DEFAULT_MAX_PASSAGE_TOKENS, batch_size: int | None = None):
        super().__init__(model, tokenizer, window, stride, style, max_passage_tokens, batch_size)
        # fail at construction, not mid-run, when an identifier is not one token ('[10]')
        self.token_ids = P.identifier_token_ids(tokenizer, self.labels)

    @torch.inference_mode()
    def score_windows(self, prompts: Sequence[str], n_per_prompt: Sequence[int] | int) -> list[list[float]]:
        """For each prompt, the logits of its first ``n`` identifiers at the last prompt position."""
        if isinstance(n_per_prompt, int):
            n_per_prompt = [n_per_prompt] * len(prompts)
        if len(n_per_prompt) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(n_per_prompt)} window sizes")
        for n in n_per_prompt:
            if n < 1 or n > len(self.token_ids):
                raise ValueError(f"a window of {n} passages: expected 1..{len(self.token_ids)} (window={self.window})")
        extra = last_logits_kwargs(self.model)
        scores: list[list[float]] = []
        for part in self._batches(len(prompts)):
            ids, mask = self._encode(prompts[part])
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), use_cache=False, **extra)
            self.stats["model_calls"] += 1
            chosen = identifier_logits(out.logits[:, -1, :], self.token_ids).cpu()
            scores.extend(row[:n].tolist() for row, n in zip(chosen, n_per_prompt[part]))
        return scores

    def order_windows(self, windows: Sequence[Window]) -> list[list[int]]:
        rows = self.score_windows(self.prompts_of(windows), [w.size for w in windows])
        return [order_from_scores(row) for row in rows]
