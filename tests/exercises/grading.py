"""The grader shared by every chapter's assignment (plain pytest, no grading framework).

An assignment is a student file `lessons/exercises/exNN_<topic>.py` whose functions raise
`NotImplementedError` until written, and a grading file `tests/exercises/grade_exNN_<topic>.py` with one
check per function, each worth some points. A student grades their work with

    pytest tests/exercises/grade_ex04_losses.py            # every exercise of chapter 4, and the points
    pytest tests/exercises/grade_ex04_losses.py -k listmle # one exercise

and an untouched template fails every check, with a message saying which function to write. The
grading files are not collected by a plain `pytest tests` (their names do not start with `test_`);
`tests/exercises/test_assignments.py` is, and checks for every assignment that the untouched template
scores nothing and the reference solution in `teacher/` scores every point.

MINIRANK_EXERCISES_DIR points the graders at another folder of solutions (default: lessons/exercises),
for example a teacher's copy: `MINIRANK_EXERCISES_DIR=teacher pytest tests/exercises/grade_ex04_losses.py`.

The checks compare the student's function with the library's (or with a hand computation), so the
library's function must not stand in for the student's work: a student file may not import minirank
(or the assignment's other libraries, e.g. pytrec_eval for chapter 1), and while a student function
runs, the library functions it is graded against raise if called.
"""
from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, Sequence

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "lessons" / "exercises"
TEACHER = REPO / "teacher"
ENV = "MINIRANK_EXERCISES_DIR"


class NotDone(AssertionError):
    """A function of the student file that is missing or still raises NotImplementedError."""


class UsedTheLibrary(AssertionError):
    """The student's function called the library function it is graded against."""


@dataclass(frozen=True)
class Exercise:
    """One function to write: its name, its points, and the check that grades it.

    ``check(call)`` raises AssertionError with a readable message when the work is wrong; ``call(*args)``
    runs the student's function on arguments the check chooses.
    """
    name: str
    points: int
    check: Callable[[Callable[..., Any]], None]


@dataclass
class Assignment:
    """A chapter's exercises, the file they live in, and what the student may not call."""
    stem: str                                   # "ex04_losses": lessons/exercises/ex04_losses.py
    chapter: str                                # "04": the page lessons/exercises/04.md
    exercises: Sequence[Exercise]
    forbidden_imports: Sequence[str] = ("minirank",)
    forbidden_calls: Sequence[str] = ()         # "minirank.losses.listmle_loss", ...
    modules: dict[Path, ModuleType] = field(default_factory=dict, repr=False)

    @property
    def total(self) -> int:
        return sum(e.points for e in self.exercises)

    def path(self, folder: Path | str | None = None) -> Path:
        folder = Path(folder if folder is not None else os.environ.get(ENV) or TEMPLATES)
        folder = folder if folder.is_absolute() else REPO / folder
        return folder / f"{self.stem}.py"

    def load(self, folder: Path | str | None = None) -> ModuleType:
        """Import the solution file (checked for forbidden imports first), once per path."""
        path = self.path(folder)
        if path not in self.modules:
            if not path.is_file():
                raise NotDone(f"no solution file {path}: copy lessons/exercises/{self.stem}.py there")
            self.check_imports(path)
            spec = importlib.util.spec_from_file_location(f"graded_{self.stem}_{len(self.modules)}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            self.modules[path] = module
        return self.modules[path]

    def check_imports(self, path: Path) -> None:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                if any(name == bad or name.startswith(bad + ".") for bad in self.forbidden_imports):
                    raise UsedTheLibrary(
                        f"{path.name} line {node.lineno} imports {name}: the exercise is to write the function "
                        f"yourself, so {', '.join(self.forbidden_imports)} may not be imported in this file")

    def caller(self, module: ModuleType, name: str) -> Callable[..., Any]:
        """A function that runs the student's ``name`` with the library's own version disabled."""
        fn = getattr(module, name, None)
        if not callable(fn):
            raise NotDone(f"{Path(module.__file__).name} defines no function {name}: "
                          f"see lessons/exercises/{self.chapter}.md")

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._library_disabled(module):
                try:
                    return fn(*args, **kwargs)
                except NotImplementedError:
                    raise NotDone(
                        f"exercise `{name}` is not done yet: replace `raise NotImplementedError` in "
                        f"lessons/exercises/{self.stem}.py::{name} (lessons/exercises/{self.chapter}.md explains "
                        f"it), then run `pytest tests/exercises/grade_{self.stem}.py -k {name}`") from None
        return call

    @contextlib.contextmanager
    def _library_disabled(self, student: ModuleType) -> Iterator[None]:
        saved: list[tuple[object, str, object]] = []
        try:
            for dotted in self.forbidden_calls:
                module_name, attr = dotted.rsplit(".", 1)
                owner = importlib.import_module(module_name)
                original = getattr(owner, attr)

                def refuse(*args: Any, _dotted: str = dotted, **kwargs: Any) -> Any:
                    raise UsedTheLibrary(f"your code called {_dotted}, the library's version of this exercise: "
                                         f"write it yourself")
                saved.append((owner, attr, original))
                setattr(owner, attr, refuse)
                for key, value in list(vars(student).items()):
                    if value is original:
                        saved.append((student, key, value))
                        setattr(student, key, refuse)
            yield
        finally:
            for owner, attr, original in reversed(saved):
                setattr(owner, attr, original)

    def run(self, exercise: Exercise, folder: Path | str | None = None) -> None:
        """Grade one exercise: returns if it passes, raises AssertionError (NotDone, ...) if not."""
        exercise.check(self.caller(self.load(folder), exercise.name))

    def grade(self, folder: Path | str | None = None) -> tuple[int, dict[str, str]]:
        """(points earned, {exercise: why it failed}) for the solutions in ``folder``."""
        earned, failures = 0, {}
        for exercise in self.exercises:
            try:
                self.run(exercise, folder)
            except AssertionError as err:
                failures[exercise.name] = f"{type(err).__name__}: {err}"
            else:
                earned += exercise.points
        return earned, failures


def pytest_tests(assignment: Assignment):
    """The one pytest test of a grading file: one case per exercise, its points recorded for the summary."""
    import pytest

    @pytest.mark.parametrize("exercise", assignment.exercises, ids=[e.name for e in assignment.exercises])
    def test_exercise(exercise: Exercise, record_property) -> None:
        record_property("assignment", f"{assignment.stem}:{assignment.total}")
        record_property("points", exercise.points)
        try:
            assignment.run(exercise)
        except AssertionError as err:  # the message is the grade's explanation; the traceback is the grader's
            pytest.fail(f"{exercise.name} ({exercise.points} points): {err}", pytrace=False)

    return test_exercise
