"""Listwise prompts: a query and a window of passages, each marked ``[A]``, ``[B]``, ... (FIRST §3.1-3.2).

The prompt follows RankGPT / RankZephyr in spirit (the wording is minirank's own): list the passages
with identifiers, repeat the query, ask for all identifiers in decreasing relevance as
``[B] > [A] > [C]``. Two details make the same prompt serve both methods of chapters 2 and 3:

* the assistant turn already holds the opening ``[`` of the answer, so the *next* token the model
  predicts is the letter of the passage it ranks first. Generation (§3.1) continues from there;
  FIRST (§3.2) reads the logits of that one position, restricted to the identifiers' tokens.
* identifiers must be single tokens for FIRST: ``A``..``Z`` are, ``10``..``20`` are not (two digits,
  two tokens), which is why FIRST uses letters. :func:`identifier_token_ids` checks this and says so.
"""
from __future__ import annotations

import re
import string
from collections.abc import Sequence

import torch

STYLES = ("alpha", "numeric")
#: How many identifiers each style has: 26 letters (FIRST §3.2); numbers are unbounded for generation.
MAX_IDENTIFIERS = {"alpha": len(string.ascii_uppercase), "numeric": None}
#: Each passage is cut to this many tokens by default (every reranker and ``minirank demo``): a window of
#: 20 passages is then about 1,400 tokens, which keeps the demo to minutes on a laptop CPU. FIRST and
#: RankGPT show longer passages (pass ``max_passage_tokens=None`` or a larger cut on a GPU).
DEFAULT_MAX_PASSAGE_TOKENS = 64

SYSTEM = ("You are a careful search assistant. You rank passages by how well they answer a search "
          "query, and you answer with identifiers only.")
INSTRUCTION = ("Below are {n} passages, each marked with an identifier in square brackets. Rank them "
               "by their relevance to the search query.\n\nSearch query: {query}")
REQUEST = ("Search query: {query}\n\nRank all {n} passages above from the most to the least relevant "
           "to the search query. Write every identifier exactly once, separated by ' > ', for "
           "example {example}. Answer with the ranking only, without any explanation.")


def identifiers(n: int, style: str = "alpha") -> list[str]:
    """The labels of ``n`` passages, without brackets: ``A, B, ...`` (alpha) or ``1, 2, ...`` (numeric)."""
    if style not in STYLES:
        raise ValueError(f"unknown identifier style {style!r}: expected one of {STYLES}")
    if n < 0:
        raise ValueError(f"number of identifiers must be >= 0, got {n}")
    limit = MAX_IDENTIFIERS[style]
    if limit is not None and n > limit:
        raise ValueError(f"{n} passages need {n} identifiers, but style {style!r} has only {limit} "
                         f"(A..Z); use a window of at most {limit} passages")
    if style == "alpha":
        return list(string.ascii_uppercase[:n])
    return [str(i) for i in range(1, n + 1)]


def bracket(label: str) -> str:
    """``'A'`` -> ``'[A]'``."""
    return f"[{label}]"


def answer_text(order: Sequence[int], style: str = "alpha") -> str:
    """The answer a listwise reranker writes for ``order`` (window indices, best first), *after* the
    prompt's opening ``[``: ``answer_text([1, 0, 2]) == 'B] > [A] > [C]'``. The one home of the answer
    format: training targets (chapter 5), generation budgets (chapter 2) and latency (chapter 6) use it."""
    labels = identifiers(len(order), style)
    if sorted(order) != list(range(len(order))):
        raise ValueError(f"order {list(order)!r} is not a permutation of 0..{len(order) - 1}")
    return " > ".join(bracket(labels[i]) for i in order)[1:]


def ideal_answer(n: int, style: str = "alpha") -> str:
    """The answer for ``n`` passages in window order (``'A] > [B] > [C]'``): the length of every complete answer."""
    return answer_text(range(n), style)


def _label(identifier: str) -> str:
    label = str(identifier).strip()
    if label.startswith("[") and label.endswith("]"):
        label = label[1:-1].strip()
    if not label:
        raise ValueError(f"empty identifier {identifier!r}")
    return label


def identifier_token_ids(tokenizer, ids: Sequence[str]) -> list[int]:
    """The vocabulary id of each identifier (``'A'`` or ``'[A]'``) as the model would write it after ``[``.

    FIRST (§3.2) ranks by one logit per passage, so each label must be exactly one token right after
    the opening bracket; anything else is a ValueError naming the identifier (``'[10]'``: two tokens).
    """
    opening = tokenizer.encode("[", add_special_tokens=False)
    out: list[int] = []
    for identifier in ids:
        label = _label(identifier)
        full = tokenizer.encode("[" + label, add_special_tokens=False)
        if full[:len(opening)] != opening:
            raise ValueError(f"identifier {bracket(label)!r}: this tokenizer merges '[' and {label!r} into "
                             f"one token ({full}), so the label has no token of its own after '['; "
                             f"FIRST needs single-token identifiers (FIRST §3.2)")
        rest = full[len(opening):]
        if len(rest) != 1:
            raise ValueError(f"identifier {bracket(label)!r}: {label!r} is {len(rest)} tokens {rest} for this "
                             f"tokenizer, so FIRST cannot read it from a single logit (FIRST §3.2). Use "
                             f"style='alpha' (A..Z are single tokens) or at most 9 numeric identifiers")
        out.append(rest[0])
    if len(set(out)) != len(out):
        raise ValueError(f"identifiers {list(ids)} map to repeated token ids {out}; each needs its own token")
    return out


def truncate_passages(texts: Sequence[str], tokenizer, max_tokens: int | None) -> list[str]:
    """Each passage on one line, cut to at most ``max_tokens`` tokens (None: no limit).

    The cut is a prefix of the passage (whitespace runs folded to one space): the text up to where the
    first token past the budget starts, shortened token by token if it re-encodes to more tokens. It
    never ends inside a character, which decoding the first ``max_tokens`` byte-level tokens would do
    for CJK, Arabic, emoji or combining marks.
    """
    flat = [" ".join(str(t).split()) for t in texts]
    if max_tokens is None or not flat:
        return flat
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0:
        raise ValueError(f"max_passage_tokens must be a positive integer (or None), got {max_tokens!r}")
    try:
        encoded = tokenizer(flat, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoded["offset_mapping"]
    except (NotImplementedError, TypeError, KeyError, ValueError):  # a slow tokenizer has no offsets
        encoded, offsets = tokenizer(flat, add_special_tokens=False), None
    out = []
    for i, (text, ids) in enumerate(zip(flat, encoded["input_ids"])):
        if len(ids) <= max_tokens:
            out.append(text)
            continue
        if offsets is None:
            cut = tokenizer.decode(ids[:max_tokens]).rstrip("\ufffd").strip()
            out.append(cut if text.startswith(cut) else "")
            continue
        starts = [start for start, _ in offsets[i]]
        keep = max_tokens
        cut = text[:starts[keep]].rstrip()
        while keep > 0 and len(tokenizer.encode(cut, add_special_tokens=False)) > max_tokens:
            keep -= 1
            cut = text[:starts[keep]].rstrip()
        out.append(cut)
    return out


def _example(labels: Sequence[str]) -> str:
    if len(labels) == 1:
        return bracket(labels[0])
    if len(labels) == 2:
        return f"{bracket(labels[1])} > {bracket(labels[0])}"
    return " > ".join(bracket(x) for x in (labels[1], labels[2], labels[0]))


def messages(query: str, passages: Sequence[str], style: str = "alpha") -> list[dict[str, str]]:
    """The chat messages (system, user) of one window, passages already truncated."""
    if len(passages) == 0:
        raise ValueError("a listwise prompt needs at least one passage; got an empty candidate list")
    labels = identifiers(len(passages), style)
    query = " ".join(str(query).split())
    listing = "\n".join(f"{bracket(label)} {text}" for label, text in zip(labels, passages))
    user = "\n\n".join([INSTRUCTION.format(n=len(labels), query=query), listing,
                        REQUEST.format(n=len(labels), query=query, example=_example(labels))])
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def build_prompt(query: str, passages: Sequence[str], tokenizer, style: str = "alpha",
                 max_passage_tokens: int | None = DEFAULT_MAX_PASSAGE_TOKENS) -> str:
    """The full prompt text of one window, ending with the answer's opening ``[`` (FIRST §3.2).

    With a chat template: system + user turns and the generation prompt (templates that reject a
    system turn get it folded into the user turn). Without one: the same text as plain paragraphs
    followed by ``Ranking: [``.
    """
    if len(passages) == 0:
        raise ValueError("a listwise prompt needs at least one passage; got an empty candidate list")
    identifiers(len(passages), style)  # too many passages for the style: fail before tokenizing
    chat = messages(query, truncate_passages(passages, tokenizer, max_passage_tokens), style)
    if has_chat_template(tokenizer):
        try:
            text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        except Exception:  # e.g. templates that raise on a system turn
            merged = [{"role": "user", "content": chat[0]["content"] + "\n\n" + chat[1]["content"]}]
            text = tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)
        return text + "["
    return f"{chat[0]['content']}\n\n{chat[1]['content']}\n\nRanking: ["


def encode(tokenizer, prompts: Sequence[str], device: torch.device | str | None = None):
    """Token ids of ``prompts``, left-padded into one batch: ``(input_ids, attention_mask)``.

    Left padding puts every prompt's last token in the last column, where FIRST reads its logits and
    generation appends. Chat prompts already hold their special tokens; plain prompts get the
    tokenizer's own (e.g. a BOS).
    """
    if len(prompts) == 0:
        raise ValueError("no prompts to encode")
    special = not has_chat_template(tokenizer)
    rows = [tokenizer.encode(p, add_special_tokens=special) for p in prompts]
    pad = pad_token_id(tokenizer)
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
    return ids.to(device), mask.to(device)


def pad_token_id(tokenizer) -> int:
    for value in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if value is not None:
            return int(value)
    return 0


IDENTIFIER_PATTERNS = {"alpha": re.compile(r"\[\s*([A-Z])\s*\]"), "numeric": re.compile(r"\[\s*(\d+)\s*\]")}
