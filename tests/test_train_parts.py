"""The trainer's parts: the target rule, the EMA, the metrics schema, the dynamics config, deprecated names."""
import json
import warnings

import numpy as np
import pytest
import torch

from relaxed_e3nn.data import from_ase
from relaxed_e3nn.train import (METRICS_SCHEMA_VERSION, DynamicsConfig, ExponentialMovingAverage, TrainConfig,
                                TrainResult, fit_atomic_energies, metrics_summary, select_targets, train)
from relaxed_e3nn.train._testing import emt_copper_frames, tiny_train_config, write_emt_copper


def _graphs(periodic=True, n=3):
    return [from_ase(a, 3.0, dtype=torch.float64) for a in emt_copper_frames(n, seed=0, periodic=periodic)]


# -- one target rule ----------------------------------------------------------------------------
def test_select_targets_reports_unweighted_and_requires_weighted():
    graphs = _graphs()
    spec = select_targets("energy", graphs)
    assert spec.names == ["energy", "forces", "stress"] and spec.weights["stress"] == 0.0
    assert spec.fitted().names == ["energy", "forces"]
    assert not spec.fitted().compute_stress and spec.compute_stress
    for g in graphs:
        g.node_targets = {}
    # evaluation compares what is there; training needs every weighted target
    assert select_targets("energy", graphs).names == ["energy", "stress"]
    with pytest.raises(ValueError, match="3 structures have no forces"):
        select_targets("energy", graphs, require_weighted=True)
    with pytest.raises(ValueError, match="every loss weight of the energy model is zero"):
        select_targets("energy", graphs, require_weighted=True, loss_weights={"energy": 0.0, "forces": 0.0})


def test_select_targets_node_widths_must_agree():
    graphs = _graphs(n=2)
    graphs[0].node_targets = {"d": torch.zeros(graphs[0].num_nodes, 3)}
    graphs[1].node_targets = {"d": torch.zeros(graphs[1].num_nodes, 2)}
    with pytest.raises(ValueError, match="target 'd' has 2 components in structure 1 but 3 elsewhere"):
        select_targets("node", graphs, node_targets=["d"])
    with pytest.raises(ValueError, match="needs node_targets"):
        select_targets("node", graphs)
    graphs[1].node_targets = {}
    with pytest.raises(ValueError, match="target 'd' is missing"):
        select_targets("node", graphs, node_targets=["d"])


def test_prune_keeps_only_the_selected_targets_and_leaves_the_input():
    graphs = _graphs(n=2)
    spec = select_targets("energy", graphs, loss_weights={"stress": 0.0})
    spec = spec.fitted()
    pruned = spec.prune(graphs)
    assert set(pruned[0].graph_targets) == {"energy"} and set(pruned[0].node_targets) == {"forces"}
    assert "stress" in graphs[0].graph_targets


# -- fit_atomic_energies is the trainer's per-atom fit -------------------------------------------
def test_fit_atomic_energies_weighs_structures_per_atom():
    frames = emt_copper_frames(4, seed=2, symbols="CuAu") + emt_copper_frames(3, seed=3, symbols="CuAu",
                                                                               periodic=False)
    graphs = [from_ase(a, 3.0, dtype=torch.float64) for a in frames]
    shifts = fit_atomic_energies(graphs, [29, 79], batch_size=3)
    counts = np.array([[np.sum(a.numbers == 29), np.sum(a.numbers == 79)] for a in frames], dtype=float)
    n_atoms = counts.sum(axis=1)
    energies = np.array([a.get_potential_energy() for a in frames])
    expected, *_ = np.linalg.lstsq(counts / n_atoms[:, None], energies / n_atoms, rcond=None)
    np.testing.assert_allclose(shifts, expected, rtol=1e-10)
    with pytest.raises(ValueError, match=r"atomic numbers \[79\] are not among \[29\]"):
        fit_atomic_energies(graphs, [29])
    with pytest.raises(ValueError, match="graphs is empty"):
        fit_atomic_energies([], [29])


# -- EMA ----------------------------------------------------------------------------------------
class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
        self.register_buffer("scale", torch.tensor(1.0, dtype=torch.float64))


def test_ema_averages_swaps_and_restores():
    model = _Tiny()
    ema = ExponentialMovingAverage(model, 0.5, exclude=("scale",))
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.scale.fill_(3.0)
    ema.update(model)  # 0.5 * 0 + 0.5 * 2
    with ema.swapped(model):
        torch.testing.assert_close(model.weight.detach(), torch.full((3,), 1.0, dtype=torch.float64))
        assert float(model.scale) == 3.0  # excluded: the model's own value
        with torch.no_grad():
            model.scale.fill_(5.0)
    torch.testing.assert_close(model.weight.detach(), torch.full((3,), 2.0, dtype=torch.float64))
    assert float(model.scale) == 3.0  # everything restored
    state = ema.state_dict()
    assert set(state["shadow"]) == {"weight"}
    other = ExponentialMovingAverage(_Tiny(), 0.9, exclude=("scale",))
    other.load_state_dict({"decay": 0.5, "shadow": {"weight": torch.ones(3, dtype=torch.float64),
                                                    "scale": torch.tensor(7.0, dtype=torch.float64)}})
    target = _Tiny()
    other.copy_to(target)
    assert float(target.weight.detach().sum()) == 3.0 and float(target.scale) == 1.0
    with pytest.raises(ValueError, match="decay"):
        ExponentialMovingAverage(model, 1.0)


# -- metrics.json schema, one result type --------------------------------------------------------
def test_metrics_summary_layout():
    summary = metrics_summary(task="energy", history=[], best_epoch=0, best_val_loss=float("inf"),
                              stopped_early=False, test=None, units={"forces": "eV/Å"}, extra_key=1)
    assert summary["schema_version"] == METRICS_SCHEMA_VERSION == 2
    assert list(summary)[:9] == ["schema_version", "task", "units", "history", "best_epoch", "best_val_loss",
                                 "stopped_early", "test", "model_path"]
    assert summary["best_val_loss"] is None and summary["extra_key"] == 1
    json.dumps(summary)


def test_train_writes_schema_2_and_accepts_out_dir(tmp_path):
    data = write_emt_copper(tmp_path / "cu.xyz", n=5, seed=0)
    config = tiny_train_config(str(data), tmp_path / "run", epochs=1, data={"test_fraction": 0.2})
    config["out_dir"] = config.pop("output_dir")
    with pytest.warns(DeprecationWarning, match="'out_dir' is deprecated; use 'output_dir'"):
        result = train(config)
    assert isinstance(result, TrainResult)
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written == json.loads(json.dumps(result.metrics))
    assert written["schema_version"] == 2 and written["task"] == "energy"
    assert written["units"]["forces"] == "eV/Å" and written["best_epoch"] == result.best_epoch == 1
    assert written["test"]["forces_mae"] == result.test_metrics["forces_mae"] == result["test"]["forces_mae"]
    assert written["model_path"] == str(tmp_path / "run" / "model.pt") == str(result.model_path)
    assert "val_stress_mae" in result.history[0]  # reported at weight 0, as evaluate reports it
    lines = result.summary_lines()
    assert any(line.startswith("test_forces_mae: ") and line.endswith("eV/Å") for line in lines)
    with pytest.raises(ValueError, match="give 'output_dir' only"):
        TrainConfig.from_dict({**config, "output_dir": "x"})


def test_optimizer_names_include_sgd():
    config = TrainConfig.from_dict({"data": {"train": "x.xyz"}, "optim": {"name": "sgd"}})
    assert config.optim.name == "sgd"
    with pytest.raises(ValueError, match=r"optim.name must be one of \('adam', 'adamw', 'sgd'\)"):
        TrainConfig.from_dict({"data": {"train": "x.xyz"}, "optim": {"name": "lbfgs"}})


# -- box dynamics -------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:.*is deprecated; use:DeprecationWarning")  # several former names at once
def test_dynamics_config_checks_and_former_names():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert DynamicsConfig.from_dict({"num_layers": 2}).num_layers == 2
    with pytest.warns(DeprecationWarning, match="'layers' is deprecated; use 'num_layers'"):
        config = DynamicsConfig.from_dict({"layers": 2, "n_train": 3})
    assert config.num_layers == 2 and config.num_train == 3
    with pytest.raises(ValueError, match=r"unknown keys \['epoch', 'lrr'\]; did you mean 'epochs' for 'epoch'\?"):
        DynamicsConfig.from_dict({"epoch": 3, "lrr": 0.1})
    with pytest.raises(TypeError, match="hidden must be an int"):
        DynamicsConfig.from_dict({"hidden": "wide"})
    with pytest.raises(ValueError, match="num_bodies must be a positive integer"):
        DynamicsConfig.from_dict({"num_bodies": 0})
    with pytest.raises(ValueError, match="dtype must be one of"):
        DynamicsConfig.from_dict({"dtype": "float16"})


def test_train_dispatches_box_dynamics_to_the_same_result_type(tmp_path):
    config = {"task": "box_dynamics", "hidden": 4, "num_layers": 1, "num_train": 4, "num_val": 4, "num_test": 4,
              "num_bodies": 3, "epochs": 2, "batch_size": 4, "input_frame": 1, "target_frame": 2,
              "output_dir": str(tmp_path / "box")}
    result = train(config)
    assert isinstance(result, TrainResult) and len(result.history) == 2
    written = json.loads((tmp_path / "box" / "metrics.json").read_text())
    assert written["schema_version"] == 2 and written["task"] == "box_dynamics"
    assert written["test_mse"] == written["test"]["mse"] == result["test_mse"] == result.test_metrics["mse"]
    assert 1 <= written["best_epoch"] <= 2 and written["best_val_loss"] == written["val_mse"]
    assert written["history"][written["best_epoch"] - 1]["val_mse"] == written["val_mse"]
    assert result.model_path == tmp_path / "box" / "model.pt" and written["group"] == "D2h"
    assert any(line.startswith("test_mse: ") for line in result.summary_lines())
