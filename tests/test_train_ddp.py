"""Two-process data-parallel training (torchrun, gloo on CPU) matches single-process training."""
import os
import socket
import subprocess
import sys

import pytest
import torch
import yaml

import relaxed_e3nn
from relaxed_e3nn.train import load_checkpoint, train
from relaxed_e3nn.train._testing import tiny_train_config, write_emt_copper


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _config(data, out):
    # 9 training structures with global batch 4: the last batch (1 structure) leaves rank 1 idle
    return tiny_train_config(str(data), out, epochs=3, batch_size=4, ema_decay=0.5,
                             data={"val_fraction": 0.25}, device="cpu")


@pytest.mark.slow
def test_two_process_training_matches_single_process(tmp_path):
    data = write_emt_copper(tmp_path / "cu.xyz", n=12, seed=2)
    config_path = tmp_path / "ddp.yaml"
    config_path.write_text(yaml.safe_dump(_config(data, tmp_path / "ddp")))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
               "-m", "relaxed_e3nn", "train", str(config_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, cwd=str(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("2 ranks") == 1  # only rank 0 reports (and writes)

    single = train(_config(data, tmp_path / "single"))
    parallel = relaxed_e3nn.load(tmp_path / "ddp" / "model.pt")
    for key, value in single.model.state_dict().items():
        torch.testing.assert_close(parallel.state_dict()[key], value, rtol=1e-9, atol=1e-11, msg=key)
    ddp_history = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")["history"]
    for a, b in zip(ddp_history, single.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-9)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-9)
        assert a["val_forces_mae"] == pytest.approx(b["val_forces_mae"], rel=1e-9)
    # the weights moved: the comparison is not between two untrained models
    first = load_checkpoint(tmp_path / "single" / "checkpoint.pt")["history"][0]
    assert single.history[-1]["train_loss"] != first["train_loss"] or len(single.history) == 1
    assert len(list((tmp_path / "ddp").glob("*.tmp"))) == 0


def test_distributed_context_single_process_is_a_no_op():
    from relaxed_e3nn.train._distributed import setup_distributed

    ctx = setup_distributed("cpu", env={})
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.enabled) == (0, 1, True, False)
    value = torch.ones(3)
    assert torch.equal(ctx.all_reduce_(value), torch.ones(3))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device is available"):
            setup_distributed("cuda", env={})
