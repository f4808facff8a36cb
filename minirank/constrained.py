"""Constrained decoding: outputs that can only be permutations (PE-Rank §3.2, Algorithm 1; chapter 7).

Two decoders share one idea: at each step, allow only the candidates not yet placed, and stop after
the last one. A permutation of the window is then the *only* thing the decoder can produce, so there
is nothing to parse and nothing to repair.

* :func:`constrained_decode` is PE-Rank's "dynamic-constrained decoding": the output layer is not the
  vocabulary but the window's projected passage vectors; step ``i`` scores the remaining candidates
  (:func:`step_logits`), takes the best, feeds its vector back as the next input and removes it.
  Exactly ``n`` steps for ``n`` passages.
* :class:`PermutationLogitsProcessor` carries the same constraint over to *text* (issue part 4): a
  ``transformers`` logits processor for prompts that end with ``[``, which allows only the next
  bracket or separator token of ``B] > [A] > ...`` and, at identifier positions, only identifiers not
  yet written; after the ``m``-th identifier's ``]`` it allows only the end-of-turn token.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from minirank import prompts as P
from minirank.forward import cache_kwargs, decoder_of, positions, returned_cache

#: The logit given to candidates already placed (and to padding). Upstream's value (its loss code says
#: -inf gave NaN): log-softmax over a row still works, a KL term multiplies 0 by a finite number.
MASKED = -1e9


def step_logits(hidden: torch.Tensor, candidates: torch.Tensor, remaining: torch.Tensor) -> torch.Tensor:
    """PE-Rank's output layer at one ranking step (§3.2, eq. 4): ``h · E_M(e_p)`` for every candidate.

    ``hidden``: ``(B, d)`` final-norm hidden states; ``candidates``: ``(B, n, d)`` projected passage
    vectors; ``remaining``: ``(B, n)`` bool, True = not yet placed (and not padding). Returns ``(B, n)``
    float32 logits, :data:`MASKED` where ``remaining`` is False. No normalisation, no temperature
    (as the official code).
    """
    if hidden.dim() != 2 or candidates.dim() != 3 or candidates.shape[::2] != hidden.shape:
        raise ValueError(f"hidden must be (B, d) and candidates (B, n, d) with the same B and d; got "
                         f"{tuple(hidden.shape)} and {tuple(candidates.shape)}")
    if remaining.shape != candidates.shape[:2]:
        raise ValueError(f"remaining must be (B, n) = {tuple(candidates.shape[:2])}, got {tuple(remaining.shape)}")
    logits = torch.einsum("bnd,bd->bn", candidates.float(), hidden.float())
    return logits.masked_fill(~remaining.bool(), MASKED)


def _check_sizes(sizes: Sequence[int], width: int) -> torch.Tensor:
    sizes = torch.as_tensor(list(sizes), dtype=torch.long)
    if sizes.dim() != 1 or bool((sizes < 1).any()) or bool((sizes > width).any()):
        raise ValueError(f"window sizes must be 1..{width} (the candidates' width), got {sizes.tolist()}")
    return sizes


@torch.no_grad()
def constrained_decode(model, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                       candidates: torch.Tensor, sizes: Sequence[int],
                       forced: torch.Tensor | None = None) -> tuple[list[list[int]], torch.Tensor, int]:
    """Dynamic-constrained greedy decoding (PE-Rank Algorithm 1): one permutation per window.

    ``inputs_embeds``: ``(B, L, d)`` left-padded prompts with the passage vectors spliced in;
    ``attention_mask``: ``(B, L)``; ``candidates``: ``(B, n, d)`` the same projected vectors, padded
    to ``n``; ``sizes``: the real number of passages of each window. Step ``i`` reads the last hidden
    state, picks the best remaining candidate, and feeds that candidate's vector as the next input
    (with the KV cache). The first pick is a passage (no BOS token is forced first, unlike the
    official code: training never saw one). ``forced``: ``(B, n)`` orders to feed instead of the
    argmax (teacher forcing at inference; a test compares it with the training forward pass).

    Returns ``(orders, logits, calls)``: each window's order (a permutation of ``range(size)``),
    the ``(B, n, n)`` float32 step logits, and the number of model calls (``n``: one prefill, then one
    single-position step per pick but the last).
    """
    batch, n, _ = candidates.shape
    sizes = _check_sizes(sizes, n).to(candidates.device)
    decoder = decoder_of(model)
    arange = torch.arange(n, device=candidates.device)
    remaining = arange[None, :] < sizes[:, None]
    rows = torch.arange(batch, device=candidates.device)
    mask = attention_mask
    out = decoder(inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=positions(mask),
                  **cache_kwargs(decoder, None))
    calls, seen = 1, inputs_embeds
    all_logits, picks = [], []
    for step in range(n):
        logits = step_logits(out.last_hidden_state[:, -1], candidates, remaining)
        pick = logits.argmax(-1) if forced is None else forced[:, step].to(candidates.device)
        active = step < sizes
        if forced is not None and bool((~remaining[rows, pick] & active).any()):
            raise ValueError(f"forced order places a candidate twice or a padding slot at step {step}")
        all_logits.append(logits)
        picks.append(pick)
        remaining = remaining & ~((arange[None, :] == pick[:, None]) & active[:, None])
        if step == n - 1:
            break
        nxt = candidates[rows, pick][:, None, :].to(inputs_embeds.dtype)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        past = returned_cache(out)
        if past is None:  # a model without a cache sees the whole sequence again
            seen = torch.cat([seen, nxt], dim=1)
            out = decoder(inputs_embeds=seen, attention_mask=mask, position_ids=positions(mask), use_cache=False)
        else:
            out = decoder(inputs_embeds=nxt, attention_mask=mask, position_ids=mask.sum(-1, keepdim=True) - 1,
                          **cache_kwargs(decoder, past))
        calls += 1
    chosen = torch.stack(picks, dim=1).tolist()
    orders = [row[:size] for row, size in zip(chosen, sizes.tolist())]
    return orders, torch.stack(all_logits, dim=1), calls


# ---------------------------------------------------------------- the same constraint for text


class PermutationLogitsProcessor:
    """A ``transformers`` logits processor that lets greedy text generation write only permutations.

    For prompts that end with the answer's opening ``[`` (:func:`minirank.prompts.build_prompt`): the
    allowed continuations of ``B] > [A] > [C]`` are worked out from how the tokenizer splits the ideal
    answer (:func:`minirank.prompts.ideal_answer`): the structural tokens between two identifiers
    (``]``, `` >``, `` [`` for the default model), the tokens after the last one, and one token per
    identifier. At an identifier position only identifiers not yet written are allowed; after the
    ``m``-th identifier's closing tokens only ``eos_token_id`` is. ``sizes``: ``m`` per row;
    ``prompt_length``: the width of the (left-padded) prompt batch, so that the generated part of
    ``input_ids`` is ``input_ids[:, prompt_length:]``.

    Identifiers must be single tokens (letters ``A``..``T`` are for the default model; ``[10]`` is
    two tokens and is refused, naming the identifier).
    """

    def __init__(self, tokenizer, sizes: Sequence[int], prompt_length: int, eos_token_id: int,
                 style: str = "alpha"):
        sizes = [int(m) for m in sizes]
        if not sizes or min(sizes) < 1:
            raise ValueError(f"sizes must be window sizes >= 1, got {sizes}")
        if eos_token_id is None:
            raise ValueError("constrained generation needs an end-of-turn token id (eos_token_id) to stop on")
        width = max(*sizes, 2)  # two identifiers at least, to see the separator between them
        self.identifier_ids = P.identifier_token_ids(tokenizer, P.identifiers(width, style))
        self.separator, self.closing = _structure(tokenizer, width, style, self.identifier_ids)
        self.sizes, self.prompt_length, self.eos = sizes, int(prompt_length), int(eos_token_id)

    def allowed(self, generated: Sequence[int], m: int) -> list[int]:
        """The token ids allowed after ``generated`` (the answer so far) for a window of ``m``."""
        written, owed = set(), []
        for token in generated:
            if owed:
                owed.pop(0)  # a structural token (the only one that was allowed)
                continue
            if len(written) == m:
                return [self.eos]  # after the stop token: nothing but stopping again
            written.add(token)
            owed = list(self.closing if len(written) == m else self.separator)
        if owed:
            return [owed[0]]
        if len(written) == m:
            return [self.eos]
        return [t for t in self.identifier_ids[:m] if t not in written]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[0] != len(self.sizes):
            raise ValueError(f"{input_ids.shape[0]} rows but {len(self.sizes)} window sizes")
        keep = torch.zeros_like(scores, dtype=torch.bool)
        for row, m in enumerate(self.sizes):
            keep[row, self.allowed(input_ids[row, self.prompt_length:].tolist(), m)] = True
        return scores.masked_fill(~keep, float("-inf"))  # argmax only: a row always keeps one token


def _structure(tokenizer, width: int, style: str, identifier_ids: Sequence[int]) -> tuple[list[int], list[int]]:
    """The tokens between two identifiers and after the last one, as the tokenizer writes the ideal answer."""
    ids = tokenizer.encode(P.ideal_answer(width, style), add_special_tokens=False)
    where = [i for i, t in enumerate(ids) if t in set(identifier_ids)]
    gaps = {tuple(ids[a + 1:b]) for a, b in zip(where, where[1:])}
    if ids[:1] != [identifier_ids[0]] or len(gaps) != 1:
        raise ValueError(f"the tokenizer does not split the answer {P.ideal_answer(width, style)[:30]!r} "
                         f"into identifier tokens and one repeated separator; constrained generation needs that")
    return list(gaps.pop()), ids[where[-1] + 1:]
