"""Validated symmetry breaking in training: EMT slab MD (isotropic physics), symmetrised mirror pairs
(orbit-whole splits and batches), an imposed group, and the agreement of the written records.

Data are generated here (ase EMT, the Lorentz generator), seeded and small.
"""
import json

import ase.io
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

import relaxed_e3nn
from relaxed_e3nn.cli import main
from relaxed_e3nn.data.generators import lorentz
from relaxed_e3nn.groups import frame_from_axes, point_group
from relaxed_e3nn.symmetry import breaking_beyond
from relaxed_e3nn.train import load_checkpoint, predict, train
from relaxed_e3nn.train._data import make_split
from relaxed_e3nn.train._config import DataConfig
from relaxed_e3nn.train._symmetry import block_ids, finetune_budget, restricted_steps
from relaxed_e3nn.train._testing import emt_slab_md, tiny_train_config

MIRROR_NORMAL = np.array([1.0, -1.0, 0.0]) / np.sqrt(2.0)  # B; E along z is perpendicular: Cs


def _rotated(atoms, matrix):
    out = atoms.copy()
    out.positions = atoms.positions @ matrix.T
    out.set_cell(atoms.cell.array @ matrix.T, scale_atoms=False)
    return out


# ----------------------------------------------------------------------------- EMT slab
@pytest.fixture(scope="module")
def slab(tmp_path_factory):
    root = tmp_path_factory.mktemp("slab")
    frames = emt_slab_md(33, seed=0, size=(2, 2, 3))  # 12 atoms: the default model stays affordable
    path = root / "slab.xyz"
    ase.io.write(str(path), frames[:-1], format="extxyz")
    out = root / "run"
    code = main(["train", "--data.train", str(path), "--output_dir", str(out), "--epochs", "3",
                 "--progress", "false"])
    return {"code": code, "out": out, "held_out": frames[-1]}


@pytest.mark.slow
def test_emt_slab_default_training_is_rotation_invariant(slab):
    assert slab["code"] == 0
    model = relaxed_e3nn.load(slab["out"] / "model.pt")
    atoms = slab["held_out"]
    reference = predict(model, [atoms])[0].get_potential_energy()
    changes = [abs(predict(model, [_rotated(atoms, Rotation.random(random_state=k).as_matrix())])[0]
                   .get_potential_energy() - reference) / len(atoms) for k in range(10)]
    changes.append(abs(predict(model, [_rotated(atoms, -np.eye(3))])[0].get_potential_energy() - reference)
                   / len(atoms))
    assert max(changes) <= 1e-3, changes
    record = model.metadata["symmetry"]
    assert record["parent"]["group"] == "O3" and record["parent"]["source"] == "default"
    assert record["decision"]["chosen"]["group"] == "O3", record["decision"]["summary"]
    # 32 frames of one short trajectory leave 3 selection frames: too little evidence for breaking
    assert record["decision"]["thin_evidence"] and not record["validated"]
    assert "too little evidence" in record["decision"]["summary"]


@pytest.mark.slow
def test_emt_slab_with_enough_evidence_validates_o3(tmp_path):
    """Enough held-out frames to test (not the thin-evidence rule): the default relaxed run, with its
    restricted steps, finds that O(3) costs nothing on isotropic physics."""
    frames = emt_slab_md(81, seed=5, size=(2, 2, 3))
    path = tmp_path / "slab.xyz"
    ase.io.write(str(path), frames[:-1], format="extxyz")
    out = tmp_path / "run"
    assert main(["train", "--data.train", str(path), "--output_dir", str(out), "--epochs", "3",
                 "--symmetry.fraction", "0.25", "--progress", "false"]) == 0
    model = relaxed_e3nn.load(out / "model.pt")
    decision = model.metadata["symmetry"]["decision"]
    assert not decision["thin_evidence"] and decision["num_blocks"] >= 10, decision["summary"]
    assert decision["validated"] and decision["chosen"]["group"] == "O3", decision["summary"]
    atoms = frames[-1]
    reference = predict(model, [atoms])[0].get_potential_energy()
    rotated = predict(model, [_rotated(atoms, Rotation.random(random_state=0).as_matrix())])[0]
    assert abs(rotated.get_potential_energy() - reference) / len(atoms) <= 1e-3


@pytest.mark.slow
def test_outputs_agree_and_the_saved_model_is_the_projected_one(slab):
    out = slab["out"]
    written = json.loads((out / "symmetry.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    model = relaxed_e3nn.load(out / "model.pt")
    assert written == metrics["symmetry"] == model.metadata["symmetry"]
    assert written["decision"]["summary"] in (out / "symmetry.txt").read_text()
    assert "parent group O3" in (out / "symmetry.txt").read_text()
    group = point_group(written["group"]["group"], frame=written["group"]["frame"])
    assert max(breaking_beyond(model, group).values()) < 1e-6  # float32 model: projected exactly, cast
    split = load_checkpoint(out / "checkpoint.pt")["split"]
    assert split["selection"] and not set(split["selection"]) & set(split["train"] + split["val"])


# ----------------------------------------------------------------------------- mirror pairs
def _mirror_pairs(path):
    samples = lorentz(num_samples=16, seed=0, E=(0.0, 0.0, 1.0), B=tuple(1.5 * MIRROR_NORMAL), coulomb=0.1,
                      symmetrize=True)
    ase.io.write(str(path), samples, format="extxyz")
    return samples


def _lorentz_flags(data, out, *extra):
    return ["train", "--data.train", str(data), "--output_dir", str(out), "--epochs", "6", "--dtype", "float64",
            "--progress", "false", "--data.node_targets", "[accelerations]",
            "--model", "{species: [1], cutoff: 8.0, output: node, irreps_out: 1o, num_layers: 1, "
            "irreps_hidden: 8x0e+4x1o+4x1e, lmax: 1, irreps_relaxed: 0e+1o+1e, relax_at: node, "
            "node_features: {velocities: 1o, charges: 0e, masses: 0e}, num_radial_basis: 4, radial_neurons: 8, "
            "num_neighbors: 4.0}", *extra]


def _cs_breaking(model):
    cs = point_group("Cs", frame=frame_from_axes(MIRROR_NORMAL))
    beyond = sum(v ** 2 for v in breaking_beyond(model, cs).values()) ** 0.5
    breaking = sum(v ** 2 for v in breaking_beyond(model, "O3").values()) ** 0.5
    return beyond, breaking


@pytest.mark.slow
def test_mirror_pairs_keep_cs_through_default_batching(tmp_path):
    data = tmp_path / "pairs.xyz"
    samples = _mirror_pairs(data)
    assert len({s.info["orbit_id"] for s in samples}) == 16
    # training alone (no projection afterwards): orbit-whole batches and splits keep θ in V_Cs
    assert main(_lorentz_flags(data, tmp_path / "plain", "--symmetry.validate", "false")) == 0
    beyond, breaking = _cs_breaking(relaxed_e3nn.load(tmp_path / "plain" / "model.pt"))
    assert breaking > 1e-3 and beyond <= 1e-8 * breaking, (beyond, breaking)
    split = load_checkpoint(tmp_path / "plain" / "checkpoint.pt")["split"]
    for part in ("train", "val"):
        ids = {samples[i].info["orbit_id"] for i in split[part]}
        assert sum(s.info["orbit_id"] in ids for s in samples) == len(split[part])  # whole orbits only
    # and the validated model too
    assert main(_lorentz_flags(data, tmp_path / "validated")) == 0
    beyond, breaking = _cs_breaking(relaxed_e3nn.load(tmp_path / "validated" / "model.pt"))
    assert beyond <= 1e-8 * max(breaking, 1e-300), (beyond, breaking)


@pytest.mark.slow
def test_separated_mirror_images_break_cs(tmp_path):
    """Negative control: the same structures without orbit ids are batched apart and θ leaves V_Cs."""
    samples = _mirror_pairs(tmp_path / "unused.xyz")
    for atoms in samples:
        del atoms.info["orbit_id"]
    data = tmp_path / "separated.xyz"
    ase.io.write(str(data), samples, format="extxyz")
    assert main(_lorentz_flags(data, tmp_path / "run", "--symmetry.validate", "false")) == 0
    beyond, breaking = _cs_breaking(relaxed_e3nn.load(tmp_path / "run" / "model.pt"))
    assert beyond > 1e-6 * breaking, (beyond, breaking)


# ----------------------------------------------------------------------------- impose, resume, parts
def test_impose_keeps_theta_in_the_invariant_subspace(tmp_path):
    frames = emt_slab_md(12, seed=1)
    data = tmp_path / "slab.xyz"
    ase.io.write(str(data), frames, format="extxyz")
    group = {"group": "C3v", "axes": [[0.0, 0.0, 1.0]]}
    config = tiny_train_config(str(data), tmp_path / "run", epochs=2,
                               symmetry={"impose": group, "validate": False})
    result = train(config)
    c3v = point_group("C3v", frame=frame_from_axes([0.0, 0.0, 1.0]))
    assert max(breaking_beyond(result.model, c3v).values()) <= 1e-10
    assert max(breaking_beyond(result.model, "O3").values()) > 1e-4  # it did learn breaking inside V_H
    saved = relaxed_e3nn.load(tmp_path / "run" / "model.pt")
    assert saved.metadata["symmetry"]["imposed"]["group"] == "C3v"
    assert (tmp_path / "run" / "symmetry.json").is_file()


def test_validation_restarts_cleanly_after_a_kill(tmp_path):
    frames = emt_slab_md(20, seed=2)
    data = tmp_path / "slab.xyz"
    ase.io.write(str(data), frames, format="extxyz")
    config = tiny_train_config(str(data), tmp_path / "run", epochs=2, symmetry={"validate": True, "fraction": 0.3})
    first = train(config)
    # a kill during validation leaves the last epoch's checkpoint and no model: resuming redoes it
    (tmp_path / "run" / "model.pt").unlink()
    again = train(dict(config, resume=True))
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key]), key
    assert again.metrics["symmetry"]["decision"]["chosen"] == first.metrics["symmetry"]["decision"]["chosen"]


def test_strict_runs_have_nothing_to_validate(tmp_path):
    frames = emt_slab_md(8, seed=3)
    data = tmp_path / "slab.xyz"
    ase.io.write(str(data), frames, format="extxyz")
    result = train(tiny_train_config(str(data), tmp_path / "run", epochs=1, strict=True,
                                     symmetry={"validate": True}))
    assert "symmetry" not in result.metrics and not (tmp_path / "run" / "symmetry.json").exists()


def test_split_keeps_orbits_and_is_unchanged_without_them():
    d = DataConfig(train="x", val_fraction=0.2, test_fraction=0.1)
    plain = make_split(30, d, seed=4)
    rng = np.random.default_rng(4).permutation(30).tolist()
    assert plain["val"] == sorted(rng[:6]) and plain["test"] == sorted(rng[6:9]) and "selection" not in plain
    with_selection = make_split(30, d, seed=4, selection_fraction=0.1)
    assert with_selection["val"] == plain["val"] and with_selection["test"] == plain["test"]
    assert len(with_selection["selection"]) == 3
    ids = [k // 3 for k in range(30)]
    split = make_split(30, d, seed=4, orbit_ids=ids, selection_fraction=0.1)
    for part in ("train", "val", "test", "selection"):
        orbits = {ids[i] for i in split[part]}
        assert len(split[part]) == 3 * len(orbits)


def test_blocks_and_budget():
    infos = [{"orbit_id": k // 2} for k in range(40)]
    blocks = block_ids(infos, [1, 2, 3], 40)
    assert blocks[1] == blocks[2] and blocks[0] != blocks[1] or blocks[0] == blocks[1]
    assert block_ids([{}] * 40, [0, 1, 39], 40) == ["frames block 0", "frames block 0", "frames block 19"]
    assert block_ids([{"trajectory": "a"}] * 4, [3], 4) == ["trajectory a, frames block 15"]
    assert finetune_budget(None, 100) == 10 and finetune_budget(None, 600) == 12 and finetune_budget(None, 10 ** 5) == 20
    assert finetune_budget(7, 10) == 7


def test_restricted_steps_are_a_function_of_seed_and_epoch():
    first = restricted_steps(400, 0.5, seed=3, epoch=7)
    assert np.array_equal(first, restricted_steps(400, 0.5, seed=3, epoch=7))  # a resumed run repeats them
    assert not np.array_equal(first, restricted_steps(400, 0.5, seed=3, epoch=8))
    assert 150 < first.sum() < 250
    assert not restricted_steps(50, 0.0, seed=3, epoch=7).any()


@pytest.mark.parametrize("config, match", [
    ({"symmetry": {"margin": 0}}, "symmetry.margin"),
    ({"symmetry": {"fraction": 0.0}}, "symmetry.fraction must be > 0"),
    ({"symmetry": {"within": {"group": "C3v", "frame": [[1, 0, 0]] * 3, "axes": [[0, 0, 1]]}}}, "not both"),
    ({"symmetry": {"impose": {"frame": [[1, 0, 0]]}}}, "must name its group"),
    ({"symmetry": {"within": {"group": "C3v", "axis": [0, 0, 1]}}}, "did you mean 'axes'"),
    ({"symmetry": {"min_blocks": 0}}, "symmetry.min_blocks"),
    ({"symmetry": {"restricted_fraction": 1.0}}, "symmetry.restricted_fraction"),
    ({"symmetry": {"restricted_fraction": -0.1}}, "symmetry.restricted_fraction"),
])
def test_bad_symmetry_config(config, match):
    from relaxed_e3nn.train import TrainConfig

    with pytest.raises(ValueError, match=match):
        TrainConfig.from_dict({"data": {"train": "x.xyz"}, **config})


def test_parent_that_does_not_hold_is_an_error(tmp_path):
    frames = emt_slab_md(6, seed=4)
    data = tmp_path / "slab.xyz"
    ase.io.write(str(data), frames, format="extxyz")
    config = tiny_train_config(str(data), tmp_path / "run", epochs=1, symmetry={"within": "Oh"})
    with pytest.raises(ValueError, match="RMS"):
        train(config)


def test_data_symmetrize_makes_orbits_that_stay_whole(tmp_path):
    from relaxed_e3nn.train._testing import write_emt_copper

    data = write_emt_copper(tmp_path / "cu.xyz", n=6, seed=0)
    config = tiny_train_config(str(data), tmp_path / "run", epochs=1,
                               data={"symmetrize": {"group": "Cs", "axes": [[1.0, 1.0, 0.0]]}, "val_fraction": 0.2})
    train(config)
    split = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["split"]
    assert split["n"] == 12  # every structure followed by its mirror image
    for part in ("train", "val"):
        assert {i // 2 for i in split[part]} == {i // 2 for i in split[part] if i + 1 - 2 * (i % 2) in split[part]}
