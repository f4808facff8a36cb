"""Check one authoring file against SCHEMA.md: python data/authoring/check_domain.py data/authoring/cooking.json"""
import json
import re
import sys

KINDS = ["direct", "low-overlap", "near-duplicate", "partial", "partial", "related", "related",
         "lexical-trap", "lexical-trap", "lexical-trap", "lexical-trap", "off-topic"]
GRADES = [3, 3, 3, 2, 2, 1, 1, 0, 0, 0, 0, 0]
STOP = set("a an the of to in on for and or is are be by with what how why does do can when which who from at as it its this that your you i my".split())


def words(text):
    return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOP]


def check(path):
    problems = []
    doc = json.load(open(path, encoding="utf-8"))
    queries = doc.get("queries", [])
    if len(queries) != 7:
        problems.append(f"expected 7 queries, found {len(queries)}")
    seen = set()
    all_texts = []
    for qi, q in enumerate(queries):
        if not q.get("narrative"):
            problems.append(f"query {qi}: missing narrative")
        n = len(q["text"].split())
        if not 3 <= n <= 15:
            problems.append(f"query {qi}: {n} words")
        ps = q.get("passages", [])
        if [p.get("kind") for p in ps] != KINDS:
            problems.append(f"query {qi}: kinds {[p.get('kind') for p in ps]} != {KINDS}")
        if [p.get("grade") for p in ps] != GRADES:
            problems.append(f"query {qi}: grades {[p.get('grade') for p in ps]} != {GRADES}")
        qwords = set(words(q["text"]))
        for pi, p in enumerate(ps):
            all_texts.append((f"query {qi} passage {pi}", p["text"]))
            if p.get("kind") == "low-overlap":
                shared = qwords & set(words(p["text"]))
                if len(shared) > 2:
                    problems.append(f"query {qi} low-overlap shares {sorted(shared)}")
            if p.get("kind") == "lexical-trap":
                shared = qwords & set(words(p["text"]))
                if len(shared) < 2:
                    problems.append(f"query {qi} passage {pi} lexical-trap shares only {sorted(shared)}")
    bg = doc.get("background", [])
    if len(bg) < 45:
        problems.append(f"expected >= 45 background passages, found {len(bg)}")
    all_texts += [(f"background {i}", t) for i, t in enumerate(bg)]
    for where, t in all_texts:
        n = len(t.split())
        if not 30 <= n <= 110:
            problems.append(f"{where}: {n} words")
        if "\t" in t or "\n" in t:
            problems.append(f"{where}: tab or newline")
        if t in seen:
            problems.append(f"{where}: duplicate text")
        seen.add(t)
    return problems


if __name__ == "__main__":
    bad = 0
    for path in sys.argv[1:]:
        probs = check(path)
        bad += len(probs)
        print(path, "OK" if not probs else "")
        for p in probs:
            print("  -", p)
    sys.exit(1 if bad else 0)
