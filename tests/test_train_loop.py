"""The training loop on small EMT datasets: learning, outputs, targets, EMA, early stopping, bad input."""
import json

import ase.io
import numpy as np
import pytest
import torch

import relaxed_e3nn
from relaxed_e3nn.train import evaluate, fit_atomic_energies, load_checkpoint, predict, train
from relaxed_e3nn.train._inference import graphs_for_model
from relaxed_e3nn.train._testing import emt_copper_frames, tiny_train_config, write_emt_copper


@pytest.fixture(scope="module")
def copper(tmp_path_factory):
    """One small training run shared by the tests that inspect its outputs."""
    root = tmp_path_factory.mktemp("copper")
    data = write_emt_copper(root / "cu.xyz", n=16, seed=1)
    config = tiny_train_config(str(data), root / "run", epochs=12,
                               data={"val_fraction": 0.25, "test_fraction": 0.125},
                               loss={"energy": 1.0, "forces": 10.0, "stress": 1.0},
                               optim={"lr": 0.05, "scheduler": "cosine"})
    result = train(config)
    return {"root": root, "data": data, "config": config, "result": result}


@pytest.mark.slow
def test_force_error_drops_well_below_force_scale(copper):
    result = copper["result"]
    frames = ase.io.read(str(copper["data"]), ":")
    mean_force = float(np.mean(np.abs(np.concatenate([a.get_forces() for a in frames]))))
    first, best = result.history[0], result.history[result.best_epoch - 1]
    assert best["val_forces_mae"] < 0.35 * mean_force, (best["val_forces_mae"], mean_force)
    # the best validation loss is far below that of the untrained model (same split and
    # initialisation; an update of 1e-30 leaves the float64 weights unchanged)
    config = dict(copper["config"], output_dir=str(copper["root"] / "untrained"), epochs=1,
                  optim={"lr": 1e-30, "scheduler": "none"})
    untrained = train(config).history[0]["val_loss"]
    assert best["val_loss"] < 0.1 * untrained, (best["val_loss"], untrained)
    assert result.history[-1]["train_loss"] < 0.5 * first["train_loss"]
    assert result.test_metrics is not None and result.test_metrics["forces_mae"] < 0.5 * mean_force
    assert {"energy_mae", "energy_rmse", "energy_total_mae", "forces_rmse", "stress_mae"} <= set(result.test_metrics)


def test_no_constant_per_atom_energy_offset(copper):
    # EMT energies of these cells spread by ~0.1 eV/atom; the fitted shifts follow the network's
    # own mean per-atom output, which moves by ~1 eV/atom while the forces are fitted
    result = copper["result"]
    frames = ase.io.read(str(copper["data"]), ":")
    per_atom = np.array([a.get_potential_energy() / len(a) for a in frames])
    spread = float(per_atom.std())
    assert 0.05 < spread < 0.2, spread
    assert max(row["val_energy_mae"] for row in result.history) < 0.03, [r["val_energy_mae"] for r in result.history]
    assert result.test_metrics["energy_mae"] < 0.05, result.test_metrics


def test_shifts_are_least_squares_for_the_final_network(copper):
    from relaxed_e3nn.data import collate

    model = relaxed_e3nn.load(copper["root"] / "run" / "model.pt")
    frames = ase.io.read(str(copper["data"]), ":")
    train_frames = [frames[i] for i in load_checkpoint(copper["root"] / "run" / "checkpoint.pt")["split"]["train"]]
    batch = collate(graphs_for_model(model, train_frames))
    n_atoms = torch.bincount(batch.batch).double()
    shift = float(model.atomic_energies[0])
    network = (model(batch)["energy"].detach() - shift * n_atoms) / n_atoms
    reference = batch.graph_targets["energy"].reshape(-1) / n_atoms
    # one species: the per-atom least-squares shift is the mean per-atom residual
    expected = float((reference - network).mean())
    assert shift == pytest.approx(expected, rel=1e-10, abs=1e-12)
    assert model.atomic_energies.tolist()[0] == pytest.approx(expected, rel=1e-10, abs=1e-12)
    squared = lambda e0: float(((network + e0 - reference) ** 2).sum())  # noqa: E731
    assert squared(shift) < squared(shift + 1e-3) and squared(shift) < squared(shift - 1e-3)


def test_shifts_follow_the_averaged_weights_with_ema(tmp_path):
    from relaxed_e3nn.data import collate

    data = write_emt_copper(tmp_path / "cu.xyz", n=6, seed=0)
    result = train(tiny_train_config(str(data), tmp_path / "run", epochs=2, ema_decay=0.5,
                                     optim={"lr": 0.05, "scheduler": "none"}))
    model = result.model
    split = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["split"]
    frames = ase.io.read(str(data), ":")
    batch = collate(graphs_for_model(model, [frames[i] for i in split["train"]]))
    n_atoms = torch.bincount(batch.batch).double()
    shift = float(model.atomic_energies[0])
    assert model.atomic_energies.tolist() == [shift]
    network = (model(batch)["energy"].detach() - shift * n_atoms) / n_atoms
    expected = float((batch.graph_targets["energy"].reshape(-1) / n_atoms - network).mean())
    assert shift == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_outputs_written(copper):
    result, out = copper["result"], copper["root"] / "run"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["checkpoint.pt", "metrics.csv", "metrics.json", "loss_curve.png", "model.pt", "config.yaml"])
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (out / "metrics.csv").read_text().splitlines()
    assert len(lines) == 1 + len(result.history) == 13
    assert lines[0].startswith("epoch,lr,train_loss,val_loss")
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["best_epoch"] == result.best_epoch and len(summary["history"]) == 12
    assert summary["test"]["forces_mae"] == pytest.approx(result.test_metrics["forces_mae"])
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert checkpoint["epoch"] == 12 and checkpoint["finished"] is False
    split = checkpoint["split"]
    assert sorted(split["train"] + split["val"] + split["test"]) == list(range(16))
    assert (len(split["val"]), len(split["test"])) == (4, 2)
    # cosine schedule: the learning rate decays
    assert result.history[-1]["lr"] < result.history[0]["lr"]


def test_final_model_is_best_and_reloads(copper):
    result = copper["result"]
    model = relaxed_e3nn.load(copper["root"] / "run" / "model.pt")
    for key, value in result.model.state_dict().items():
        assert torch.equal(value, model.state_dict()[key])
    # the fitted energy shift and output scale were stored in the model
    frames = ase.io.read(str(copper["data"]), ":")
    assert model.atomic_energies.tolist() is not None and len(model.atomic_energies.tolist()) == 1
    assert model.atomic_energies.tolist()[0] != 0.0 and float(model.scale) != 1.0
    # evaluating the best weights reproduces the validation metrics of the best epoch
    checkpoint = load_checkpoint(copper["root"] / "run" / "checkpoint.pt")
    val_frames = [frames[i] for i in checkpoint["split"]["val"]]
    metrics = evaluate(model, graphs_for_model(model, val_frames), loss_weights={"stress": 1.0})
    best = result.history[result.best_epoch - 1]
    assert metrics["forces_mae"] == pytest.approx(best["val_forces_mae"], rel=1e-9)
    assert metrics["loss"] == pytest.approx(best["val_loss"], rel=1e-9)


def test_model_file_is_not_a_checkpoint(copper):
    with pytest.raises(ValueError, match="not a relaxed_e3nn training checkpoint"):
        load_checkpoint(copper["root"] / "run" / "model.pt")


def test_existing_run_needs_resume_and_same_config(copper):
    config = dict(copper["config"])
    with pytest.raises(ValueError, match="already holds a checkpoint; pass --resume"):
        train(config)
    changed = dict(config, resume=True, optim={"lr": 0.5})
    with pytest.raises(ValueError, match=r"differs from the checkpoint's in \['optim.lr'"):
        train(changed)


def test_predict_matches_reference_model(copper):
    model = relaxed_e3nn.load(copper["root"] / "run" / "model.pt")
    frames = emt_copper_frames(3, seed=5)
    predicted = predict(model, frames, compute_stress=True, batch_size=2)
    for atoms, ref in zip(predicted, frames):
        graph = graphs_for_model(model, [ref], with_targets=False)[0]
        out = model(graph, compute_forces=True)
        assert atoms.get_potential_energy() == pytest.approx(float(out["energy"].detach()), rel=1e-12)
        np.testing.assert_allclose(atoms.get_forces(), out["forces"].detach().numpy(), rtol=1e-10, atol=1e-12)
        assert atoms.get_stress().shape == (6,)


def test_unknown_species_rejected(copper):
    model = relaxed_e3nn.load(copper["root"] / "run" / "model.pt")
    alloy = emt_copper_frames(2, seed=3, symbols="CuAu")
    with pytest.raises(ValueError, match=r"atomic numbers \[79\] are not among the species"):
        predict(model, alloy)


@pytest.mark.slow
def test_energy_shift_fit_is_least_squares():
    from relaxed_e3nn.data import from_ase

    frames = emt_copper_frames(6, seed=2, symbols="CuAu", periodic=False)
    graphs = [from_ase(a, 4.0, dtype=torch.float64) for a in frames]
    shifts = fit_atomic_energies(graphs, [29, 79])
    counts = np.array([[np.sum(a.numbers == 29), np.sum(a.numbers == 79)] for a in frames], dtype=float)
    energies = np.array([a.get_potential_energy() for a in frames])
    expected, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    np.testing.assert_allclose(shifts, expected, rtol=1e-12)
    # a perturbed solution has a larger residual (the fit is the minimiser)
    residual = np.sum((counts @ shifts - energies) ** 2)
    assert residual < np.sum((counts @ (np.asarray(shifts) + [0.01, 0.0]) - energies) ** 2)


def test_initial_scale_and_shifts_match_the_data():
    from relaxed_e3nn.data import collate, from_ase
    from relaxed_e3nn.models import RelaxedNetwork, RelaxedNetworkConfig
    from relaxed_e3nn.train._statistics import initialise_output as _initialise_output
    from relaxed_e3nn.train._targets import TargetSpec

    frames = emt_copper_frames(6, seed=2, symbols="CuAu", periodic=False)
    graphs = [from_ase(a, 4.0, dtype=torch.float64) for a in frames]
    torch.manual_seed(0)
    model = RelaxedNetwork(RelaxedNetworkConfig(species=[29, 79], cutoff=4.0, num_layers=1, lmax=1,
                                                irreps_hidden="4x0e+2x1o+2x1e")).double()
    raw = model(collate(graphs), compute_forces=True)
    spec = TargetSpec("energy", ["energy", "forces"], {"energy": 1.0, "forces": 1.0})
    _initialise_output(model, graphs, spec, fit_scale=True, fit_shifts=True)
    out = model(collate(graphs), compute_forces=True)
    forces = torch.cat([g.node_targets["forces"] for g in graphs])
    # the initial forces are as large (RMS) as the reference forces, and exactly the raw ones scaled
    assert float(out["forces"].detach().pow(2).mean().sqrt()) == pytest.approx(float(forces.pow(2).mean().sqrt()), rel=1e-10)
    torch.testing.assert_close(out["forces"].detach(), float(model.scale) * raw["forces"].detach(), rtol=1e-10, atol=1e-12)
    # the shifts are the least-squares fit of the remaining energy
    energies = torch.cat([g.graph_targets["energy"] for g in graphs]).numpy()
    counts = np.array([[np.sum(a.numbers == 29), np.sum(a.numbers == 79)] for a in frames], dtype=float)
    expected, *_ = np.linalg.lstsq(counts, energies - float(model.scale) * raw["energy"].detach().numpy(), rcond=None)
    np.testing.assert_allclose(model.atomic_energies.tolist(), expected, rtol=1e-9)


def test_initial_shifts_with_a_given_scale():
    # model.scale given (no scale fit): the untrained network's energies already carry the scale,
    # and the shifts absorb exactly the remaining per-atom residual
    from relaxed_e3nn.data import collate, from_ase
    from relaxed_e3nn.models import RelaxedNetwork, RelaxedNetworkConfig
    from relaxed_e3nn.train._statistics import initialise_output as _initialise_output
    from relaxed_e3nn.train._targets import TargetSpec

    frames = emt_copper_frames(4, seed=2, symbols="CuAu") + emt_copper_frames(3, seed=3, symbols="CuAu",
                                                                               periodic=False)
    graphs = [from_ase(a, 3.0, dtype=torch.float64) for a in frames]
    for g in graphs:  # the clusters have no stress; the trainer keeps only the fitted targets
        g.graph_targets = {"energy": g.graph_targets["energy"]}
    torch.manual_seed(0)
    model = RelaxedNetwork(RelaxedNetworkConfig(species=[29, 79], cutoff=3.0, num_layers=1, lmax=1,
                                                irreps_hidden="4x0e+2x1o+2x1e"), dtype=torch.float64)
    model.set_scale(0.25)
    batch = collate(graphs)
    raw = model(batch)["energy"].detach()  # scale 0.25, no shifts
    spec = TargetSpec("energy", ["energy", "forces"], {"energy": 1.0, "forces": 1.0})
    _initialise_output(model, graphs, spec, fit_scale=False, fit_shifts=True)
    assert float(model.scale) == 0.25
    out = model(batch)["energy"].detach()
    n_atoms = np.array([len(a) for a in frames], dtype=float)
    counts = np.array([[np.sum(a.numbers == 29), np.sum(a.numbers == 79)] for a in frames], dtype=float)
    energies = np.array([a.get_potential_energy() for a in frames])
    # the fit minimises the per-atom error (4- and 6-atom structures weigh as in the energy loss)
    expected, *_ = np.linalg.lstsq(counts / n_atoms[:, None], (energies - raw.numpy()) / n_atoms, rcond=None)
    np.testing.assert_allclose(model.atomic_energies.tolist(), expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out.numpy(), raw.numpy() + counts @ expected, rtol=1e-12, atol=1e-12)
    error = (out.numpy() - energies) / n_atoms
    spread = float(np.std(energies / n_atoms))
    assert float(np.abs(error).mean()) < spread, (np.abs(error).mean(), spread)
    # the residual is orthogonal to the per-atom composition: no shift lowers the per-atom error
    np.testing.assert_allclose((counts / n_atoms[:, None]).T @ error, 0.0, atol=1e-10)


@pytest.mark.slow
def test_node_targets_from_generator_with_ema(tmp_path):
    config = tiny_train_config(
        {"generator": "perovskite_distortion", "num_samples": 10, "seed": 0, "supercells": [1]}, tmp_path / "run",
        epochs=3, ema_decay=0.5, data={"node_targets": ["displacements"], "val_fraction": 0.2},
        extra_model={"output": "node", "irreps_out": "1o", "cutoff": 3.0})
    result = train(config)
    # the untrained network predicts zero displacement on the centrosymmetric cubic inputs (θ = 0):
    # the fitted scale stays bounded by the data's size instead of dividing by ~0
    from relaxed_e3nn.data.generators import GENERATORS

    frames = GENERATORS["perovskite_distortion"](num_samples=10, seed=0, supercells=[1])
    rms = float(np.sqrt(np.mean(np.concatenate([a.arrays["displacements"] for a in frames]) ** 2)))
    assert 0 < float(result.model.scale) <= 10.0 * rms * (1 + 1e-9)
    assert result.history[-1]["val_displacements_mae"] < 10 * rms
    row = result.history[-1]
    assert {"val_displacements_mae", "val_displacements_rmse", "val_loss"} <= set(row)
    assert "val_energy_mae" not in row
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert checkpoint["ema"]["decay"] == 0.5
    # the final model carries the EMA weights of the best epoch, not the raw weights
    raw = checkpoint["model"]["state_dict"]
    final = result.model.state_dict()
    assert any(not torch.equal(raw[k], final[k].cpu()) for k in raw if raw[k].is_floating_point())


def test_graph_vector_target(tmp_path):
    frames = emt_copper_frames(8, seed=3, symbols="CuAu", periodic=False)
    for atoms in frames:
        charges = np.where(atoms.numbers == 79, 1.0, -1.0)
        centred = atoms.positions - atoms.positions.mean(axis=0)
        atoms.info["polarity"] = (charges[:, None] * centred).sum(axis=0)
        atoms.calc = None
    path = tmp_path / "polarity.xyz"  # ("dipole" would be read back as a calculator result)
    ase.io.write(str(path), frames)
    config = tiny_train_config(str(path), tmp_path / "run", epochs=2, data={"graph_targets": ["polarity"]},
                               extra_model={"output": "graph", "irreps_out": "1o", "graph_reduce": "sum"},
                               loss={"polarity": 2.0})
    result = train(config)
    row = result.history[-1]
    assert {"val_polarity_mae", "val_polarity_rmse"} <= set(row) and np.isfinite(row["val_loss"])
    assert row["val_loss"] == pytest.approx(2.0 * row["val_polarity_rmse"] ** 2, rel=1e-12)
    # a target whose size disagrees with irreps_out is refused
    bad = tiny_train_config(str(path), tmp_path / "bad", epochs=1, data={"graph_targets": ["polarity"]},
                            extra_model={"output": "graph", "irreps_out": "0e+1o"})
    with pytest.raises(ValueError, match="irreps_out has dimension 4 but the targets"):
        train(bad)


def test_early_stopping_when_nothing_improves(tmp_path):
    data = write_emt_copper(tmp_path / "cu.xyz", n=5, seed=0)
    # an update of 1e-30 leaves every float64 weight unchanged, so the validation loss never improves
    config = tiny_train_config(str(data), tmp_path / "run", epochs=10, patience=2,
                               optim={"lr": 1e-30, "scheduler": "none"})
    result = train(config)
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 1
    assert len({row["val_loss"] for row in result.history}) == 1


def test_strict_trains_equivariant_twin(tmp_path):
    data = write_emt_copper(tmp_path / "cu.xyz", n=5, seed=0)
    result = train(tiny_train_config(str(data), tmp_path / "run", epochs=1, strict=True))
    assert result.model.config.relaxed is False
    relaxed = train(tiny_train_config(str(data), tmp_path / "run2", epochs=1))
    assert relaxed.model.config.relaxed is True
    assert sum(p.numel() for p in relaxed.model.parameters()) > sum(p.numel() for p in result.model.parameters())


def test_float32_run_with_progress_bar(tmp_path, capsys):
    data = write_emt_copper(tmp_path / "cu.xyz", n=5, seed=0)
    result = train(tiny_train_config(str(data), tmp_path / "run", epochs=1, dtype="float32", progress=True))
    assert all(p.dtype == torch.float32 for p in result.model.parameters())
    assert np.isfinite(result.history[0]["val_loss"])
    captured = capsys.readouterr()
    assert "epoch 1/1" in captured.err and "loss=" in captured.err  # the bar shows the live loss
    assert "epoch 1/1 train_loss" in captured.out  # the per-epoch summary line


def test_no_progress_bar_unless_asked(tmp_path, capsys):
    data = write_emt_copper(tmp_path / "cu.xyz", n=5, seed=0)
    train(tiny_train_config(str(data), tmp_path / "run", epochs=1, progress="auto"))  # stderr is not a TTY
    assert "loss=" not in capsys.readouterr().err


def test_given_validation_and_test_files(tmp_path):
    train_file = write_emt_copper(tmp_path / "train.xyz", n=4, seed=0)
    val_file = write_emt_copper(tmp_path / "val.xyz", n=2, seed=1)
    test_file = write_emt_copper(tmp_path / "test.xyz", n=3, seed=2)
    config = tiny_train_config(str(train_file), tmp_path / "run", epochs=1,
                               data={"val": str(val_file), "test": str(test_file), "test_fraction": 0.5})
    result = train(config)
    split = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["split"]
    assert split == {"n": 4, "train": [0, 1, 2, 3], "val": [], "test": []}
    model = result.model
    frames = ase.io.read(str(test_file), ":")
    expected = evaluate(model, graphs_for_model(model, frames))
    assert result.test_metrics["forces_mae"] == pytest.approx(expected["forces_mae"], rel=1e-12)
    with pytest.raises(ValueError, match="graphs is empty"):
        evaluate(model, [])


def test_pymatgen_json_and_cif_with_targets(tmp_path):
    from pymatgen.io.ase import AseAtomsAdaptor

    frames = emt_copper_frames(5, seed=4)
    entries = [{"structure": AseAtomsAdaptor.get_structure(a).as_dict(), "energy": a.get_potential_energy(),
                "forces": a.get_forces().tolist()} for a in frames]
    (tmp_path / "cu.json").write_text(json.dumps(entries))
    for k, atoms in enumerate(frames[:2]):
        ase.io.write(str(tmp_path / f"cu{k}.cif"), atoms)
        (tmp_path / f"cu{k}.json").write_text(json.dumps([{"energy": atoms.get_potential_energy(),
                                                           "forces": atoms.get_forces().tolist(),
                                                           "frame": {"cell": atoms.cell[:].tolist()}}]))
    train_source = [str(tmp_path / "cu.json")] + [
        {"path": str(tmp_path / f"cu{k}.cif"), "targets": str(tmp_path / f"cu{k}.json")} for k in range(2)]
    result = train(tiny_train_config(train_source, tmp_path / "run", epochs=1))
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert checkpoint["split"]["n"] == 7
    assert np.isfinite(result.history[0]["val_forces_mae"])


@pytest.mark.parametrize("change, match", [
    ({"data": {"energy_key": "REF_energy"}}, "energy_key 'REF_energy' is missing"),
    ({"loss": {"stress": 1.0}, "data": {"train": "CLUSTERS"}}, "no structure is periodic"),
    ({"model": {"species": [29, 79, 47], "outputt": "node"}}, "did you mean 'output'"),
    ({"model": {"species": [79]}}, r"species \[29\] occur in the data but not in model.species"),
    ({"data": {"node_targets": ["displacements"]}}, "need model.output 'node'"),
    ({"data": {"train": {"generator": "perovskite_distorsion"}}}, "did you mean 'perovskite_distortion'"),
    ({"data": {"train": "MISSING"}}, "does not exist"),
    ({"data": {"train": "UNLABELLED"}}, "have no energy"),
    ({"data": {"train": "EMPTY"}}, "data.train"),
    ({"data": {"val_fraction": 0.5, "test_fraction": 0.4}}, "too few"),
    ({"model": {"num_layers": "two"}}, "num_layers must be an int"),
])
def test_bad_input_fails_before_training(tmp_path, change, match):
    data = write_emt_copper(tmp_path / "cu.xyz", n=3, seed=0)
    clusters = write_emt_copper(tmp_path / "clusters.xyz", n=3, seed=0, periodic=False)
    unlabelled = tmp_path / "bare.xyz"
    bare = emt_copper_frames(3, seed=0)
    for atoms in bare:
        atoms.calc = None
    ase.io.write(str(unlabelled), bare)
    (tmp_path / "empty.xyz").write_text("")
    names = {"CLUSTERS": str(clusters), "MISSING": str(tmp_path / "nope.xyz"), "UNLABELLED": str(unlabelled),
             "EMPTY": str(tmp_path / "empty.xyz")}
    config = tiny_train_config(str(data), tmp_path / "run", epochs=1)
    for section, values in change.items():
        values = {k: names.get(v, v) if isinstance(v, str) else v for k, v in values.items()}
        config.setdefault(section, {}).update(values)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        train(config)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_deprecated_model_keys_warn_and_train(tmp_path):
    data = write_emt_copper(tmp_path / "cu.xyz", n=4, seed=0)
    config = tiny_train_config(str(data), tmp_path / "run", epochs=1)
    config["model"].update(radial_layers=1)
    with pytest.warns(DeprecationWarning, match="'radial_layers' is deprecated; use 'num_radial_layers'"):
        result = train(config)
    assert result.model.config.num_radial_layers == 1



def _rotated_predictions(model, frames, rotation):
    """Energies and forces that ``predict`` gives for ``frames`` with every position mapped by ``rotation``."""
    moved = []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.positions = atoms.positions @ rotation.T
        moved.append(atoms)
    out = predict(model, moved)
    return np.array([a.get_potential_energy() for a in out]), np.concatenate([a.get_forces() for a in out])


def _assert_equivariant(model, frames, rotation, tol):
    """Energies invariant and forces rotating with ``rotation`` (to ``tol`` relative to their size)."""
    energies, forces = _rotated_predictions(model, frames, np.eye(3))
    moved_energies, moved_forces = _rotated_predictions(model, frames, rotation)
    np.testing.assert_allclose(moved_energies, energies, rtol=0, atol=tol * max(1.0, np.abs(energies).max()))
    np.testing.assert_allclose(moved_forces, forces @ rotation.T, rtol=0, atol=tol * max(1.0, np.abs(forces).max()))


def test_trained_strict_model_is_equivariant_and_relaxed_is_not(tmp_path, dtype, float_tolerance):
    from e3nn import o3

    data = write_emt_copper(tmp_path / "cu.xyz", n=5, seed=0)
    name = str(dtype).replace("torch.", "")
    strict = train(tiny_train_config(str(data), tmp_path / "strict", epochs=1, dtype=name, strict=True)).model
    relaxed = train(tiny_train_config(str(data), tmp_path / "relaxed", epochs=1, dtype=name)).model
    clusters = emt_copper_frames(3, seed=2, periodic=False)
    rotations = [o3.rand_matrix(dtype=torch.float64).numpy() * sign for sign in (1.0, -1.0, 1.0, -1.0)]
    for rotation in rotations:  # proper and improper (parity) elements
        _assert_equivariant(strict, clusters, rotation, float_tolerance)
    # the relaxed twin has learnt symmetry-breaking weights: the same check fails for it
    for rotation in rotations:
        with pytest.raises(AssertionError):
            _assert_equivariant(relaxed, clusters, rotation, 10 * float_tolerance)


def _parameter_step(tmp_path, name, optim):
    """Length of the change of every trainable weight after one full-batch SGD step of ``optim``."""
    data = write_emt_copper(tmp_path / "cu.xyz", n=5, seed=2)
    common = dict(epochs=1, batch_size=8, strict=True, data={"val_fraction": 0.2})
    optim = {"name": "sgd", "scheduler": "none", **optim}
    before = train(tiny_train_config(str(data), tmp_path / f"{name}0", **common, optim={**optim, "lr": 1e-30}))
    after = train(tiny_train_config(str(data), tmp_path / name, **common, optim=optim))
    with torch.no_grad():
        return float(torch.sqrt(sum(((a - b) ** 2).sum() for a, b in
                                    zip(after.model.parameters(), before.model.parameters()))))


def test_gradient_is_clipped_to_grad_clip_by_default(tmp_path):
    from relaxed_e3nn.train import TrainConfig

    assert TrainConfig.from_dict({"data": {"train": "x.xyz"}}).optim.grad_clip == 1.0
    # one SGD step of learning rate 1 moves the weights by the clipped gradient: length exactly 1e-3
    clipped = _parameter_step(tmp_path, "clipped", {"lr": 1.0, "grad_clip": 1e-3})
    assert clipped == pytest.approx(1e-3, rel=1e-5)
    # negative control: unclipped, the same step is longer, so the bound above is not vacuous
    free = _parameter_step(tmp_path, "free", {"lr": 1.0, "grad_clip": None})
    assert free > 10 * clipped
