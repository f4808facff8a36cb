"""Every chapter's assignment can be graded: the untouched template scores nothing, the reference scores all.

For each `lessons/exercises/exNN_<topic>.py` there must be a grader `tests/exercises/grade_exNN_<topic>.py`,
a reference solution `teacher/exNN_<topic>.py` and a page `lessons/exercises/NN.md` in the book. The
graders themselves are run by `pytest tests/exercises/grade_exNN_<topic>.py` (see grading.py).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grading import REPO, TEACHER, TEMPLATES, NotDone, UsedTheLibrary

HERE = Path(__file__).resolve().parent
STEMS = sorted(p.stem for p in TEMPLATES.glob("ex[0-9][0-9]_*.py"))
# Chapters whose lesson has landed but whose assignment has not, e.g. {"07"}: each is a debt, listed here on
# purpose so that a chapter cannot land without anyone noticing it has no assignment.
NOT_YET: set[str] = set()


def assignment(stem: str):
    path = HERE / f"grade_{stem}.py"
    assert path.is_file(), f"lessons/exercises/{stem}.py has no grader: write tests/exercises/grade_{stem}.py"
    spec = importlib.util.spec_from_file_location(f"grade_{stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ASSIGNMENT


def test_every_chapter_has_an_assignment():
    chapters = sorted(p.stem[:2] for p in (REPO / "lessons").glob("[0-9][0-9]_*.md"))
    have = sorted(stem[2:4] for stem in STEMS)
    missing = sorted(set(chapters) - set(have) - NOT_YET)
    assert chapters and not missing, (
        f"chapters {missing} have a lesson but no assignment: add lessons/exercises/exNN_<topic>.py, its grader "
        f"tests/exercises/grade_exNN_<topic>.py, teacher/exNN_<topic>.py and lessons/exercises/NN.md "
        f"(or, for now, list the chapter in NOT_YET in {Path(__file__).name})")
    toc = (REPO / "lessons" / "_toc.yml").read_text(encoding="utf-8")
    for stem in STEMS:
        page = REPO / "lessons" / "exercises" / f"{stem[2:4]}.md"
        assert page.is_file(), f"the assignment {stem} needs its page {page.relative_to(REPO)}"
        assert f"lessons/exercises/{stem[2:4]}" in toc, f"lessons/_toc.yml must list lessons/exercises/{stem[2:4]}"
        assert f"grade_{stem}.py" in page.read_text(encoding="utf-8"), f"{page.name} must say how to grade {stem}"


@pytest.mark.parametrize("stem", STEMS)
def test_untouched_template_scores_nothing(stem):
    graded = assignment(stem)
    text = (TEMPLATES / f"{stem}.py").read_text(encoding="utf-8")
    assert text.count("TODO") >= len(graded.exercises), f"{stem}.py needs a TODO in every exercise"
    earned, failures = graded.grade(TEMPLATES)
    assert earned == 0, f"the untouched {stem}.py earned {earned} points"
    assert sorted(failures) == sorted(e.name for e in graded.exercises)
    assert all(why.startswith("NotDone") and "not done yet" in why for why in failures.values()), failures


@pytest.mark.parametrize("stem", STEMS)
def test_reference_solution_scores_every_point(stem):
    if not (TEACHER / f"{stem}.py").is_file():
        pytest.skip(f"no teacher/{stem}.py in this checkout (a student copy without the reference solutions)")
    graded = assignment(stem)
    earned, failures = graded.grade(TEACHER)
    assert failures == {} and earned == graded.total, f"teacher/{stem}.py: {earned}/{graded.total}, {failures}"


def test_the_library_cannot_stand_in_for_the_student(tmp_path: Path):
    """Importing minirank is refused, and so is calling the graded function through another route."""
    graded = assignment("ex04_losses")
    (tmp_path / "ex04_losses.py").write_text(
        "from minirank.losses import listmle_loss\n\ndef listmle(s, r):\n    return listmle_loss(s[None], r[None])\n")
    with pytest.raises(UsedTheLibrary, match="imports minirank.losses"):
        graded.load(tmp_path)
    sneaky = tmp_path / "sneaky"
    sneaky.mkdir()
    (sneaky / "ex04_losses.py").write_text(
        "import importlib\n\ndef listmle(s, r):\n"
        "    return importlib.import_module('minirank.losses').listmle_loss(s[None], r[None])\n")
    earned, failures = graded.grade(sneaky)
    assert "listmle" in failures and "UsedTheLibrary" in failures["listmle"], failures


def test_a_wrong_solution_loses_its_points(tmp_path: Path):
    """The checks can fail: FIRST's eq. 2 with the sign as printed loses weighted_ranknet's points only."""
    if not (TEACHER / "ex04_losses.py").is_file():
        pytest.skip("no teacher/ folder in this checkout")
    text = (TEACHER / "ex04_losses.py").read_text(encoding="utf-8")
    wrong = text.replace("F.softplus(scores[j] - scores[i])", "F.softplus(scores[i] - scores[j])")
    assert wrong != text
    (tmp_path / "ex04_losses.py").write_text(wrong, encoding="utf-8")
    graded = assignment("ex04_losses")
    earned, failures = graded.grade(tmp_path)
    assert list(failures) == ["weighted_ranknet"] and earned == graded.total - 3, (earned, failures)


@pytest.mark.parametrize("stem, exercise, right, wrong", [
    # PE-Rank eq. 5 averaged over the steps, as the official code does, instead of summed
    ("ex07_perank", "listmle_over_steps", "    return loss\n", "    return loss / n\n"),
    # the query tokens read from their own positions' logits: the off-by-one of a causal model
    ("ex08_query_likelihood", "query_log_likelihood", "logits[query_start - 1:length - 1]", "logits[query_start:length]"),
    # FIRST eq. 2 summed over the pairs, where feedback averages
    ("ex09_feedback", "weighted_ranknet", "    return total / (n * (n - 1) / 2)", "    return total"),
], ids=["07-mean-over-steps", "08-off-by-one", "09-sum-over-pairs"])
def test_the_usual_mistake_loses_that_exercise_only(tmp_path: Path, stem, exercise, right, wrong):
    if not (TEACHER / f"{stem}.py").is_file():
        pytest.skip("no teacher/ folder in this checkout")
    text = (TEACHER / f"{stem}.py").read_text(encoding="utf-8")
    assert right in text
    (tmp_path / f"{stem}.py").write_text(text.replace(right, wrong), encoding="utf-8")
    graded = assignment(stem)
    earned, failures = graded.grade(tmp_path)
    points = {e.name: e.points for e in graded.exercises}
    assert list(failures) == [exercise] and earned == graded.total - points[exercise], (earned, failures)


def test_grading_with_pytest_prints_the_points():
    """What a student runs: the template fails with a points line; the teacher's copy passes with all points."""
    grader = str(HERE / "grade_ex06_latency.py")
    env = {k: v for k, v in os.environ.items() if k != "MINIRANK_EXERCISES_DIR"}
    student = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", grader],
                             cwd=REPO, env=env, capture_output=True, text=True)
    assert student.returncode == 1, student.stdout[-2000:]
    assert "ex06_latency: 0/7 points" in student.stdout and "is not done yet" in student.stdout, student.stdout[-2000:]
    if (TEACHER / "ex06_latency.py").is_file():
        teacher = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", grader], cwd=REPO,
                                 env={**env, "MINIRANK_EXERCISES_DIR": "teacher"}, capture_output=True, text=True)
        assert teacher.returncode == 0 and "ex06_latency: 7/7 points" in teacher.stdout, teacher.stdout[-2000:]
