"""A run killed with SIGKILL mid-epoch and resumed ends bitwise equal to an uninterrupted run."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

import relaxed_e3nn
from relaxed_e3nn.cli import main
from relaxed_e3nn.train import epoch_permutation, load_checkpoint, train
from relaxed_e3nn.train._testing import tiny_train_config, write_emt_copper

EPOCHS = 8


def _config(data, out):
    # EMA, a plateau schedule and early-stopping bookkeeping all have to survive the restart
    return tiny_train_config(str(data), out, epochs=EPOCHS, batch_size=2, ema_decay=0.8, patience=50,
                             optim={"lr": 0.02, "scheduler": "plateau", "lr_patience": 1, "lr_factor": 0.7})


def test_epoch_permutation_depends_only_on_seed_and_epoch():
    a = epoch_permutation(50, seed=3, epoch=7)
    torch.rand(100)  # global RNG use in between changes nothing
    assert torch.equal(a, epoch_permutation(50, seed=3, epoch=7))
    assert not torch.equal(a, epoch_permutation(50, seed=3, epoch=8))
    assert not torch.equal(a, epoch_permutation(50, seed=4, epoch=7))
    assert sorted(a.tolist()) == list(range(50))


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bitwise_equal(tmp_path):
    data = write_emt_copper(tmp_path / "cu.xyz", n=10, seed=0)
    killed_dir = tmp_path / "killed"
    config_path = tmp_path / "killed.yaml"
    config_path.write_text(yaml.safe_dump(_config(data, killed_dir)))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "-m", "relaxed_e3nn", "train", str(config_path)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=str(tmp_path))
    checkpoint = killed_dir / "checkpoint.pt"
    try:
        deadline = time.monotonic() + 120
        while not checkpoint.exists():
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        first_seen = time.monotonic()
        # one more epoch boundary, then kill part-way into the next epoch
        while load_checkpoint(checkpoint)["epoch"] < 2:
            assert process.poll() is None, process.stderr.read().decode()
            time.sleep(0.01)
        epoch_time = max(time.monotonic() - first_seen, 0.05)
        time.sleep(0.4 * epoch_time)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(checkpoint)["epoch"]
    assert 2 <= killed_at < EPOCHS, "the run was not killed mid-training"
    assert not (killed_dir / "model.pt").exists()

    # resume through the command line, in this process
    assert main(["train", str(config_path), "--resume"]) == 0
    resumed = load_checkpoint(checkpoint)
    assert resumed["epoch"] == EPOCHS and len(resumed["history"]) == EPOCHS

    reference = train(_config(data, tmp_path / "reference"))
    final = relaxed_e3nn.load(killed_dir / "model.pt")
    for key, value in reference.model.state_dict().items():
        assert torch.equal(value, final.state_dict()[key]), key
    uninterrupted = load_checkpoint(tmp_path / "reference" / "checkpoint.pt")
    for key, value in uninterrupted["model"]["state_dict"].items():
        assert torch.equal(value, resumed["model"]["state_dict"][key]), key
    for key, value in uninterrupted["ema"]["shadow"].items():
        assert torch.equal(value, resumed["ema"]["shadow"][key]), key
    assert [row["train_loss"] for row in uninterrupted["history"]] == [row["train_loss"] for row in resumed["history"]]
    assert [row["lr"] for row in uninterrupted["history"]] == [row["lr"] for row in resumed["history"]]


def test_resume_without_checkpoint_starts_fresh_and_finished_run_is_kept(tmp_path):
    data = write_emt_copper(tmp_path / "cu.xyz", n=5, seed=0)
    config = tiny_train_config(str(data), tmp_path / "run", epochs=1, resume=True)
    first = train(config)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] == 1
    again = train(config)  # nothing left to do: the same final model
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key])
    longer = train(dict(config, epochs=2))  # more epochs may be asked for on resume
    assert len(longer.history) == 2 and longer.history[0] == first.history[0]


def test_corrupt_checkpoint_in_output_dir_is_reported(tmp_path):
    data = write_emt_copper(tmp_path / "cu.xyz", n=5, seed=0)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="corrupt, truncated"):
        train(tiny_train_config(str(data), tmp_path / "run", epochs=1, resume=True))
