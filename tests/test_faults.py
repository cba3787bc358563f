"""Faults: two runs on one output directory, a run killed with SIGKILL, a disk that fills mid-checkpoint.

The output directory is held with ``fcntl.flock`` on ``output_dir/.lock`` for a whole run: a second
run on it fails at once with an error naming the directory, and the kernel releases the lock when
the holder dies, so a killed run is resumed at once. A write that fails part-way (``ENOSPC``)
leaves the previous checkpoint or model file byte for byte, loadable, and no temporary file.
"""
import contextlib
import errno
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

import relaxed_e3nn
import relaxed_e3nn.models._io
import relaxed_e3nn.train._checkpoint
from relaxed_e3nn._atomic import atomic_write
from relaxed_e3nn.cli import main
from relaxed_e3nn.models import RelaxedNetwork, RelaxedNetworkConfig
from relaxed_e3nn.train import load_checkpoint, train, train_dynamics
from relaxed_e3nn.train._outputs import LOCK_NAME, OutputDirectoryBusy, output_dir_lock
from relaxed_e3nn.train._testing import tiny_train_config, write_emt_copper

ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _wait_for(condition, process, what, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, f"{what} did not happen"
        time.sleep(0.02)


class _HalfThenFull:
    """A file handle on a disk that fills up: half of the first write lands, then ``ENOSPC``."""

    def __init__(self, handle):
        self.handle = handle

    def write(self, data):
        self.handle.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@contextlib.contextmanager
def _full_disk_write(path, mode="wb"):
    with atomic_write(path, mode) as handle:
        yield _HalfThenFull(handle)


# --------------------------------------------------------------------------- the output-directory lock
def test_a_second_process_cannot_take_a_held_lock_until_the_holder_is_killed(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom relaxed_e3nn.train._outputs import output_dir_lock\n"
                               f"with output_dir_lock({str(out)!r}):\n    print('held', flush=True)\n"
                               "    time.sleep(300)"],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputDirectoryBusy, match=rf"another run \(process {holder.pid}\) holds") as caught:
            with output_dir_lock(out):
                pass
        assert caught.value.filename == str(out) and caught.value.errno == errno.EBUSY
        assert str(out) in str(caught.value)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
        holder.stderr.close()
    assert (out / LOCK_NAME).exists()  # left behind by the kill, but no longer locked
    with output_dir_lock(out):
        assert (out / LOCK_NAME).read_text().strip() == str(os.getpid())
    assert not (out / LOCK_NAME).exists()


def test_the_lock_is_released_and_removed_after_a_failing_run(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="inside"):
        with output_dir_lock(out):
            raise RuntimeError("inside")
    assert not out.exists()  # created for the run and left empty: removed
    with output_dir_lock(out):
        pass
    with output_dir_lock(None):  # nothing to hold
        pass


@pytest.mark.slow
def test_second_training_run_fails_clearly_and_a_killed_run_resumes(tmp_path, capsys):
    data = write_emt_copper(tmp_path / "cu.xyz", n=6, seed=0)
    out = tmp_path / "run"
    config = tiny_train_config(str(data), out, epochs=200)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    first = subprocess.Popen([sys.executable, "-m", "relaxed_e3nn", "train", str(path)], env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=str(tmp_path))
    try:
        _wait_for((out / "checkpoint.pt").exists, first, "a first checkpoint")
        # a second run, resuming or not, through the command line and the API: refused at once
        for argv in (["train", str(path)], ["train", str(path), "--resume"]):
            assert main(argv) == 1
            err = capsys.readouterr().err
            assert f"relaxed-e3nn train: error: output_dir is in use: another run (process {first.pid})" in err
            assert f"({out})" in err and "Traceback" not in err
        with pytest.raises(OutputDirectoryBusy, match="another run"):
            train(config)
        assert first.poll() is None  # the first run goes on
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
        first.stderr.close()
    killed_at = load_checkpoint(out / "checkpoint.pt")["epoch"]
    assert killed_at >= 1
    # the kernel released the lock with the process: --resume continues at once
    assert main(["train", str(path), "--resume", "--epochs", str(killed_at + 1)]) == 0
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == killed_at + 1
    assert not (out / LOCK_NAME).exists() and not list(out.glob("*.tmp"))


def test_train_dynamics_refuses_a_held_output_dir_before_simulating(tmp_path):
    with output_dir_lock(tmp_path / "box"):
        started = time.perf_counter()
        with pytest.raises(OutputDirectoryBusy, match="another run"):
            train_dynamics({"model": "degnn", "epochs": 1, "output_dir": str(tmp_path / "box")})
        assert time.perf_counter() - started < 5.0


# --------------------------------------------------------------------------- a full disk
def test_a_full_disk_mid_checkpoint_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    data = write_emt_copper(tmp_path / "cu.xyz", n=6, seed=0)
    out = tmp_path / "run"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_train_config(str(data), out, epochs=1)))
    assert main(["train", str(path)]) == 0
    checkpoint = out / "checkpoint.pt"
    before = checkpoint.read_bytes()
    assert load_checkpoint(checkpoint)["epoch"] == 1

    monkeypatch.setattr(relaxed_e3nn.train._checkpoint, "atomic_write", _full_disk_write)
    assert main(["train", str(path), "--resume", "--epochs", "2"]) == 1
    err = capsys.readouterr().err
    assert f"relaxed-e3nn train: error: No space left on device ({checkpoint})" in err and "Traceback" not in err
    assert checkpoint.read_bytes() == before  # byte for byte the epoch-1 checkpoint
    assert load_checkpoint(checkpoint)["epoch"] == 1
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp")) and not (out / LOCK_NAME).exists()
    with pytest.raises(OSError, match="No space left") as caught:
        train(tiny_train_config(str(data), out, epochs=2, resume=True))
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(checkpoint)

    monkeypatch.undo()  # space again: the run continues from the intact checkpoint
    assert main(["train", str(path), "--resume", "--epochs", "2"]) == 0
    assert load_checkpoint(checkpoint)["epoch"] == 2


def test_a_full_disk_while_saving_a_model_keeps_the_previous_file(tmp_path, monkeypatch):
    model = RelaxedNetwork(RelaxedNetworkConfig(species=[29], cutoff=4.0, num_layers=1, irreps_hidden="4x0e+2x1o",
                                                lmax=1, irreps_relaxed=1, radial_neurons=8))
    path = tmp_path / "model.pt"
    relaxed_e3nn.save(model, path)
    before = path.read_bytes()
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    monkeypatch.setattr(relaxed_e3nn.models._io, "atomic_write", _full_disk_write)
    with pytest.raises(OSError, match="No space left on device") as caught:
        relaxed_e3nn.save(model, path)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["model.pt"]
    relaxed_e3nn.load(path)  # still loads (its checksum holds)


@pytest.mark.parametrize("stage", ["write", "fsync", "replace"])
def test_atomic_write_failing_at_any_stage_leaves_the_old_file_and_no_temporary(stage, tmp_path, monkeypatch):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if stage != "write":
        monkeypatch.setattr(os, stage, full)
    with pytest.raises(OSError) as caught:
        with atomic_write(path) as handle:
            handle.write(b"new, longer content")
            if stage == "write":
                full()
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    monkeypatch.undo()
    assert path.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["file.bin"]
