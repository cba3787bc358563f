"""Box-dynamics training on outside data: npz files, early stopping, clipping, resume, selection, bad inputs."""
import json
import warnings

import numpy as np
import pytest
import torch
import yaml

import relaxed_e3nn
from relaxed_e3nn.cli import main
from relaxed_e3nn.data.generators import BoxDynamicsData, box_nbody
from relaxed_e3nn.train import train, train_dynamics
from relaxed_e3nn.train import _dynamics
from relaxed_e3nn.train._dynamics import _predict, _Tensors, dominant_share, trimmed_mean


def _data(num_samples=18, seed=0):
    return box_nbody(num_samples=num_samples, num_bodies=3, input_frame=1, target_frame=2, seed=seed)


def _config(tmp_path=None, **kwargs):
    config = dict(hidden=4, num_layers=1, num_train=6, num_val=6, num_test=6, epochs=3, batch_size=3,
                  dtype="float64", output_dir=None if tmp_path is None else str(tmp_path))
    config.update(kwargs)
    return config


def _npz_files(tmp_path, data):
    paths = {}
    for name, part in zip(("train", "val", "test"), (slice(0, 6), slice(6, 12), slice(12, 18))):
        paths[name] = str(tmp_path / f"{name}.npz")
        data.subset(part).save_npz(paths[name])
    return paths


def _arrays(data):
    return dict(positions=data.positions, velocities=data.velocities, charges=data.charges,
                target_positions=data.targets, half_widths=data.half_widths)


def test_npz_round_trip_and_training_from_files_through_the_cli(tmp_path):
    data = _data()
    paths = _npz_files(tmp_path, data)
    loaded = BoxDynamicsData.from_npz(paths["val"])
    assert np.array_equal(loaded.positions, data.positions[6:12]) and loaded.group_name == "D2h"
    assert loaded.target_time == pytest.approx(data.target_time) == pytest.approx(0.1)
    config = tmp_path / "box.yaml"
    config.write_text(yaml.safe_dump({"task": "box_dynamics", "data": paths, "hidden": 4, "num_layers": 1,
                                      "epochs": 2, "batch_size": 3, "output_dir": str(tmp_path / "out")}))
    assert main(["train", str(config)]) == 0
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for key in ("history", "best_epoch", "best_val_loss", "stopped_early", "test", "test_mse"):
        assert key in written
    assert written["test_mse"] == written["test"]["mse"] and len(written["history"]) == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["metrics.json", "model.pt"]
    # the same samples in memory give the same run
    same = train_dynamics(_config(hidden=4, epochs=2, dtype="float32"), data=data)
    assert same["test_mse"] == pytest.approx(written["test_mse"], rel=1e-6)


def test_load_reproduces_the_trained_model_bit_for_bit(tmp_path):
    data = _data()
    result = train_dynamics(_config(tmp_path), data=data)
    loaded = relaxed_e3nn.load(result.model_path)
    assert loaded.normalize and loaded.baseline == "reflected" and float(loaded.target_scale) != 1.0
    test = _Tensors(data.subset(slice(12, 18)), torch.float64)
    index = torch.arange(6)
    with torch.no_grad():
        assert torch.equal(_predict(loaded, test, index, {}), _predict(result.model, test, index, {}))


@pytest.mark.parametrize("change, error, match", [
    (lambda a: a.pop("charges"), KeyError, r"missing key\(s\) \['charges'\]"),
    (lambda a: a.update(velocities=a["velocities"][:, :2]), ValueError, r"velocities must have shape \(18, 3, 3\)"),
    (lambda a: a["target_positions"].__setitem__((0, 0, 0), np.nan), ValueError, "target_positions contains NaN"),
    (lambda a: a.update(half_widths=np.array([5.0, 4.0])), ValueError, "half_widths must be 3 positive"),
    (lambda a: a.update(dt=np.float64(-1.0)), ValueError, "dt must be a positive number"),
    (lambda a: a.update(extra=np.zeros(2)), ValueError, r"unknown key\(s\) \['extra'\]"),
])
def test_bad_npz_files_raise_errors_naming_the_key(tmp_path, change, error, match):
    arrays = _arrays(_data())
    change(arrays)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(error, match=match):
        BoxDynamicsData.from_npz(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        BoxDynamicsData.from_npz(tmp_path / "missing.npz")


def test_missing_dt_is_an_error_only_for_models_that_need_it():
    data = BoxDynamicsData.from_arrays(**_arrays(_data()))  # no dt
    assert data.target_time is None and np.array_equal(data.center, np.zeros(3))
    with pytest.raises(ValueError, match="needs the time from input to target \\(the npz key 'dt'\\)"):
        train_dynamics(_config(), data=data)
    result = train_dynamics(_config(baseline="none"), data=data)
    assert np.isfinite(result["test_mse"])


def test_early_stopping_after_patience_epochs_without_gain():
    # a learning rate so small that the float32 weights never change: no epoch after the first improves
    result = train_dynamics(_config(epochs=10, patience=2, lr=1e-30, dtype="float32"), data=_data())
    assert result.stopped_early and result.best_epoch == 1 and len(result.history) == 3
    assert result["stopped_early"] is True
    assert not train_dynamics(_config(epochs=3, patience=5), data=_data()).stopped_early


def test_gradient_clipping_limits_the_update():
    def weights(**kwargs):
        result = train_dynamics(_config(epochs=1, **kwargs), data=_data())
        return result, {k: v.detach() for k, v in result.model.named_parameters()}

    start = weights(lr=1e-30)[1]
    clipped, clipped_weights = weights(lr=1e-2, grad_clip=1e-12)
    free, free_weights = weights(lr=1e-2, grad_clip=None)
    norm = clipped.history[0]["grad_norm"]
    assert norm == pytest.approx(free.history[0]["grad_norm"]) and norm > 1e-6  # recorded before clipping
    # a gradient clipped far below Adam's eps all but stops the steps
    moved_clipped = max(float((clipped_weights[k] - start[k]).abs().max()) for k in start)
    moved_free = max(float((free_weights[k] - start[k]).abs().max()) for k in start)
    assert moved_clipped < 1e-3 * moved_free


def test_resume_continues_bit_for_bit(tmp_path, monkeypatch):
    data = _data()
    straight = train_dynamics(_config(tmp_path / "straight", epochs=4), data=data)
    original = _dynamics._Run._epoch

    def interrupted(self, epoch):
        if epoch == 3:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(_dynamics._Run, "_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_dynamics(_config(tmp_path / "run", epochs=4), data=data)
    monkeypatch.setattr(_dynamics._Run, "_epoch", original)
    assert (tmp_path / "run" / "checkpoint.pt").exists() and (tmp_path / "run" / "model.pt").exists()
    relaxed_e3nn.load(tmp_path / "run" / "model.pt")  # an interrupted run's kept model is loadable
    with pytest.raises(ValueError, match="pass --resume"):
        train_dynamics(_config(tmp_path / "run", epochs=4), data=data)
    with pytest.raises(ValueError, match=r"differs from the checkpoint's in \['lr'\]"):
        train_dynamics(_config(tmp_path / "run", epochs=4, lr=0.5, resume=True), data=data)
    resumed = train_dynamics(_config(tmp_path / "run", epochs=4, resume=True), data=data)
    drop = lambda rows: [{k: v for k, v in row.items() if k != "time_s"} for row in rows]  # noqa: E731
    assert drop(resumed.history) == drop(straight.history)
    for (name, a), b in zip(resumed.model.state_dict().items(), straight.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    with pytest.raises(FileNotFoundError, match="no checkpoint.pt"):
        train_dynamics(_config(tmp_path / "fresh", resume=True), data=data)


def test_trimmed_selection_ignores_one_outlier_and_warns():
    errors = torch.tensor([0.1] * 99 + [1000.0], dtype=torch.float64)
    assert trimmed_mean(errors, 0.02) == pytest.approx(0.1)
    assert trimmed_mean(errors, 0.0) == pytest.approx(float(errors.mean()))
    assert dominant_share(errors) > 0.99 and dominant_share(torch.ones(100)) == pytest.approx(0.01)
    with pytest.warns(UserWarning, match="A few outliers dominate the validation loss"):
        _dynamics._warn_if_dominated({"epoch": 3, "top_share": 0.99, "val_mse": 10.0, "score": 0.1}, 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _dynamics._warn_if_dominated({"epoch": 3, "top_share": 0.2, "val_mse": 1.0, "score": 0.9}, 100)


def test_history_and_metrics_through_train(tmp_path):
    result = train({"task": "box_dynamics", **_config(tmp_path / "m", epochs=2, num_bodies=3, input_frame=1,
                                                      target_frame=2)})
    row = result.history[0]
    for key in ("train_loss", "val_loss", "val_mse", "val_trimmed_mse", "val_top_share", "grad_norm", "lr"):
        assert key in row
    written = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert written["selection"]["rule"] == "trimmed" and written["no_motion_mse"] > 0
    assert written["history"][written["best_epoch"] - 1]["val_mse"] == written["best_val_loss"]


def test_bad_dynamics_config_values():
    with pytest.raises(ValueError, match="data must map exactly train, val and test"):
        train_dynamics(_config(data={"train": "a.npz"}))
    with pytest.raises(ValueError, match="selection must be one of"):
        train_dynamics(_config(selection="median"))
    with pytest.raises(ValueError, match="patience must be positive"):
        train_dynamics(_config(patience=0))
