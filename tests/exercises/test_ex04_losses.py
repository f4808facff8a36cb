"""Checks for the chapter 4 exercises (lessons/exercises/ex04_losses.py).

Run one exercise:   pytest tests/exercises -k weighted_ranknet
Run them all:       pytest tests/exercises
A test is skipped while the exercise still raises NotImplementedError.

MINIRANK_EXERCISES_MODULE points the tests at another solution file (a path to a .py file
or an importable module name), e.g. your own copy:
    MINIRANK_EXERCISES_MODULE=my_ex04.py pytest tests/exercises
The reference solutions are compared with minirank.losses, the book's implementation.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pytest
import torch

from minirank import losses as ref

ENV = "MINIRANK_EXERCISES_MODULE"
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEFAULT = REPO / "lessons" / "exercises" / "ex04_losses.py"
LESSON = "lessons/04_ranking_losses.md"
F64 = torch.float64


def load_exercises() -> ModuleType:
    """Import the module named by MINIRANK_EXERCISES_MODULE (default: the student file)."""
    target = os.environ.get(ENV, str(DEFAULT))
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_absolute():
            path = path if path.exists() else REPO / path
        spec = importlib.util.spec_from_file_location(f"ex04_under_test_{abs(hash(path))}", path)
        assert spec is not None and spec.loader is not None, f"cannot load {path}"
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(target)


Call = Callable[..., Any]


def call_or_skip(module: ModuleType, name: str, *args: Any) -> Any:
    """Call the student's function; skip the test with a hint while it is not written yet."""
    fn = getattr(module, name, None)
    if fn is None:
        pytest.skip(f"{name} is not defined in {module.__name__}; see the Exercises section of {LESSON}")
    try:
        return fn(*args)
    except NotImplementedError:
        pytest.skip(
            f"Exercise `{name}` is not done yet: replace `raise NotImplementedError` in "
            f"lessons/exercises/ex04_losses.py::{name} (derivation in {LESSON}), then rerun "
            f"`pytest tests/exercises -k {name}`."
        )


def call_strict(module: ModuleType, name: str, *args: Any) -> Any:
    """Call without any skipping: used to prove the reference solutions pass every check."""
    return getattr(module, name)(*args)


def _cases(count: int = 12) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Random single queries (scores, target ranks, labels), n from 2 to 8, float64."""
    g = torch.Generator().manual_seed(404)
    out = []
    for c in range(count):
        n = 2 + c % 7
        scores = 3.0 * torch.randn(n, generator=g, dtype=F64)
        ranks = torch.randperm(n, generator=g) + 1
        labels = torch.rand(n, generator=g, dtype=F64) * 3
        out.append((scores, ranks, labels))
    return out


def _close(got: Any, want: torch.Tensor, what: str) -> None:
    assert isinstance(got, torch.Tensor), f"{what}: return a torch.Tensor, got {type(got).__name__}"
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    torch.testing.assert_close(got.to(F64), want, rtol=1e-7, atol=1e-9, msg=lambda m: f"{what}: {m}")


def _batched(module: ModuleType, name: str, call: Call) -> Callable[..., torch.Tensor]:
    """Wrap a one-query exercise as a batched, masked loss so minirank.losses.check_loss can run it."""

    def fn(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = torch.ones_like(scores, dtype=torch.bool) if mask is None else mask
        per_query = []
        for b in range(scores.shape[0]):
            real = mask[b]
            if int(real.sum()) < 2:
                per_query.append(torch.where(real, scores[b], 0.0).sum() * 0.0)
            else:
                per_query.append(call(module, name, scores[b][real], targets[b][real]))
        return torch.stack(per_query).mean()

    return fn


# --------------------------------------------------------------------------- one check per exercise


def check_weighted_ranknet(module: ModuleType, call: Call) -> None:
    s = torch.tensor([2.0, 1.0, 0.0], dtype=F64)
    r = torch.tensor([3, 1, 2])
    by_hand = math.log1p(math.exp(-1)) / 3 + math.log1p(math.exp(1)) / 4 + math.log1p(math.exp(2)) / 5
    _close(call(module, "weighted_ranknet", s, r), torch.tensor(by_hand, dtype=F64), "weighted_ranknet by hand")
    for scores, ranks, _ in _cases():
        want = ref.weighted_ranknet_loss(scores[None], ranks[None])
        _close(call(module, "weighted_ranknet", scores, ranks), want, f"weighted_ranknet n={len(scores)}")
    extreme = torch.tensor([1e4, -1e4, 0.0, 1e4], dtype=F64)
    got = call(module, "weighted_ranknet", extreme, torch.tensor([4, 1, 2, 3]))
    assert torch.isfinite(got), "weighted_ranknet overflows at scores of +/-1e4: use softplus"
    failures = ref.check_loss(_batched(module, "weighted_ranknet", call), top_weighted=True)
    assert failures == [], f"weighted_ranknet fails the chapter's checks: {failures}"


def check_listnet(module: ModuleType, call: Call) -> None:
    _close(call(module, "listnet", torch.tensor([0.0, 0.0], dtype=F64), torch.tensor([1.0, 0.0], dtype=F64)),
           torch.tensor(math.log(2), dtype=F64), "listnet with equal scores")
    for scores, _, labels in _cases():
        want = ref.listnet_loss(scores[None], labels[None])
        _close(call(module, "listnet", scores, labels), want, f"listnet n={len(scores)}")
    got = call(module, "listnet", torch.tensor([1e4, -1e4], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64))
    assert torch.isfinite(got), "listnet is not finite at scores of +/-1e4: use log_softmax, not log(softmax)"


def check_listmle(module: ModuleType, call: Call) -> None:
    _close(call(module, "listmle", torch.zeros(3, dtype=F64), torch.tensor([1, 2, 3])),
           torch.tensor(math.log(6), dtype=F64), "listmle with equal scores (1/3! per ordering)")
    for scores, ranks, _ in _cases():
        want = ref.listmle_loss(scores[None], ranks[None])
        _close(call(module, "listmle", scores, ranks), want, f"listmle n={len(scores)}")
    got = call(module, "listmle", torch.tensor([-1e4, 1e4, 0.0], dtype=F64), torch.tensor([1, 2, 3]))
    assert torch.isfinite(got), "listmle is not finite at scores of +/-1e4: use logsumexp"
    failures = ref.check_loss(_batched(module, "listmle", call))
    assert failures == [], f"listmle fails the chapter's checks: {failures}"


def check_listmle_grad(module: ModuleType, call: Call) -> None:
    for scores, ranks, _ in _cases():
        s = scores.clone().requires_grad_(True)
        (want,) = torch.autograd.grad(ref.listmle_loss(s[None], ranks[None]), s)
        got = call(module, "listmle_grad", scores.clone(), ranks)
        _close(got, want, f"listmle_grad n={len(scores)} (compared with autograd)")
        assert abs(float(got.sum())) < 1e-9, "listmle_grad must sum to 0: adding a constant to all scores changes nothing"


CHECKS: dict[str, Callable[[ModuleType, Call], None]] = {
    "weighted_ranknet": check_weighted_ranknet,
    "listnet": check_listnet,
    "listmle": check_listmle,
    "listmle_grad": check_listmle_grad,
}


@pytest.fixture(scope="module")
def exercises() -> ModuleType:
    return load_exercises()


def test_weighted_ranknet(exercises: ModuleType) -> None:
    check_weighted_ranknet(exercises, call_or_skip)


def test_listnet(exercises: ModuleType) -> None:
    check_listnet(exercises, call_or_skip)


def test_listmle(exercises: ModuleType) -> None:
    check_listmle(exercises, call_or_skip)


def test_listmle_grad(exercises: ModuleType) -> None:
    check_listmle_grad(exercises, call_or_skip)


def test_reference_solutions_pass_every_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """CI: the same checks, pointed at the private reference solutions, pass with no skips."""
    monkeypatch.setenv(ENV, str(HERE / "_reference_ex04.py"))
    module = load_exercises()
    assert Path(module.__file__).name == "_reference_ex04.py"
    for check in CHECKS.values():
        check(module, call_strict)


def test_checks_catch_a_wrong_solution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The checks must be able to fail: a solution with the sign of eq. 2 as printed is rejected."""
    wrong = tmp_path / "wrong_ex04.py"
    wrong.write_text(
        (HERE / "_reference_ex04.py").read_text().replace("F.softplus(scores[j] - scores[i])", "F.softplus(scores[i] - scores[j])")
    )
    monkeypatch.setenv(ENV, str(wrong))
    with pytest.raises(AssertionError):
        check_weighted_ranknet(load_exercises(), call_strict)


def test_stub_file_defines_every_exercise_and_skips_with_a_hint() -> None:
    """The student file defines all four functions; an unfinished one becomes a helpful skip."""
    spec = importlib.util.spec_from_file_location("ex04_stub", DEFAULT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in CHECKS:
        assert callable(getattr(module, name)), f"the stub file must define {name}"

    def unfinished(*args: Any) -> Any:
        raise NotImplementedError

    fake = ModuleType("fake_ex04")
    fake.listmle = unfinished  # type: ignore[attr-defined]
    with pytest.raises(pytest.skip.Exception, match="not done yet"):
        call_or_skip(fake, "listmle", torch.zeros(2), torch.tensor([1, 2]))
