"""``relaxed-e3nn train / evaluate / predict`` from the command line."""
import json

import ase.io
import numpy as np
import pytest
import yaml

import relaxed_e3nn
from relaxed_e3nn.cli import main
from relaxed_e3nn.train import TrainResult
from relaxed_e3nn.train._testing import emt_copper_frames, tiny_train_config, write_emt_copper


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = write_emt_copper(root / "cu.xyz", n=6, seed=0)
    config = tiny_train_config(str(data), root / "run", epochs=3)
    config["model"]["num_layers"] = 3  # overridden by the flag below
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    code = main(["train", str(path), "--model.num_layers", "1", "--epochs=2", "--strict",
                 "--data.test_fraction", "0.2"])
    return {"root": root, "data": data, "code": code, "config_path": path}


def test_train_flags_override_the_file(trained, capsys):
    assert trained["code"] == 0
    model = relaxed_e3nn.load(trained["root"] / "run" / "model.pt")
    assert model.config.num_layers == 1 and model.config.relaxed is False
    written = yaml.safe_load((trained["root"] / "run" / "config.yaml").read_text())
    assert written["epochs"] == 2 and written["strict"] is True and written["data"]["test_fraction"] == 0.2


def test_evaluate_prints_and_writes_metrics(trained, capsys, tmp_path):
    out = tmp_path / "metrics.json"
    code = main(["evaluate", str(trained["root"] / "run" / "model.pt"), str(trained["data"]), "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "6 structures, 24 atoms" in printed and "forces_mae" in printed and "energy_total_rmse" in printed
    metrics = json.loads(out.read_text())
    assert metrics["forces_mae"] > 0 and np.isfinite(metrics["loss"])


def test_predict_writes_extxyz(trained, tmp_path, capsys):
    out = tmp_path / "pred" / "predicted.xyz"
    model_path = trained["root"] / "run" / "model.pt"
    assert main(["predict", str(model_path), str(trained["data"]), "--out", str(out), "--stress"]) == 0
    frames = ase.io.read(str(out), ":")
    reference = ase.io.read(str(trained["data"]), ":")
    assert len(frames) == 6
    model = relaxed_e3nn.load(model_path)
    from relaxed_e3nn.train import predict

    expected = predict(model, reference[:1], compute_stress=True)[0]
    assert frames[0].get_potential_energy() == pytest.approx(expected.get_potential_energy(), rel=1e-9)
    np.testing.assert_allclose(frames[0].get_forces(), expected.get_forces(), atol=1e-7)  # extxyz keeps 8 decimals
    assert frames[0].get_stress().shape == (6,)
    # the predictions are the model's, not the EMT references copied through
    assert not np.allclose(frames[0].get_forces(), reference[0].get_forces())


def test_evaluate_rejects_unknown_species(trained, tmp_path, capsys):
    alloy = tmp_path / "alloy.xyz"
    ase.io.write(str(alloy), emt_copper_frames(2, seed=1, symbols="CuAu"))
    code = main(["evaluate", str(trained["root"] / "run" / "model.pt"), str(alloy)])
    assert code == 1
    assert "[79] are not among the species" in capsys.readouterr().err


def test_evaluate_rejects_missing_targets(trained, tmp_path, capsys):
    bare = emt_copper_frames(2, seed=1)
    for atoms in bare:
        atoms.calc = None
    path = tmp_path / "bare.xyz"
    ase.io.write(str(path), bare)
    assert main(["evaluate", str(trained["root"] / "run" / "model.pt"), str(path)]) == 1
    assert "carry no energies, forces or stresses" in capsys.readouterr().err
    assert main(["evaluate", str(trained["root"] / "run" / "model.pt"), str(path), "--energy-key", "REF_E"]) == 1
    assert "'REF_E' is missing" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--epochz", "3"], "unknown key 'epochz'; did you mean 'epochs'"),
    (["--model.num_layer", "2"], "did you mean 'num_layers'"),
    (["--epochs", "many"], "epochs must be an int"),
    (["stray"], "does not exist"),
])
def test_bad_command_lines_fail_cleanly(tmp_path, capsys, argv, message):
    data = write_emt_copper(tmp_path / "cu.xyz", n=3, seed=0)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_train_config(str(data), tmp_path / "run", epochs=1)))
    args = ["train"] + (argv if argv == ["stray"] else [str(path)] + argv)
    assert main(args) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_help_lists_config_keys(capsys):
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    assert "data.{train, val, test" in text and "optim.{name, lr" in text and "box_dynamics" in text


def test_box_dynamics_is_delegated(tmp_path, monkeypatch, capsys):
    import relaxed_e3nn.train._dynamics

    seen = {}

    def fake_train_dynamics(config):
        seen.update(config)
        return TrainResult(model=None, history=[], best_epoch=3, best_val_loss=0.25, test_metrics={"mse": 0.125},
                           stopped_early=False, output_dir=None, model_path=None,
                           metrics={"test_mse": 0.125, "best_epoch": 3})

    monkeypatch.setattr(relaxed_e3nn.train._dynamics, "train_dynamics", fake_train_dynamics)
    path = tmp_path / "box.yaml"
    path.write_text(yaml.safe_dump({"task": "box_dynamics", "model": "degnn", "epochs": 5}))
    assert main(["train", str(path), "--epochs", "2", "--group", "D2h"]) == 0
    assert seen == {"task": "box_dynamics", "model": "degnn", "epochs": 2, "group": "D2h"}
    assert "test_mse: 0.125" in capsys.readouterr().out
