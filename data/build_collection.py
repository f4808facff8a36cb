"""Build the course collection (data/course) from the authored domain files (data/authoring).

    python data/build_collection.py          # write data/course/* from data/authoring/*
    python data/build_collection.py --pool   # also list pooled, unjudged pairs to judge

Ids are assigned by position (domain, query slot, passage slot) and then shuffled with a fixed seed,
so an id says nothing about a passage's grade and editing a text never renames anything.
Judgements come from two sources, both kept in data/authoring:
  1. the grade each passage was written for, for the query it was written for;
  2. pool judgements (judgements/*.tsv: qid, pid, grade, note) for every pair that BM25's or the
     dense retriever's top 20 brings up and that (1) does not cover, as TREC pools its runs.
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
AUTHORING = HERE / "authoring"
OUT = HERE / "course"
SEED = 2024
SPLIT_OF_SLOT = ["train", "train", "train", "train", "dev", "test", "test"]  # per domain, after a seeded shuffle
POOL_DEPTH = 20


def load_domains() -> list[dict]:
    files = sorted(AUTHORING.glob("*.json"))
    if not files:
        sys.exit(f"no authoring files in {AUTHORING}")
    return [json.load(open(f, encoding="utf-8")) for f in files]


def assemble(domains: list[dict]):
    rng = random.Random(SEED)
    slots, queries, authored = [], [], []
    for domain in domains:
        name = domain["domain"]
        order = list(range(len(domain["queries"])))
        rng.shuffle(order)
        for slot, qi in enumerate(order):
            q = domain["queries"][qi]
            queries.append({"key": (name, qi), "text": q["text"], "narrative": q["narrative"],
                            "split": SPLIT_OF_SLOT[slot % len(SPLIT_OF_SLOT)], "domain": name})
            for pi, p in enumerate(q["passages"]):
                slots.append({"key": (name, qi, pi), "text": p["text"], "domain": name, "kind": p["kind"]})
                authored.append(((name, qi), (name, qi, pi), p["grade"]))
        for bi, text in enumerate(domain["background"]):
            slots.append({"key": (name, "bg", bi), "text": text, "domain": name, "kind": "background"})
    rng.shuffle(slots)
    pid = {s["key"]: f"p{i + 1:04d}" for i, s in enumerate(slots)}
    qorder = list(range(len(queries)))
    rng.shuffle(qorder)
    qid = {queries[j]["key"]: f"q{i + 1:03d}" for i, j in enumerate(qorder)}
    qrels = {}
    for qkey, pkey, grade in authored:
        qrels.setdefault(qid[qkey], {})[pid[pkey]] = grade
    return slots, pid, queries, qid, qrels


def read_judgements() -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for path in sorted((AUTHORING / "judgements").glob("*.tsv")):
        with open(path, encoding="utf-8") as handle:
            for n, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
                if not row or row[0] == "qid":
                    continue
                if len(row) < 3 or row[2].strip() not in {"0", "1", "2", "3"}:
                    sys.exit(f"{path}:{n}: expected qid, pid, grade 0-3[, note], got {row}")
                out.setdefault(row[0], {})[row[1]] = int(row[2])
    return out


def write(slots, pid, queries, qid, qrels) -> None:
    OUT.mkdir(exist_ok=True)
    passages = sorted((pid[s["key"]], s) for s in slots)
    with open(OUT / "passages.tsv", "w", encoding="utf-8") as f:
        f.writelines(f"{p}\t{s['text']}\n" for p, s in passages)
    with open(OUT / "passages.meta.tsv", "w", encoding="utf-8") as f:
        f.write("pid\tdomain\n")
        f.writelines(f"{p}\t{s['domain']}\n" for p, s in passages)
    with open(OUT / "queries.meta.tsv", "w", encoding="utf-8") as f:
        f.write("qid\tsplit\tdomain\tnarrative\n")
        f.writelines(f"{qid[q['key']]}\t{q['split']}\t{q['domain']}\t{q['narrative']}\n"
                     for q in sorted(queries, key=lambda q: qid[q["key"]]))
    for split in ("train", "dev", "test"):
        mine = sorted((qid[q["key"]], q) for q in queries if q["split"] == split)
        with open(OUT / f"queries.{split}.tsv", "w", encoding="utf-8") as f:
            f.writelines(f"{i}\t{q['text']}\n" for i, q in mine)
        with open(OUT / f"qrels.{split}.txt", "w", encoding="utf-8") as f:
            for i, _ in mine:
                f.writelines(f"{i} 0 {p} {g}\n" for p, g in sorted(qrels[i].items()))


def pool(queries, qid, qrels, passages_text) -> list[tuple[str, str]]:
    """Pairs in the top POOL_DEPTH of BM25 or dense for any query that have no judgement yet."""
    from minirank.retrieval import BM25, Dense, ranked

    texts = {qid[q["key"]]: q["text"] for q in queries}
    todo = []
    for system in (BM25(passages_text), Dense(passages_text)):
        run = system.search(texts, POOL_DEPTH)
        for q, scores in run.items():
            todo += [(q, p) for p in ranked(scores, POOL_DEPTH) if p not in qrels.get(q, {})]
    return sorted(set(todo))


def stats(queries, qid, qrels, slots) -> str:
    """The datasheet's statistics table (data/README.md quotes this output)."""
    split_of = {qid[q["key"]]: q["split"] for q in queries}
    lines = ["| split | queries | judgements | per query (min-max) | grade 0 | grade 1 | grade 2 | grade 3 |",
             "|---|---|---|---|---|---|---|---|"]
    for split in ("train", "dev", "test", "all"):
        mine = [q for q in qrels if split in ("all", split_of[q])]
        grades = Counter(g for q in mine for g in qrels[q].values())
        sizes = [len(qrels[q]) for q in mine]
        lines.append(f"| {split} | {len(mine)} | {sum(sizes)} | {min(sizes)}-{max(sizes)} | "
                     + " | ".join(str(grades[g]) for g in range(4)) + " |")
    kinds = Counter(s["kind"] for s in slots)
    words = sorted(len(s["text"].split()) for s in slots)
    lines += ["", f"{len(slots)} passages in {len({s['domain'] for s in slots})} domains; "
              f"words per passage: median {words[len(words) // 2]}, range {words[0]}-{words[-1]}; "
              f"by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pool", action="store_true", help="write data/authoring/pool/*.tsv: pairs still to judge")
    parser.add_argument("--stats", action="store_true", help="print the datasheet's statistics (markdown)")
    args = parser.parse_args()
    slots, pid, queries, qid, qrels = assemble(load_domains())
    for q, judged in read_judgements().items():
        for p, g in judged.items():
            if p in qrels.get(q, {}) and qrels[q][p] != g:
                print(f"note: pool judgement {q} {p} = {g} differs from the authored grade {qrels[q][p]}; authored kept")
            qrels.setdefault(q, {}).setdefault(p, g)
    write(slots, pid, queries, qid, qrels)
    if args.stats:
        print(stats(queries, qid, qrels, slots))
    passages_text = {pid[s["key"]]: s["text"] for s in slots}
    todo = pool(queries, qid, qrels, passages_text)
    print(f"{len(slots)} passages, {len(queries)} queries, "
          f"{sum(len(v) for v in qrels.values())} judgements; {len(todo)} pooled pairs unjudged")
    if args.pool:
        by_domain: dict[str, list] = {}
        info = {qid[q["key"]]: q for q in queries}
        for q, p in todo:
            by_domain.setdefault(info[q]["domain"], []).append((q, p))
        (AUTHORING / "pool").mkdir(exist_ok=True)
        for old in (AUTHORING / "pool").glob("*.tsv"):
            old.unlink()  # the pool folder lists only what is still to judge
        for domain, pairs in by_domain.items():
            with open(AUTHORING / "pool" / f"{domain}.tsv", "w", encoding="utf-8") as f:
                f.write("qid\tpid\tgrade\tquery\tnarrative\tpassage\n")
                f.writelines(f"{q}\t{p}\t\t{info[q]['text']}\t{info[q]['narrative']}\t{passages_text[p]}\n"
                             for q, p in pairs)
        print(f"wrote {AUTHORING / 'pool'}: {Counter(info[q]['domain'] for q, _ in todo)}")
    elif todo:
        print("warning: the pool has unjudged pairs; run with --pool and judge them (data/README.md)")


if __name__ == "__main__":
    main()
