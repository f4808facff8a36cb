"""Chapter 5: LoRA fine-tuning with FIRST's joint objective (FIRST §3.2, eq. 1-3).

A tiny random Llama (minirank.models.tiny_model) with the real tokenizer: the examples, the loss positions
and the Trainer are the real ones, only the network is small. Everything here runs in well under a minute.
"""
import json

import pytest
import torch

from minirank import adapters as AD
from minirank import losses as LOSSES
from minirank import prompts as P
from minirank import train as T
from minirank.models import tiny_model

PASSAGES = ["Paris is the capital and largest city of France.", "Bananas are yellow when ripe.",
            "The Eiffel Tower stands in Paris, France.", "Berlin is the capital of Germany."]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models run best on one thread


def windows():
    return [T.make_window("q1", "capital of france", ["p1", "p2", "p3", "p4"], PASSAGES, [0, 2, 3, 1], [3, 0, 2, 1]),
            T.make_window("q2", "yellow fruit", ["p1", "p2", "p3"], PASSAGES[:3], [1, 0, 2], [0, 3, 0]),
            T.make_window("q3", "german capital", ["p4", "p1", "p2", "p3"], [PASSAGES[3], *PASSAGES[:3]],
                          [0, 1, 3, 2]),  # a teacher run's strict ordering: labels derived from ranks
            T.make_window("q4", "eiffel tower", ["p3", "p2"], [PASSAGES[2], PASSAGES[1]], [0, 1], [2, 0])]


@pytest.fixture
def examples(tok):
    return T.build_examples(windows(), tok, max_passage_tokens=12)


def config(**kw):
    values = dict(model="tiny-test", max_steps=4, save_steps=2, logging_steps=1, learning_rate=5e-2, seed=3)
    values.update(kw)
    return T.TrainConfig(**values)


# ------------------------------------------------------------------ examples and their loss positions

def test_example_masks_everything_but_the_permutation(tok, examples):
    ex = examples[0]
    assert ex["target"] == "A] > [C] > [D] > [B]"
    prompt_ids = tok.encode(ex["prompt"], add_special_tokens=False)
    n = len(prompt_ids)
    assert ex["input_ids"][:n] == prompt_ids  # the prompt exactly as FIRST sees it at inference
    assert ex["labels"][:n] == [-100] * n
    answer = ex["labels"][n:]
    assert answer == ex["input_ids"][n:]
    assert tok.decode(answer[:-1]) == "A] > [C] > [D] > [B]" and answer[-1] == tok.eos_token_id
    assert ex["target_ranks"] == [1, 4, 2, 3] and ex["grades"] == [3, 0, 2, 1]
    assert examples[2]["grades"] == [4.0, 3.0, 1.0, 2.0]  # teacher ordering without grades: m - rank


def test_rank_position_is_the_opening_bracket_whose_logits_predict_the_first_identifier(tok, examples):
    for ex in examples:
        pos = ex["rank_position"]
        assert tok.convert_ids_to_tokens(ex["input_ids"][pos]) == "["
        assert ex["prompt"].endswith("[") and pos == len(tok.encode(ex["prompt"], add_special_tokens=False)) - 1
        first = ex["input_ids"][pos + 1]  # the token predicted from position pos ...
        assert ex["labels"][pos + 1] == first  # ... is the first LM target ...
        best = ex["target_ranks"].index(1)
        assert first == ex["identifier_ids"][best]  # ... and the identifier of the teacher's best passage
    assert examples[0]["identifier_ids"] == P.identifier_token_ids(tok, "ABCD")


def test_data_hash_follows_the_data(tok, examples):
    assert T.data_hash(examples) == T.data_hash(T.build_examples(windows(), tok, max_passage_tokens=12))
    assert T.data_hash(examples) != T.data_hash(T.build_examples(windows(), tok, max_passage_tokens=4))


# ------------------------------------------------------------------ the joint loss, by hand

def test_joint_loss_equals_lm_plus_lambda_rank_by_hand_and_the_trainer_uses_it(tok, examples):
    model = tiny_model(len(tok), seed=1)
    batch = T.collate(examples[:2], P.pad_token_id(tok))
    with torch.no_grad():
        total, parts = T.joint_loss(model, batch, "joint", lam=10.0)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # eq. 1 by hand: -log p(target token) averaged over every target token of the batch
    nll = []
    for b, ex in enumerate(examples[:2]):
        logp = torch.log_softmax(logits[b].float(), -1)
        nll += [-logp[t - 1, ex["input_ids"][t]] for t in range(len(ex["input_ids"])) if ex["labels"][t] != -100]
    lm = torch.stack(nll).mean()
    # eq. 2 by hand, averaged over the pairs with a preference (FIRST's code), grade ties left out
    ranks_per_query = []
    for b, ex in enumerate(examples[:2]):
        s = logits[b, ex["rank_position"], ex["identifier_ids"]].float()
        r, g = ex["target_ranks"], ex["grades"]
        terms = [torch.nn.functional.softplus(s[j] - s[i]) / (r[i] + r[j])
                 for i in range(len(r)) for j in range(len(r)) if r[i] < r[j] and g[i] != g[j]]
        ranks_per_query.append(torch.stack(terms).mean())
    rank = torch.stack(ranks_per_query).mean()
    assert torch.allclose(torch.tensor(parts["loss_lm"]), lm, atol=1e-5)
    assert torch.allclose(torch.tensor(parts["loss_rank"]), rank, atol=1e-6)
    assert torch.allclose(total, lm + 10.0 * rank, atol=1e-5)
    # the Trainer subclass returns exactly this loss
    trainer = T._trainer_class().__new__(T._trainer_class())
    trainer.objective, trainer.lam, trainer.pair_reduction, trainer.protocol = "joint", 10.0, "mean", "first"
    trainer._parts = {}
    with torch.no_grad():
        assert torch.equal(trainer.compute_loss(model.eval(), batch), total)
    # ablations: -LM drops L_LM, lm-only drops L_Rank
    with torch.no_grad():
        assert torch.allclose(T.joint_loss(model, batch, "-lm")[0], 10.0 * rank, atol=1e-5)
        assert torch.allclose(T.joint_loss(model, batch, "lm-only")[0], lm, atol=1e-5)


def test_rank_loss_matches_minirank_losses_for_strict_teacher_orderings():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 5, generator=g, dtype=torch.float64)
    ranks = torch.stack([torch.randperm(5, generator=g) + 1 for _ in range(3)])
    grades = (6 - ranks).double()  # strict: no ties
    mask = torch.ones(3, 5, dtype=torch.bool)
    for kind, weighting in (("weighted_ranknet", "inverse_mean_rank"), ("ranknet", None)):
        mine = T.rank_loss(scores, ranks, grades, mask, kind)
        ref = LOSSES.ranknet_loss(scores, ranks, mask, weighting, pair_reduction="mean")
        assert torch.allclose(mine, ref)
    assert torch.allclose(T.rank_loss(scores, ranks, grades, mask, "listnet", protocol="uniform"),
                          LOSSES.listnet_loss(scores, grades, mask))


# ------------------------------------------------------------------ FIRST's protocol (scripts/train_ranking.py)

def first_code_targets(s: list[float], teacher_rank: list[int]) -> list[float]:
    """FIRST's targets as its training script builds them: sort the scores, gather by the 0-based teacher rank."""
    ordered = sorted(s, reverse=True)
    return [ordered[r] for r in teacher_rank]


def test_ranking_term_scales_each_loss_as_first_does_and_uniform_as_before():
    first = {o: T.ranking_term(o, "first") for o in T.OBJECTIVES}
    assert {o: (t["loss"], t["scale"]) for o, t in first.items() if t} == {
        "joint": ("weighted_ranknet_loss", 10.0), "-weighting": ("ranknet_loss", 1.0),
        "-lm": ("weighted_ranknet_loss", 10.0), "listnet": ("listnet_loss", 0.1), "lambdarank": ("ndcg_loss2", 1.0)}
    assert first["lm-only"] is None and first["listnet"]["targets"] == "own sorted logits"
    uniform = {o: T.ranking_term(o, "uniform") for o in T.OBJECTIVES if o != "lm-only"}
    assert {t["scale"] for t in uniform.values()} == {10.0} and uniform["lambdarank"]["loss"] == "lambdarank_loss"
    assert T.ranking_term("-weighting", "first", lam=20.0)["scale"] == 2.0  # lambda / 10 scales every term
    for bad in (("joint", "mine"), ("nope", "first")):
        with pytest.raises(ValueError, match="expected one of"):
            T.ranking_term(*bad)


def test_first_targets_are_the_sorted_logits_in_the_teachers_order_and_carry_gradient():
    scores = torch.tensor([[0.5, 3.0, -1.0, 2.0, 9.0]], dtype=torch.float64, requires_grad=True)
    ranks = torch.tensor([[1, 3, 2, 4, 0]])  # the last slot is padding
    mask = torch.tensor([[True, True, True, True, False]])
    got = T.first_targets(scores, ranks, mask)
    expected = first_code_targets([0.5, 3.0, -1.0, 2.0], [0, 2, 1, 3]) + [0.0]
    assert got[0].tolist() == expected == [3.0, 0.5, 2.0, -1.0, 0.0]
    got.sum().backward()
    assert scores.grad[0].tolist() == [1.0, 1.0, 1.0, 1.0, 0.0]  # not detached, as in FIRST's code


def test_first_protocol_listnet_and_lambdarank_follow_firsts_code():
    g = torch.Generator().manual_seed(5)
    scores = torch.randn(3, 6, generator=g, dtype=torch.float64) * 3
    ranks = torch.stack([torch.randperm(6, generator=g) + 1 for _ in range(3)])
    grades = torch.zeros(3, 6, dtype=torch.float64)  # ignored by FIRST's ListNet and LambdaRank
    mask = torch.ones(3, 6, dtype=torch.bool)
    listnet, ndcg2 = [], []
    for b in range(3):
        s = scores[b].tolist()
        t = torch.tensor(first_code_targets(s, (ranks[b] - 1).tolist()), dtype=torch.float64)
        listnet.append(-(torch.softmax(t, 0) * torch.log_softmax(scores[b], 0)).sum())
        ndcg2.append(LOSSES.ndcg_loss2(scores[b:b + 1], t[None], pair_reduction="mean"))
    got = T.rank_loss(scores, ranks, grades, mask, "listnet", protocol="first")
    assert torch.allclose(got, torch.stack(listnet).mean())
    assert torch.allclose(T.rank_loss(scores, ranks, grades, mask, "lambdarank"), torch.stack(ndcg2).mean())
    with pytest.raises(ValueError, match="unknown protocol"):
        T.rank_loss(scores, ranks, grades, mask, "listnet", protocol="mine")


def test_joint_loss_scales_the_ranking_term_per_protocol(tok, examples):
    model = tiny_model(len(tok), seed=1)
    batch = T.collate(examples[:3], P.pad_token_id(tok))
    with torch.no_grad():
        for objective in T.OBJECTIVES:
            parts = {p: T.joint_loss(model, batch, objective, protocol=p) for p in T.PROTOCOLS}
            for protocol, (total, logged) in parts.items():
                term = T.ranking_term(objective, protocol)
                lm = logged["loss_lm"] if T.OBJECTIVES[objective][0] else 0.0
                rank = term["scale"] * logged["loss_rank"] if term else 0.0
                assert total.item() == pytest.approx(lm + rank, rel=1e-5, abs=1e-6)
            if objective in ("joint", "-lm", "lm-only"):  # the protocols agree on these rows
                assert torch.equal(parts["first"][0], parts["uniform"][0])


def test_training_under_each_protocol_runs_and_records_it(tok, examples, tmp_path):
    for protocol in T.PROTOCOLS:
        cfg = config(objective="lambdarank", protocol=protocol, max_steps=1, save_steps=1000)
        result = T.train(examples, cfg, model=tiny_model(len(tok)), tokenizer=tok, checkpoint_dir=tmp_path / protocol,
                         adapter_dir=tmp_path / f"adapter-{protocol}")
        assert result.finished and "loss_rank" in result.log_history[0]
        meta = json.loads((tmp_path / f"adapter-{protocol}" / AD.META_FILE).read_text())
        assert meta["config"]["protocol"] == protocol
    with pytest.raises(ValueError, match="unknown protocol"):
        T.train(examples, config(protocol="mine"), model=tiny_model(len(tok)), tokenizer=tok)


# ------------------------------------------------------------------ training: determinism and resuming

def test_same_seed_same_adapter_and_the_loss_goes_down(tok, examples, tmp_path):
    fast = {"save_steps": 1000}  # no checkpoints needed here
    a = T.train(examples, config(**fast), model=tiny_model(len(tok)), tokenizer=tok, checkpoint_dir=tmp_path / "a")
    b = T.train(examples, config(**fast), model=tiny_model(len(tok)), tokenizer=tok, checkpoint_dir=tmp_path / "b")
    c = T.train(examples, config(max_steps=1, seed=4, **fast), model=tiny_model(len(tok)), tokenizer=tok,
                checkpoint_dir=tmp_path / "c")
    wa, wb, wc = AD.lora_state(a.model), AD.lora_state(b.model), AD.lora_state(c.model)
    assert wa and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)
    batch = T.collate(examples, P.pad_token_id(tok))
    with torch.no_grad():
        after = T.joint_loss(a.model, batch)[0]
        with a.model.disable_adapter():  # LoRA starts as the identity (B = 0): this is the untrained model
            before = T.joint_loss(a.model, batch)[0]
    assert after < before
    assert a.finished and not (tmp_path / "a").exists()  # checkpoints of a finished run are removed


def test_resume_after_interruption_equals_an_uninterrupted_run(tok, examples, tmp_path):
    straight = T.train(examples, config(), model=tiny_model(len(tok)), tokenizer=tok, checkpoint_dir=tmp_path / "s")
    cut = T.train(examples, config(), model=tiny_model(len(tok)), tokenizer=tok, checkpoint_dir=tmp_path / "r",
                  stop_after_steps=2, adapter_dir=tmp_path / "adapter")
    assert not cut.finished and cut.adapter_dir is None and not (tmp_path / "adapter").exists()
    assert T.last_checkpoint(tmp_path / "r").name == "checkpoint-2"
    resumed = T.train(examples, config(), model=tiny_model(len(tok)), tokenizer=tok, checkpoint_dir=tmp_path / "r",
                      adapter_dir=tmp_path / "adapter")
    assert resumed.finished
    assert [row["step"] for row in resumed.log_history if "loss" in row] == [1, 2, 3, 4]
    ws, wr = AD.lora_state(straight.model), AD.lora_state(resumed.model)
    assert all(torch.equal(ws[k], wr[k]) for k in ws)  # bit for bit, on a CPU
    # the saved adapter: safetensors + peft config + what made it; reloads to the same weights
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert files == {"adapter_model.safetensors", "adapter_config.json", "minirank_adapter.json"}
    meta = json.loads((tmp_path / "adapter" / "minirank_adapter.json").read_text())
    assert meta["base_model"] == "tiny-test" and meta["seed"] == 3 and meta["data_hash"] == T.data_hash(examples)
    assert meta["config"]["lam"] == 10.0 and meta["config"]["objective"] == "joint"
    reloaded = AD.load_adapter(tiny_model(len(tok)), tmp_path / "adapter")
    wl = AD.lora_state(reloaded)
    assert all(torch.equal(wr[k], wl[k]) for k in wr)
    # never overwritten
    with pytest.raises(FileExistsError, match="never overwrites"):
        T.train(examples, config(), model=tiny_model(len(tok)), tokenizer=tok, adapter_dir=tmp_path / "adapter")


def test_the_training_set_is_a_datasets_dataset_mapped_saved_and_read_back(tok, examples, tmp_path):
    from datasets import Dataset

    rows = T.windows_dataset(windows())
    assert isinstance(rows, Dataset) and rows.column_names == ["qid", "query", "pids", "texts", "order", "labels"]
    ds = T.examples_dataset(windows(), tok, max_passage_tokens=12, cache_dir=tmp_path / "cache")
    assert len(ds) == len(examples) and set(T.EXAMPLE_COLUMNS) <= set(ds.column_names)
    for row, ex in zip(ds, examples):  # map() gives the rows build_examples gives
        assert all(row[k] == ex[k] for k in ("qid", "prompt", "target", *T.EXAMPLE_COLUMNS))
    assert T.data_hash(ds) == T.data_hash(examples)
    assert ds.cache_files  # datasets keeps the mapped rows on disk: a second call reads them back
    again = T.examples_dataset(windows(), tok, max_passage_tokens=12, cache_dir=tmp_path / "cache")
    assert again.cache_files == ds.cache_files
    # train() keeps what it trains on in the run's folder; the Dataset and the list train the same adapter
    a = T.train(ds, config(max_steps=2), model=tiny_model(len(tok)), tokenizer=tok, checkpoint_dir=tmp_path / "a",
                keep_checkpoints=True)
    b = T.train(examples, config(max_steps=2), model=tiny_model(len(tok)), tokenizer=tok,
                checkpoint_dir=tmp_path / "b")
    assert T.data_hash(T.load_from_disk(tmp_path / "a" / T.DATASET_FOLDER)) == T.data_hash(examples)
    wa, wb = AD.lora_state(a.model), AD.lora_state(b.model)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_the_harness_is_trls_sft_trainer():
    from trl import SFTTrainer

    assert issubclass(T.FirstTrainer, SFTTrainer)


def test_a_checkpoint_folder_refuses_another_run(tok, examples, tmp_path):
    """Issue 12 item 3: run B (another objective, learning rate and data) given run A's checkpoint folder must not
    continue A's weights under B's name; it is refused, naming both runs, and A's checkpoint stays as it was."""
    folder = tmp_path / "checkpoints"
    a_config = config()
    cut = T.train(examples, a_config, model=tiny_model(len(tok)), tokenizer=tok, checkpoint_dir=folder,
                  stop_after_steps=2)
    assert not cut.finished and T.last_checkpoint(folder).name == "checkpoint-2"
    saved = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    b_examples = T.build_examples(windows()[:3], tok, max_passage_tokens=12)  # other windows
    b_config = config(objective="lm-only", learning_rate=1e-2)
    signature = AD.base_signature(tiny_model(len(tok)))
    a_id = T.run_id(a_config, T.data_hash(examples), signature)
    b_id = T.run_id(b_config, T.data_hash(b_examples), signature)
    for resume in (True, False):  # resume=False used to delete the folder, whoever's it was
        with pytest.raises(FileExistsError) as refused:
            T.train(b_examples, b_config, tmp_path / "b-adapter", model=tiny_model(len(tok)), tokenizer=tok,
                    checkpoint_dir=folder, resume=resume)
        message = str(refused.value)
        assert f"run {a_id}" in message and f"run {b_id}" in message
        assert "objective 'joint' -> 'lm-only'" in message and "learning_rate 0.05 -> 0.01" in message
        assert "data_hash" in message and str(folder) in message
    assert not (tmp_path / "b-adapter").exists()
    assert {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == saved
    # the run that owns the folder still resumes it
    resumed = T.train(examples, a_config, model=tiny_model(len(tok)), tokenizer=tok, checkpoint_dir=folder)
    assert resumed.finished and [row["step"] for row in resumed.log_history if "loss" in row] == [1, 2, 3, 4]


def test_a_folder_that_is_not_a_runs_is_never_emptied(tok, examples, tmp_path):
    """A checkpoint_dir that holds someone's files (not a minirank run's) is refused, never trained into and
    deleted at the end (resume=True) or deleted at the start (resume=False)."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    for resume in (True, False):
        with pytest.raises(FileExistsError, match="does not say which run made it"):
            T.train(examples, config(max_steps=1), model=tiny_model(len(tok)), tokenizer=tok, checkpoint_dir=folder,
                    resume=resume)
        assert (folder / "notes.txt").read_text() == "keep me"
    # an empty folder is fine, and resume=False restarts the run's own folder
    empty = tmp_path / "empty"
    empty.mkdir()
    cut = T.train(examples, config(), model=tiny_model(len(tok)), tokenizer=tok, checkpoint_dir=empty,
                  stop_after_steps=2)
    restarted = T.train(examples, config(), model=tiny_model(len(tok)), tokenizer=tok, checkpoint_dir=empty,
                        resume=False)
    assert not cut.finished and restarted.finished
    assert [row["step"] for row in restarted.log_history if "loss" in row] == [1, 2, 3, 4]


# ------------------------------------------------------------------ bad input: clear errors

def test_teacher_ordering_must_be_a_permutation():
    with pytest.raises(ValueError, match=r"not a permutation.*repeats \[1\].*misses \[2\]"):
        T.make_window("q", "query", ["a", "b", "c"], ["x", "y", "z"], [0, 1, 1])
    with pytest.raises(ValueError, match=r"outside 0\.\.2: \[3\]"):
        T.make_window("q", "query", ["a", "b", "c"], ["x", "y", "z"], [0, 1, 3])
    with pytest.raises(ValueError, match="not a permutation"):
        T.make_window("q", "query", ["a", "b", "c"], ["x", "y", "z"], [0, 1])


def test_window_longer_than_the_context_is_refused(tok, examples):
    with pytest.raises(ValueError, match=r"longer than the model's context of 64.*smaller max_passage_tokens"):
        T.build_examples(windows()[:1], tok, max_passage_tokens=12, max_length=64)
    short = tiny_model(len(tok), max_position_embeddings=64)
    with pytest.raises(ValueError, match="longer than the model's context of 64"):
        T.train(examples, config(), model=short, tokenizer=tok)


def test_adapter_for_another_base_model_is_refused(tok, examples, tmp_path):
    done = T.train(examples, config(max_steps=1), model=tiny_model(len(tok)), tokenizer=tok,
                   checkpoint_dir=tmp_path / "ck", adapter_dir=tmp_path / "adapter")
    assert done.adapter_dir == tmp_path / "adapter"
    with pytest.raises(ValueError, match="trained on base model 'tiny-test'.*same shape, different weights"):
        AD.load_adapter(tiny_model(len(tok), seed=1), tmp_path / "adapter")
    with pytest.raises(ValueError, match="hidden 32.*hidden 64"):
        AD.load_adapter(tiny_model(len(tok), hidden_size=64), tmp_path / "adapter")
    with pytest.raises(FileNotFoundError, match="not a minirank adapter"):
        AD.load_adapter(tiny_model(len(tok)), tmp_path)


def test_an_adapter_is_never_put_on_a_model_that_already_carries_one(tok, examples, tmp_path):
    """Issue 12 item 4: load_adapter(load_adapter(base, A), B) computed neither A nor B while saying B (peft only
    warns). It is refused, with the way out (unload()); the base model peft changed in place is refused too."""
    T.train(examples, config(max_steps=1, save_steps=1000), tmp_path / "a", model=tiny_model(len(tok)), tokenizer=tok,
            checkpoint_dir=tmp_path / "ck-a")
    T.train(examples, config(max_steps=1, save_steps=1000, seed=4), tmp_path / "b", model=tiny_model(len(tok)),
            tokenizer=tok, checkpoint_dir=tmp_path / "ck-b")
    base = tiny_model(len(tok))
    with_a = AD.load_adapter(base, tmp_path / "a")
    with pytest.raises(ValueError, match=r"already carries a LoRA adapter.*unload\(\)"):
        AD.load_adapter(with_a, tmp_path / "b")
    with pytest.raises(ValueError, match="already carries a LoRA adapter"):
        AD.load_adapter(base, tmp_path / "b")  # peft put A's layers into `base` itself
    with_b = AD.load_adapter(with_a.unload(), tmp_path / "b")  # unwrapped: a plain base model again
    fresh_b = AD.load_adapter(tiny_model(len(tok)), tmp_path / "b")
    wb, wf = AD.lora_state(with_b), AD.lora_state(fresh_b)
    assert wb and all(torch.equal(wb[k], wf[k]) for k in wf)
    assert with_b.minirank_meta["seed"] == 4


def test_an_adapter_file_must_load_completely(tok, examples, tmp_path):
    """Every tensor of adapter_model.safetensors must land in the model, and every LoRA weight of the model must
    come from the file; otherwise the error names the keys (peft only warns, and the model is silently partial)."""
    import shutil

    from safetensors.torch import load_file, save_file

    T.train(examples, config(max_steps=1, save_steps=1000), tmp_path / "a", model=tiny_model(len(tok)), tokenizer=tok,
            checkpoint_dir=tmp_path / "ck")
    tensors = load_file(tmp_path / "a" / "adapter_model.safetensors")
    key = sorted(k for k in tensors if "layers.1." in k)[0]
    for broken, wrong in (("renamed", key.replace("layers.1.", "layers.7.")), ("dropped", None)):
        folder = tmp_path / broken
        shutil.copytree(tmp_path / "a", folder)
        changed = {k: v for k, v in tensors.items() if k != key}
        if wrong is not None:
            changed[wrong] = tensors[key]
        save_file(changed, folder / "adapter_model.safetensors")
        with pytest.raises(ValueError, match="did not load completely") as refused:
            AD.load_adapter(tiny_model(len(tok)), folder)
        assert key in str(refused.value) and (wrong is None or wrong in str(refused.value))


def test_teacher_windows_from_qrels_and_from_a_teacher_run(tiny_collection):
    from minirank.retrieval import BM25

    cands = BM25(tiny_collection.passages).search(tiny_collection.queries, 6)
    wins = T.teacher_windows(tiny_collection, cands, window=4, windows_per_query=2)
    assert wins
    for w in wins:
        grades = [tiny_collection.qrels[w.qid].get(p, 0) for p in w.pids]
        assert [grades[i] for i in w.order] == sorted(grades, reverse=True)
        assert len(set(w.labels)) > 1
    teacher = {q: {p: -float(i) for i, p in enumerate(sorted(s))} for q, s in cands.items()}  # by id
    taught = T.teacher_windows(tiny_collection, cands, window=4, teacher=teacher)
    for w in taught:
        assert [w.pids[i] for i in w.order] == sorted(w.pids)


# ------------------------------------------------------------------ the shipped adapter

def test_shipped_adapter_is_small_loads_on_the_default_model_and_adds_the_demo_row():
    from minirank.demo import RERANKERS
    from minirank.models import DEFAULT_MODEL, load

    if not AD.SHIPPED_ADAPTER.is_dir():
        assert "first-lora" not in RERANKERS
        pytest.skip("no shipped adapter in data/adapters")
    assert "first-lora" in RERANKERS
    size = sum(f.stat().st_size for f in AD.SHIPPED_ADAPTER.iterdir())
    assert size < 3 * 2**20
    meta = AD.read_adapter_meta(AD.SHIPPED_ADAPTER)
    assert meta["base_model"] == DEFAULT_MODEL and meta["config"]["objective"] == "joint"
    model, _ = load(DEFAULT_MODEL)
    adapted = AD.load_adapter(model, AD.SHIPPED_ADAPTER)  # the signature check passes on the real base model
    assert AD.lora_state(adapted)


# ------------------------------------------------------------------ NEFTune and activation checkpointing

def test_neftune_and_activation_checkpointing_switches_train(tok, examples, tmp_path):
    plain = T.train(examples, config(max_steps=1, save_steps=1000), model=tiny_model(len(tok)), tokenizer=tok,
                    checkpoint_dir=tmp_path / "p")
    noisy = T.train(examples, config(max_steps=1, save_steps=1000, neftune_alpha=5.0, gradient_checkpointing=True),
                    model=tiny_model(len(tok)), tokenizer=tok, checkpoint_dir=tmp_path / "n")
    assert noisy.finished
    first = lambda r: next(row["loss"] for row in r.log_history if "loss" in row)
    assert first(noisy) != first(plain)  # the embeddings were noised during training
    from minirank.bench.finetune import measure_throughput  # a benchmark of chapter 5: one example run here

    rows = measure_throughput(examples, config(), tiny_model(len(tok)), tok, batch_sizes=(1, 2), steps=1)
    assert [r["batch"] for r in rows] == [1, 2] and all(r["tokens/s"] > 0 for r in rows)
