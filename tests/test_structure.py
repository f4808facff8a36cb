"""The house rules that keep the package readable, checked on its source (nothing is imported or run):

(a) the chapters sit below the programs that run them: no chapter module imports ``minirank.demo``,
    ``minirank.cli``, ``minirank.bench`` or ``minirank.recipes`` (in any form: ``import``, ``from ... import``, relative imports,
    or a module name handed to ``importlib.import_module``);
(b) no module is longer than 600 lines;
(c) every ``literalinclude`` with ``:pyobject:`` in the lessons names an object that exists in the named file,
    so moving code cannot leave a lesson quoting nothing.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "minirank"
MODULES = sorted(PACKAGE.rglob("*.py"))
#: The programs: they may import anything; nothing below them may import them.
PROGRAMS = {"minirank.demo", "minirank.cli", "minirank.__main__", "minirank.bench", "minirank.recipes"}
MAX_LINES = 600
#: Known offenders, each with the change that removes it. The marks are strict: once the change lands the test
#: passes, the mark fails, and the line goes.
PENDING_IMPORTS: dict[str, str] = {}  # a module that still breaks rule (a) would be listed here with the reason
PENDING_LENGTH: dict[str, str] = {}   # and one that breaks rule (b) here


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_program(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in PROGRAMS)


def imported_names(source: str, package: str) -> set[str]:
    """Every module name ``source`` (a module of ``package``) imports or names as a whole string constant.

    ``from a import b`` yields ``a`` and ``a.b`` (``b`` may be a module); relative imports are resolved
    against ``package``; a string constant that is a dotted module name (the argument of
    ``importlib.import_module``, or an entry of a tuple of names that a loop imports) counts too.
    """
    parts = package.split(".")
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = parts[:len(parts) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}".lstrip(".") for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_]\w*)+", node.value):
                names.add(node.value)
    return names


def program_imports(path: Path) -> list[str]:
    package = ".".join(path.relative_to(ROOT).parent.parts)
    return sorted(n for n in imported_names(path.read_text(encoding="utf-8"), package) if is_program(n))


def chapter_modules():
    for path in MODULES:
        name = module_name(path)
        if is_program(name):
            continue
        rel = path.relative_to(ROOT).as_posix()
        marks = [pytest.mark.xfail(strict=True, reason=PENDING_IMPORTS[rel])] if rel in PENDING_IMPORTS else []
        yield pytest.param(path, id=rel, marks=marks)


@pytest.mark.parametrize("path", chapter_modules())
def test_chapters_never_import_the_programs_that_run_them(path):
    found = program_imports(path)
    assert not found, (f"{path.relative_to(ROOT)} imports {found}: a chapter must not import the programs that "
                       f"run it (demo, cli, bench); move the code that needs them into the program")


def test_the_import_check_sees_every_form_of_import():
    sources = {
        "import minirank.demo": {"minirank.demo"},
        "from minirank import demo": {"minirank.demo"},
        "from minirank.demo import RERANKERS": {"minirank.demo", "minirank.demo.RERANKERS"},
        "from minirank.bench.latency import run_bench": {"minirank.bench.latency", "minirank.bench.latency.run_bench"},
        "from . import cli": {"minirank.cli"},
        "from .bench import finetune": {"minirank.bench", "minirank.bench.finetune"},
        "from .. import demo": set(),  # from minirank's parent: not minirank.demo
        "import importlib\nimportlib.import_module('minirank.demo')": {"minirank.demo"},
        "for m in ('minirank.listwise', 'minirank.cli'):\n    __import__(m)": {"minirank.cli"},
        "from minirank import data, demography\nimport minirank.benchmarks": set(),  # names that only start alike
        "x = 'see minirank.demo for the table'": set(),  # prose is not a module name
    }
    for source, expected in sources.items():
        found = {n for n in imported_names(source, "minirank") if is_program(n)}
        assert found == expected, (source, found)


def lengths():
    for path in MODULES:
        rel = path.relative_to(ROOT).as_posix()
        marks = [pytest.mark.xfail(strict=True, reason=PENDING_LENGTH[rel])] if rel in PENDING_LENGTH else []
        yield pytest.param(path, id=rel, marks=marks)


@pytest.mark.parametrize("path", lengths())
def test_no_module_is_longer_than_600_lines(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, (f"{path.relative_to(ROOT)} has {lines} lines (at most {MAX_LINES}): split it by "
                                f"concept, or move a program that runs it into minirank/bench or the demo")


# ---------------------------------------------------------------- (c) what the lessons quote

INCLUDE = re.compile(r"^```\{literalinclude\}\s+(?P<path>\S+)\s*\n(?P<options>(?::[\w-]+:.*\n)*)", re.MULTILINE)


def pyobject_includes(lessons: Path = ROOT / "lessons") -> list[tuple[Path, int, Path, str]]:
    """``(lesson, line, included file, object)`` for every ``literalinclude`` with a ``:pyobject:`` option."""
    found = []
    for lesson in sorted(lessons.rglob("*.md")):
        text = lesson.read_text(encoding="utf-8")
        for match in INCLUDE.finditer(text):
            options = dict(re.findall(r"^:([\w-]+):\s*(.*?)\s*$", match["options"], re.MULTILINE))
            if "pyobject" in options:
                line = text.count("\n", 0, match.start()) + 1
                found.append((lesson, line, (lesson.parent / match["path"]).resolve(), options["pyobject"]))
    return found


def find_object(source: str, dotted: str) -> ast.AST | None:
    """The class or function ``dotted`` (``name`` or ``Class.method``, as Sphinx's ``:pyobject:``) in ``source``."""
    scope: list[ast.stmt] = ast.parse(source).body
    node = None
    for part in dotted.split("."):
        node = next((n for n in scope if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                     and n.name == part), None)
        if node is None:
            return None
        scope = node.body
    return node


def test_the_lessons_quote_code_that_exists():
    includes = pyobject_includes()
    assert len(includes) > 20  # the lessons quote about thirty objects; finding none means the pattern broke
    broken = []
    for lesson, line, path, name in includes:
        where = f"{lesson.relative_to(ROOT)}:{line}"
        if not path.is_file():
            broken.append(f"{where}: {path} does not exist")
        elif find_object(path.read_text(encoding="utf-8"), name) is None:
            broken.append(f"{where}: {path.relative_to(ROOT)} has no {name!r}")
    assert not broken, "lessons quote code that is not there (moved or renamed?):\n" + "\n".join(broken)


def test_the_include_check_fails_on_a_wrong_name(tmp_path):
    (tmp_path / "m.py").write_text("class CostModel:\n    def fit(self):\n        pass\n\ndef measure():\n    pass\n")
    (tmp_path / "lesson.md").write_text("Text.\n\n```{literalinclude} m.py\n:language: python\n:pyobject: CostModel.fit\n"
                                        "```\n\n```{literalinclude} m.py\n:pyobject: CostModel.predict\n```\n"
                                        "```{literalinclude} m.py\n:pyobject: measure\n```\n")
    found = pyobject_includes(tmp_path)
    assert [(line, name) for _, line, _, name in found] == [(3, "CostModel.fit"), (8, "CostModel.predict"), (11, "measure")]
    source = (tmp_path / "m.py").read_text()
    assert [find_object(source, name) is not None for *_, name in found] == [True, False, True]
    assert find_object(source, "fit") is None  # a method is found only through its class
