"""minirank.records: what a run leaves behind is never overwritten, never mixed with another run's."""
import json

import pytest
import torch

from minirank import records as R


def test_refuse_existing_refuses_a_file_or_a_full_folder_and_says_what_to_do(tmp_path):
    assert R.refuse_existing(tmp_path / "new.json") == tmp_path / "new.json"
    (tmp_path / "empty").mkdir()
    assert R.refuse_existing(tmp_path / "empty", "adapter folder")  # an empty folder is free to use
    (tmp_path / "old.json").write_text("{}")
    with pytest.raises(FileExistsError, match=r"result file .*old.json already exists; minirank never overwrites "
                                              r"what a run made: choose another path or pass --force"):
        R.refuse_existing(tmp_path / "old.json")
    assert R.refuse_existing(tmp_path / "old.json", force=True)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(FileExistsError, match="adapter folder .* is not empty.*or remove it yourself"):
        R.refuse_existing(tmp_path / "full", "adapter folder", hint="remove it yourself")


def test_write_json_writes_whole_files_never_over_another(tmp_path):
    path = R.write_json(tmp_path / "sub" / "r.json", {"x": float("nan"), "dtype": torch.float32, "n": torch.tensor(3),
                                                      "t": (1, 2.5)})
    assert json.loads(path.read_text()) == {"x": None, "dtype": "torch.float32", "n": 3, "t": [1, 2.5]}
    assert not list((tmp_path / "sub").glob("*.partial"))
    with pytest.raises(FileExistsError, match="--force"):
        R.write_json(path, {"y": 1})
    assert json.loads(R.write_json(path, {"y": 1}, force=True).read_text()) == {"y": 1}
    with pytest.raises(TypeError, match="cannot write object"):
        R.write_json(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists()


def test_claim_folder_keeps_a_folder_to_one_run(tmp_path):
    a = {"id": "aaa", "config": {"objective": "joint", "learning_rate": 0.05}, "data_hash": "1" * 64}
    b = {"id": "bbb", "config": {"objective": "lm-only", "learning_rate": 0.05}, "data_hash": "1" * 64}
    folder = R.claim_folder(tmp_path / "ck", a)
    assert R.read_claim(folder)["id"] == "aaa" and R.claim_folder(folder, a) == folder  # the same run: fine
    with pytest.raises(FileExistsError, match=r"run aaa .*run bbb .*config.objective 'joint' -> 'lm-only'") as err:
        R.claim_folder(folder, b)
    assert "learning_rate" not in str(err.value).split("differ in")[1]  # only what differs is listed
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="does not say which run made it"):
        R.claim_folder(tmp_path / "other", a)
    assert R.claim_folder(tmp_path / "other", a, adopt=True) and R.read_claim(tmp_path / "other")["id"] == "aaa"


def test_machine_describes_the_device_dtype_and_versions():
    m = R.machine("cpu")
    assert m["device"] == "cpu" and m["dtype"] == "float32" and m["threads"] >= 1
    assert m["torch"] == torch.__version__ and m["transformers"] and m["peft"] and m["python"]
    assert R.machine("cpu", torch.bfloat16)["dtype"] == "bfloat16"
