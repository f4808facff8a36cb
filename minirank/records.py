"""What a run leaves behind: result files, adapters and checkpoint folders are never overwritten or mixed.

A benchmark may run for hours and an adapter is a day of GPU time: losing one to a typo in a path, or
resuming one run's checkpoint with another run's settings, costs more than any error message. So every
program in minirank writes its records through this module:

* :func:`refuse_existing`: a path that already holds something (a file, or a folder that is not empty)
  is refused with a :class:`FileExistsError` saying what to do, before any work starts;
* :func:`write_json`: a result file is written whole (a ``.partial`` file, then renamed) and, without
  ``force``, never over a file that appeared while the run was going;
* :func:`claim_folder`: a folder that collects a run's files (the Trainer's checkpoints) records whose
  run it is (:data:`RUN_FILE`); a folder of another run is refused, naming both runs and how they differ;
* :func:`machine`: the machine description every benchmark writes into its JSON.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import json
import math
import os
import platform
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

#: The file in a claimed folder that says which run it belongs to.
RUN_FILE = "minirank_run.json"


def _holds_something(path: Path) -> bool:
    if path.is_dir() and not path.is_symlink():
        return any(path.iterdir())
    return path.exists() or path.is_symlink()


def refuse_existing(path: str | os.PathLike, what: str = "result file", *, force: bool = False,
                    hint: str = "pass --force") -> Path:
    """``path`` as a :class:`~pathlib.Path` if nothing is there yet (or it is an empty folder, or ``force``).

    Otherwise a :class:`FileExistsError` names ``what`` and ``path`` and ends with "choose another path
    or ``hint``" (``hint``: the caller's way out, e.g. ``"remove it yourself"`` where there is no
    ``--force``). Call it before the work starts, so that a long run is not lost at its end.
    """
    path = Path(path)
    if not force and _holds_something(path):
        state = "already exists and is not empty" if path.is_dir() else "already exists"
        raise FileExistsError(f"{what} {path} {state}; minirank never overwrites what a run made: "
                              f"choose another path or {hint}")
    return path


@contextlib.contextmanager
def new_folder(path: str | os.PathLike, what: str = "folder", hint: str = "remove it yourself") -> Iterator[Path]:
    """Write a folder whole: refused like :func:`refuse_existing` before any work, then the block writes into
    ``path.partial`` (yielded, empty), which is renamed to ``path`` only when the block ends without an error, so
    a crash never leaves a half-written folder under the real name."""
    path = refuse_existing(path, what, hint=hint)
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # a crashed earlier attempt's leftovers, never the real folder
    partial.mkdir(parents=True)
    yield partial
    if path.exists():
        path.rmdir()  # an empty folder, checked above
    partial.rename(path)


def _plain(value):
    """``value`` with NaN/inf floats as None (JSON has no NaN) and torch/numpy/path values as JSON types."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, (torch.dtype, torch.device, Path)):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # a numpy or torch scalar
        return _plain(value.item())
    raise TypeError(f"cannot write {type(value).__name__} {value!r} to JSON")


def write_json(path: str | os.PathLike, data, *, force: bool = False) -> Path:
    """Write ``data`` to ``path`` as indented JSON (parent folders made), and return the path.

    Refused like :func:`refuse_existing` unless ``force``; written to ``path.partial`` first and then
    renamed, so a crash never leaves half a file. NaN and infinite floats are written as ``null``.
    A TypeError names a value JSON cannot hold.
    """
    path = refuse_existing(path, force=force)
    if path.is_dir():
        raise IsADirectoryError(f"result file {path} is a folder; give the path of a .json file to write")
    text = json.dumps(_plain(data), indent=2, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    try:
        refuse_existing(path, force=force)  # another run may have written it since we started
    except FileExistsError:
        partial.unlink()
        raise
    partial.replace(path)
    return path


# ---------------------------------------------------------------- a folder belongs to one run

def _describe_run(run: Mapping) -> str:
    config = run.get("config") or {}
    shown = ", ".join(f"{k} {config[k]!r}" for k in ("objective", "learning_rate", "seed") if k in config)
    data = f", data {str(run.get('data_hash', '?'))[:12]}" if "data_hash" in run else ""
    base = f", base {run['base_model']!r}" if "base_model" in run else ""
    return f"run {run.get('id', '?')} ({shown}{data}{base})"


def _short(value) -> str:
    return value[:12] if isinstance(value, str) and len(value) > 16 else repr(value)  # a hash: its start


def _differences(theirs: Mapping, ours: Mapping, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(theirs) | set(ours)):
        if key == "id":
            continue
        a, b = theirs.get(key), ours.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping) and key != "base_signature":
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} {_short(a)} -> {_short(b)}")
    return out


def read_claim(folder: str | os.PathLike) -> dict | None:
    """The run a folder was claimed for (the content of its :data:`RUN_FILE`), None if it has none."""
    path = Path(folder) / RUN_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def claim_folder(folder: str | os.PathLike, run: Mapping, what: str = "checkpoint folder",
                 adopt: bool = False) -> Path:
    """Make ``folder`` the folder of ``run``, or check that it already is; return it as a Path.

    ``run``: a JSON-able mapping with an ``"id"`` (same id, same run) and what makes the run (e.g.
    ``config``, ``data_hash``, ``base_model``), written to ``folder/RUN_FILE``. A folder that is absent
    or empty is claimed; one claimed by the same id is returned as it is. A :class:`FileExistsError`
    refuses a folder claimed by another run (naming both and what differs) or one that holds files
    but no claim (``adopt=True`` claims it anyway: for a folder whose *name* is the run's id).
    """
    folder = Path(folder)
    theirs = read_claim(folder)
    if theirs is not None and theirs.get("id") == run["id"]:
        return folder
    if theirs is not None:
        changes = _differences(theirs, run)
        raise FileExistsError(
            f"{what} {folder} belongs to another run: it holds {_describe_run(theirs)}, and this is "
            f"{_describe_run(run)}; they differ in {'; '.join(changes) or 'their ids'}. Continuing it would "
            f"mix the two runs' weights and settings. Give this run a {what} of its own (or none: each run "
            f"then gets one in the cache), or delete {folder} yourself to start over.")
    if _holds_something(folder) and not adopt:
        raise FileExistsError(f"{what} {folder} is not empty and does not say which run made it (no {RUN_FILE}); "
                              f"minirank will not continue or delete files it cannot tell belong to this run, "
                              f"{_describe_run(run)}: choose another folder or empty this one yourself")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RUN_FILE).write_text(json.dumps(_plain(run), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return folder


# ---------------------------------------------------------------- the machine, for benchmark JSON

def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine(device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> dict:
    """The machine a benchmark ran on, as written into its JSON: the device and its name (GPU model, or
    CPU and core count), torch's CPU threads, the dtype (default :func:`minirank.device.pick_dtype`),
    the versions of python, torch, transformers, peft, trl and datasets, and the platform string."""
    from minirank.device import pick_device, pick_dtype

    device = pick_device(device)
    dtype = dtype or pick_dtype(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.processor() or platform.machine()} CPU ({os.cpu_count()} cores)"
    return {"device": str(device), "device_name": name, "threads": torch.get_num_threads(),
            "dtype": str(dtype).replace("torch.", ""), "torch": torch.__version__,
            "transformers": _version("transformers"), "peft": _version("peft"),
            "trl": _version("trl"), "datasets": _version("datasets"),
            "python": platform.python_version(), "platform": platform.platform()}
