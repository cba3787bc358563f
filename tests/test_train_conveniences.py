"""What a training run gives a user besides the weights: true docs, data statistics, warnings, limits.

The documented defaults are the code's; ``num_neighbors`` comes from the data; ``E0s`` fix the
shifts; graphs without edges and tiny validation sets are warned about; ``max_time`` stops a run
cleanly and ``resume`` finishes it; ``evaluate`` reuses the data keys stored with the model;
errors per ``config_type``; metrics printed in meV while ``metrics.json`` keeps eV.
"""
import importlib.util
import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
import yaml

import relaxed_e3nn
from relaxed_e3nn.cli import main
from relaxed_e3nn.train import load_checkpoint, stored_data_keys, train
from relaxed_e3nn.train._config import config_defaults
from relaxed_e3nn.train._statistics import atomic_energies_from_e0s
from relaxed_e3nn.train._testing import emt_copper_frames, tiny_train_config, write_emt_copper

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("config_defaults", ROOT / "scripts" / "config_defaults.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _flatten(d, prefix=""):
    out = {}
    for key, value in d.items():
        if isinstance(value, dict) and key in ("data", "model", "loss", "optim", "symmetry"):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_docs_defaults_block_is_the_code():
    text = (ROOT / "docs" / "training.rst").read_text()
    script = _script()
    first, last = script.block_span(text.split("\n"))
    documented = _flatten(yaml.safe_load("\n".join(text.split("\n")[first:last])))
    defaults = config_defaults()
    assert sorted(set(defaults) - set(documented)) == []
    wrong = {k: (documented[k], v) for k, v in defaults.items() if documented[k] != v}
    assert wrong == {}, f"docs/training.rst disagrees with the code (run scripts/config_defaults.py): {wrong}"
    # the generator leaves the file as it is
    assert script.rewrite(text) == (text, [])


def test_docs_check_fails_for_a_changed_default():
    """Negative control: a default that differs from the block is caught."""
    text = (ROOT / "docs" / "training.rst").read_text().replace("   epochs: 100 ", "   epochs: 7   ", 1)
    new, missing = _script().rewrite(text)
    assert new != text and "   epochs: 100 " in new and missing == []


def _run(tmp_path, name="run", n=6, **top):
    data = write_emt_copper(tmp_path / "cu.xyz", n=n, seed=0)
    config = tiny_train_config(str(data), tmp_path / name, **top)
    return data, config


def test_num_neighbors_comes_from_the_training_data(tmp_path):
    data, config = _run(tmp_path, epochs=1)
    del config["model"]["num_neighbors"]
    result = train(config)
    model = result.model
    split = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["split"]
    frames = ase.io.read(str(data), ":")
    from relaxed_e3nn.train import graphs_for_model

    graphs = graphs_for_model(model, [frames[i] for i in split["train"]])
    expected = sum(g.num_edges for g in graphs) / sum(g.num_nodes for g in graphs)
    assert model.config.num_neighbors == pytest.approx(expected, rel=1e-12)
    assert relaxed_e3nn.load(result.model_path).config.num_neighbors == model.config.num_neighbors


def test_e0s_are_the_fixed_atomic_energies(tmp_path):
    _, config = _run(tmp_path, epochs=1, E0s={"Cu": -0.25})
    model = train(config).model
    assert model.atomic_energies.tolist() == [-0.25]
    assert atomic_energies_from_e0s({29: 1.0, "Au": 2.0}, [79, 29]) == [2.0, 1.0]
    with pytest.raises(ValueError, match=r"no isolated-atom energy for \['Au'\]"):
        atomic_energies_from_e0s({"Cu": 1.0}, [29, 79])
    with pytest.raises(ValueError, match="'Xx' is neither an element symbol"):
        atomic_energies_from_e0s({"Xx": 1.0}, [29])
    with pytest.raises(ValueError, match="not among the model's species"):
        atomic_energies_from_e0s({"Cu": 1.0, "O": 0.0}, [29])


def test_a_cutoff_without_edges_is_warned_about(tmp_path):
    _, config = _run(tmp_path, epochs=1)
    config["model"]["cutoff"] = 0.5
    with pytest.warns(UserWarning, match=r"have no edge within the cutoff 0.5 Å"):
        train(config)


def test_a_tiny_validation_set_is_warned_about(tmp_path):
    _, config = _run(tmp_path, epochs=1)  # 6 structures, val_fraction 0.2: one held out
    with pytest.warns(UserWarning, match="the validation set holds 1 structures"):
        train(config)


def test_max_time_stops_cleanly_and_resume_finishes(tmp_path):
    _, config = _run(tmp_path, n=8, epochs=4, data={"test_fraction": 0.25})
    stopped = train(dict(config, max_time=1e-9))  # passed after the first epoch
    assert len(stopped.history) == 1
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert checkpoint["epoch"] == 1 and not checkpoint["finished"]
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["stopped_by_max_time"] is True and written["test"] is not None
    assert (tmp_path / "run" / "model.pt").is_file() and stopped.test_metrics is not None
    resumed = train(dict(config, resume=True))
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3, 4]
    assert "stopped_by_max_time" not in json.loads((tmp_path / "run" / "metrics.json").read_text())
    # the interrupted run ends where an uninterrupted one does (CPU: bit for bit)
    _, again = _run(tmp_path, name="again", n=8, epochs=4, data={"test_fraction": 0.25})
    straight = train(again)
    assert [r["train_loss"] for r in straight.history] == [r["train_loss"] for r in resumed.history]
    with pytest.raises(ValueError, match="max_time must be > 0"):
        train(dict(config, max_time=0))


def test_evaluate_reuses_the_stored_data_keys(tmp_path, capsys):
    frames = emt_copper_frames(6, seed=1)
    for atoms in frames:
        atoms.info["REF_energy"] = atoms.get_potential_energy()
        atoms.arrays["REF_forces"] = atoms.get_forces()
        atoms.calc = None
    path = tmp_path / "ref.xyz"
    ase.io.write(str(path), frames)
    config = tiny_train_config(str(path), tmp_path / "run", epochs=1,
                               data={"energy_key": "REF_energy", "forces_key": "REF_forces"})
    result = train(config)
    model = relaxed_e3nn.load(result.model_path)
    assert stored_data_keys(model)["energy"] == "REF_energy" and stored_data_keys(model)["forces"] == "REF_forces"
    capsys.readouterr()
    assert main(["evaluate", str(result.model_path), str(path)]) == 0
    printed = capsys.readouterr().out
    assert "forces_mae" in printed and "energy_mae" in printed
    # the control: other keys given on the command line win, and are missing here
    assert main(["evaluate", str(result.model_path), str(path), "--energy-key", "other"]) == 1


def test_errors_per_config_type_and_units(tmp_path, capsys):
    frames = emt_copper_frames(10, seed=2)
    for k, atoms in enumerate(frames):
        atoms.info["config_type"] = "bulk" if k % 2 else "rattled"
    path = tmp_path / "typed.xyz"
    ase.io.write(str(path), frames)
    result = train(tiny_train_config(str(path), tmp_path / "run", epochs=1, data={"test_fraction": 0.4}))
    table = result.metrics["by_config_type"]
    assert set(table) <= {"bulk", "rattled"} and sum(row["count"] for row in table.values()) == 4
    assert all("forces_mae" in row for row in table.values())
    printed = capsys.readouterr().out
    assert "errors by config_type:" in printed and "forces_mae [meV/Å]" in printed
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["units"]["forces"] == "eV/Å"  # the file keeps eV
    assert written["test"]["forces_mae"] == pytest.approx(result.test_metrics["forces_mae"])
    lines = result.summary_lines()
    forces = next(line for line in lines if line.startswith("test_forces_mae: "))
    value = float(forces.split()[1])
    assert forces.endswith("meV/Å") and value == pytest.approx(1e3 * result.test_metrics["forces_mae"], rel=1e-3)
    assert np.isfinite(value)
