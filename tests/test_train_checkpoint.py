"""Training checkpoints: round trip, RNG states, corrupt / truncated / foreign files."""
import fractions
import random

import numpy as np
import pytest
import torch

from relaxed_e3nn.train import load_checkpoint, save_checkpoint
from relaxed_e3nn.train._checkpoint import rng_state, set_rng_state


def _state():
    return {"config": {"epochs": 2}, "model": {"w": torch.arange(4.0)}, "optimizer": {"state": {}},
            "epoch": 1, "rng": rng_state(), "split": {"n": 3, "train": [0, 1], "val": [2], "test": []},
            "history": [{"epoch": 1, "train_loss": 0.5}]}


def test_round_trip(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, _state())
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 1 and torch.equal(loaded["model"]["w"], torch.arange(4.0))
    assert loaded["split"]["val"] == [2] and loaded["history"][0]["train_loss"] == 0.5
    assert not list(tmp_path.glob("*.tmp"))


def test_rng_states_restore_exactly():
    state = rng_state()
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.rand(5), np.random.rand(5), random.random()
    set_rng_state(state)
    got = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(expected[0], got[0])
    assert np.array_equal(expected[1], got[1])
    assert expected[2] == got[2]


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_and_corrupt(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, _state())
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt, truncated"):
        load_checkpoint(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(ValueError, match="corrupt, truncated"):
        load_checkpoint(garbage)
    flipped = bytearray(data)
    middle = len(flipped) // 2
    flipped[middle:middle + 64] = bytes(64)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(broken)


def test_foreign_files(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(ValueError, match="not a relaxed_e3nn training checkpoint"):
        load_checkpoint(foreign)
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(ValueError, match="not a relaxed_e3nn training checkpoint"):
        load_checkpoint(tensor)

    pickled = tmp_path / "pickled.pt"  # arbitrary pickled objects are refused (weights_only loading)
    torch.save({"format": "relaxed_e3nn.train_checkpoint", "obj": fractions.Fraction(1, 3)}, pickled)
    with pytest.raises(ValueError, match="corrupt, truncated or not"):
        load_checkpoint(pickled)


def test_newer_version_and_incomplete(tmp_path):
    path = tmp_path / "new.pt"
    torch.save({**_state(), "format": "relaxed_e3nn.train_checkpoint", "format_version": 99}, path)
    with pytest.raises(ValueError, match="format version 99"):
        load_checkpoint(path)
    partial = tmp_path / "partial.pt"
    torch.save({"format": "relaxed_e3nn.train_checkpoint", "format_version": 1, "epoch": 3}, partial)
    with pytest.raises(ValueError, match="incomplete"):
        load_checkpoint(partial)
    with pytest.raises(ValueError, match="lacks"):
        save_checkpoint(tmp_path / "x.pt", {"epoch": 1})
