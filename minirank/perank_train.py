"""Training PE-Rank (chapter 7, §3.3): alignment, then learning to rank.

* Stage 1, :func:`align`: the encoder and the LLM are frozen; only the projector learns, on text
  reconstruction. The prompt holds one passage vector and an instruction from the paper's Table 7;
  the answer is the passage's text, with the language-model loss on the answer only (eq. 2-3).
  :func:`reconstruct` decodes what the LLM reads from a vector.
* Stage 2, :func:`learn_to_rank`: the projector and the LLM's trainable weights (LoRA here,
  :func:`add_lora`) learn the ranking, the encoder stays frozen. Each step is eq. 8,
  ``L_rank + L_content + 0.2 · L_KL``: ListMLE over the decoding steps of the embedding-only prompt
  (eq. 5), the same on a prompt that also carries the passage texts (eq. 6), and the KL term between
  the two passes (eq. 7; :func:`minirank.perank.kl_between_passes` says which direction and why).

Both loops are plain torch (AdamW, a fixed seed, the data order drawn from it), short enough to read;
a handful of steps runs on a CPU in seconds with a tiny model.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch

from minirank import perank as PR
from minirank import prompts as P
from minirank.forward import device_of, positions
from minirank.objective import lm_loss  # chapter 5's next-token loss on the answer

#: The alignment instructions of the paper's Table 7; ``{embedding}`` is where the passage vector goes.
ALIGNMENT_TEMPLATES = (
    "{embedding} Please provide a reconstruction of the preceding passage.",
    "Passage: {embedding} is about what?",
    "{embedding} Could you give me a different version of the passage above?",
    "Passage: {embedding} Please offer a restatement of the provided passage.",
    "Passage: {embedding}, which means:",
)


class _FrozenEncoding:
    """Encoder outputs computed once per text (the encoder is frozen in both stages)."""

    def __init__(self, encoder):
        self.encoder, self.cache = encoder, {}

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        new = [t for t in dict.fromkeys(texts) if t not in self.cache]
        for text, vector in zip(new, self.encoder.encode(new) if new else []):
            self.cache[text] = vector
        return torch.stack([self.cache[t] for t in texts])


def _chat(tokenizer, user: str) -> str:
    if P.has_chat_template(tokenizer):
        return tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                             add_generation_prompt=True)
    return user + "\n\n"


def alignment_prompt(tokenizer, template: int = 0) -> str:
    """The prompt of a reconstruction example: a Table 7 instruction around one ``<PLACEHOLDER>``."""
    return _chat(tokenizer, ALIGNMENT_TEMPLATES[template].format(embedding=PR.PLACEHOLDER))


def alignment_batch(texts: Sequence[str], tokenizer, templates: Sequence[int], max_text_tokens: int = 48):
    """``(input_ids, attention_mask, labels, slots)`` left-padded: prompt, then the text cut to
    ``max_text_tokens`` and the end-of-turn token; labels -100 on the prompt and on padding."""
    pad = P.pad_token_id(tokenizer)
    placeholder, _ = PR.special_ids(tokenizer)
    rows, targets = [], []
    for text, template in zip(texts, templates):
        prompt = tokenizer.encode(alignment_prompt(tokenizer, template), add_special_tokens=not P.has_chat_template(tokenizer))
        answer = tokenizer.encode(" ".join(text.split()), add_special_tokens=False)[:max_text_tokens]
        answer += [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        rows.append(prompt + answer)
        targets.append([-100] * len(prompt) + answer)
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    labels = torch.tensor([[-100] * (width - len(t)) + t for t in targets])
    return ids, mask, labels, ids == placeholder


def alignment_loss(model, projector, embeddings: torch.Tensor, batch) -> torch.Tensor:
    """Eq. 3 (averaged over the answer tokens): the LM loss of each text given its projected vector.

    ``embeddings``: ``(B, d_enc)`` encoder outputs, one per example of ``batch`` (:func:`alignment_batch`).
    """
    device = device_of(model)
    ids, mask, labels, slots = (t.to(device) for t in batch)
    embeds = PR.splice(model, ids, projector(embeddings.to(device))[:, None, :], slots)
    logits = model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions(mask), use_cache=False).logits
    return lm_loss(logits, labels)


def _optimizer(params, lr: float):
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: no parameter requires a gradient")
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)


def align(model, tokenizer, encoder, projector, texts: Sequence[str], steps: int = 20, batch_size: int = 4,
          lr: float = 1e-3, max_text_tokens: int = 48, seed: int = 0) -> list[dict]:
    """Stage 1: train the projector alone on reconstructing ``texts`` from their vectors (§3.3).

    The LLM's parameters are frozen for the duration (their ``requires_grad`` is restored after), the
    encoder is only called under ``no_grad``. Examples are drawn with ``random.Random(seed)``, each
    with one of the Table 7 templates. Returns the loss per step: ``[{"step", "loss"}, ...]``.
    """
    if not texts:
        raise ValueError("align() needs passages to reconstruct")
    tokenizer = PR.with_perank_tokens(tokenizer)
    encode = _FrozenEncoding(encoder)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    before = {name: p.requires_grad for name, p in model.named_parameters()}
    model.requires_grad_(False)
    projector.requires_grad_(True)
    optimizer = _optimizer(projector.parameters(), lr)
    history = []
    try:
        for step in range(1, steps + 1):
            chosen = [texts[rng.randrange(len(texts))] for _ in range(batch_size)]
            templates = [rng.randrange(len(ALIGNMENT_TEMPLATES)) for _ in chosen]
            batch = alignment_batch(chosen, tokenizer, templates, max_text_tokens)
            with torch.no_grad():
                vectors = encode(chosen)
            loss = alignment_loss(model, projector, vectors, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history.append({"step": step, "loss": float(loss.detach())})
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(before[name])
    return history


@torch.no_grad()
def reconstruct(model, tokenizer, encoder, projector, texts: Sequence[str], max_new_tokens: int = 32,
                template: int = 0) -> list[str]:
    """What the LLM writes back from each text's vector alone (greedy), for the lesson's side-by-side."""
    tokenizer = PR.with_perank_tokens(tokenizer)
    prompt = alignment_prompt(tokenizer, template)
    ids, mask, slots = PR.encode_prompts(tokenizer, [prompt] * len(texts), device_of(model))
    vectors = projector(encoder.encode(list(texts)).to(device_of(model)))[:, None, :]
    embeds = PR.splice(model, ids, vectors, slots)
    out = model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
                         do_sample=False, pad_token_id=P.pad_token_id(tokenizer))
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in out]


# ---------------------------------------------------------------- stage 2

def add_lora(model, r: int = 8, alpha: int = 16, seed: int = 0,
             target_modules: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj")):
    """``model`` with LoRA adapters (peft) on ``target_modules`` (default: all four attention
    projections), the rest frozen; seeded."""
    from peft import LoraConfig, get_peft_model

    from minirank.adapters import quiet_peft

    quiet_peft()  # peft calls a transformers method that transformers 5 deprecates: not the reader's warning
    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                        target_modules=list(target_modules))
    return get_peft_model(model, config)


def ranking_inputs(model, tokenizer, projector, vectors: Sequence[torch.Tensor], queries: Sequence[str],
                   contents: Sequence[Sequence[str]] | None = None, max_passage_tokens: int | None = 32):
    """``(inputs_embeds, attention_mask, candidates)`` of a batch of windows: the prompt of Table 8
    (Table 9 with ``contents``) with each window's projected vectors spliced in."""
    device = device_of(model)
    prompts = [PR.ranking_prompt(q, len(v), tokenizer, None if contents is None else contents[i], max_passage_tokens)
               for i, (q, v) in enumerate(zip(queries, vectors))]
    ids, mask, slots = PR.encode_prompts(tokenizer, prompts, device)
    candidates = PR.pad_vectors([projector(v.to(device)) for v in vectors])
    return PR.splice(model, ids, candidates, slots), mask, candidates


def ranking_losses(model, tokenizer, projector, vectors: Sequence[torch.Tensor], windows, content: bool = True,
                   kl_weight: float = 0.2, max_passage_tokens: int | None = 32) -> dict[str, torch.Tensor]:
    """Eq. 8 for a batch of training windows (:class:`minirank.train.Window`: query, texts, teacher order).

    Returns ``{"rank", "content", "kl", "loss"}``; without ``content`` only eq. 5 (``loss == rank``).
    """
    sizes = [len(w.pids) for w in windows]
    orders = PR.orders_tensor([w.order for w in windows], max(sizes), device_of(model))
    queries = [w.query for w in windows]
    embeds, mask, cands = ranking_inputs(model, tokenizer, projector, vectors, queries)
    logits = PR.teacher_forced_logits(model, embeds, mask, cands, orders, sizes)
    out = {"rank": PR.listmle_over_steps(logits, orders, sizes)}
    if content:
        embeds_c, mask_c, cands_c = ranking_inputs(model, tokenizer, projector, vectors, queries,
                                                   [w.texts for w in windows], max_passage_tokens)
        logits_c = PR.teacher_forced_logits(model, embeds_c, mask_c, cands_c, orders, sizes)
        out["content"] = PR.listmle_over_steps(logits_c, orders, sizes)
        out["kl"] = PR.kl_between_passes(logits, logits_c, orders, sizes)
        out["loss"] = out["rank"] + out["content"] + kl_weight * out["kl"]
    else:
        out["loss"] = out["rank"]
    return out


def learn_to_rank(model, tokenizer, encoder, projector, windows, steps: int = 10, batch_size: int = 2,
                  lr: float = 2e-4, kl_weight: float = 0.2, content: bool = True,
                  max_passage_tokens: int | None = 32, seed: int = 0,
                  callback: Callable[[int, list[dict]], None] | None = None) -> list[dict]:
    """Stage 2: train the projector and the LLM's trainable parameters on teacher orders (§3.3).

    ``windows``: training windows with teacher orders, e.g. :func:`minirank.train.teacher_windows`
    (the graded qrels, as chapter 5). Which LLM weights learn is the caller's choice: wrap the model
    with :func:`add_lora` first (the encoder is never trained). Windows are drawn with
    ``random.Random(seed)``. ``callback(step, history)``, if given, runs after every optimizer step
    with the model in eval mode (a recipe evaluates checkpoints there, :mod:`minirank.recipes.perank`).
    Returns ``[{"step", "loss", "rank", "content", "kl"}, ...]``.
    """
    if not windows:
        raise ValueError("learn_to_rank() needs training windows")
    tokenizer = PR.with_perank_tokens(tokenizer)
    encode = _FrozenEncoding(encoder)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    projector.requires_grad_(True)
    optimizer = _optimizer([*projector.parameters(), *model.parameters()], lr)
    model.train()
    history = []
    try:
        for step in range(1, steps + 1):
            chosen = [windows[rng.randrange(len(windows))] for _ in range(batch_size)]
            with torch.no_grad():
                vectors = [encode(list(w.texts)) for w in chosen]
            losses = ranking_losses(model, tokenizer, projector, vectors, chosen, content, kl_weight, max_passage_tokens)
            optimizer.zero_grad()
            losses["loss"].backward()
            optimizer.step()
            history.append({"step": step, **{k: float(v.detach()) for k, v in losses.items()}})
            if callback is not None:
                model.eval()
                callback(step, history)
                model.train()
    finally:
        model.eval()
    return history
