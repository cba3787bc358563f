"""Training relaxed host models (``model.kind: NequIP`` / ``MACE``) through ``relaxed_e3nn.train.train``.

Skipped when the host package is not installed.
"""
import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore:data. the validation set holds")

from relaxed_e3nn._dtype import default_dtype
from relaxed_e3nn.data import collate, from_ase
from relaxed_e3nn.models import HostPotential, build_host_potential, host_model_section, load
from relaxed_e3nn.train import evaluate, graphs_for_model, predict, train
from relaxed_e3nn.train._testing import emt_copper_frames, tiny_train_config, write_emt_copper

R_MAX = 4.0


def nequip_section(kind="NequIP"):
    return {"kind": kind, "irreps_relaxed": 1,
            "config": dict(seed=0, type_names=["Cu"], r_max=R_MAX, num_layers=1, l_max=1, parity=True,
                           num_features=4, radial_mlp_depth=1, radial_mlp_width=8, avg_num_neighbors=12.0,
                           per_type_energy_scales=1.0, per_type_energy_shifts=0.0)}


def mace_section():
    """MACE's keyword arguments as plain config data (irreps, names and arrays tagged as in a recipe)."""
    block = {"__name__": "mace.modules.blocks.RealAgnosticResidualInteractionBlock"}
    return {"kind": "mace", "irreps_relaxed": 1, "relax_at": "edge",
            "config": dict(r_max=R_MAX, num_bessel=4, num_polynomial_cutoff=5, max_ell=1, interaction_cls=block,
                           interaction_cls_first=block, num_interactions=1, num_elements=1,
                           hidden_irreps={"__irreps__": "4x0e+4x1o"}, MLP_irreps={"__irreps__": "4x0e"},
                           atomic_energies={"__array__": [0.0]}, avg_num_neighbors=12.0, atomic_numbers=[29],
                           correlation=2, gate={"__name__": "torch.nn.functional.silu"})}


def graphs_of(frames, dtype=torch.float64):
    return collate([from_ase(atoms, R_MAX, dtype=dtype) for atoms in frames])


def run(tmp_path, section):
    frames = emt_copper_frames(6, seed=1)
    top = {"data": {"val_fraction": 0.34}}
    config = tiny_train_config(str(write_emt_copper(tmp_path / "cu.xyz", 6, seed=1)), tmp_path / "run", epochs=2, **top)
    config["model"] = section
    return frames, train(config)


def test_nequip_trains_saves_and_loads_back(tmp_path):
    pytest.importorskip("nequip")
    frames, result = run(tmp_path, nequip_section("NeQuIP"))  # the kind in any case
    assert isinstance(result.model, HostPotential) and result.model.config.host == "NequIP"
    loaded = load(result.model_path)
    payload = torch.load(result.model_path, weights_only=True)
    assert payload["kind"] == "NequIP" and "recipe" in payload and "data_keys" in payload
    assert isinstance(loaded, HostPotential)
    batch = graphs_of(frames)
    expected = result.model.eval()(batch, compute_forces=True)
    actual = loaded(batch, compute_forces=True)
    assert torch.equal(expected["energy"], actual["energy"]) and torch.equal(expected["forces"], actual["forces"])
    # evaluation and prediction take it as they take a RelaxedNetwork
    predicted = predict(loaded, frames[:2], compute_stress=True)
    assert abs(predicted[0].get_potential_energy() - float(actual["energy"][0].detach())) < 1e-12
    assert predicted[0].get_stress().shape == (6,)
    assert evaluate(loaded, graphs_for_model(loaded, frames))["energy_mae"] >= 0


def test_nequip_potential_matches_the_host_at_theta_zero():
    pytest.importorskip("nequip")
    from nequip.data import compute_neighborlist_, from_dict  # optional dependency: imported once it is known present

    model = build_host_potential(host_model_section("NequIP", nequip_section()), torch.float64).eval()
    atoms = emt_copper_frames(1, seed=3)[0]
    out = model(graphs_of([atoms]), compute_forces=True, compute_stress=True)
    with default_dtype(torch.float64):  # NequIP's data dicts take the default dtype
        data = from_dict({"pos": torch.tensor(atoms.positions), "atom_types": torch.zeros(len(atoms), dtype=torch.long),
                          "cell": torch.tensor(atoms.cell[:]), "pbc": torch.tensor(atoms.pbc)})
        reference = model.host(compute_neighborlist_(data, R_MAX))
    energy = reference["total_energy"].reshape(-1)
    assert torch.allclose(out["energy"], energy, rtol=1e-12, atol=0)
    assert torch.allclose(out["forces"], reference["forces"], rtol=0, atol=1e-12 * float(reference["forces"].abs().max()))
    assert torch.isfinite(out["stress"]).all()


def test_mace_trains_and_matches_the_host(tmp_path):
    pytest.importorskip("mace")
    frames, result = run(tmp_path, mace_section())
    loaded = load(result.model_path)
    assert isinstance(loaded, HostPotential) and loaded.config.host == "MACE"
    batch = graphs_of(frames[:1])
    out = loaded(batch, compute_forces=True)
    assert torch.equal(out["energy"], result.model.eval()(batch)["energy"])
    # the host's own energy and forces on the same structure (MACE's receiver − sender edges)
    host_in = {"positions": batch.pos.clone(), "node_attrs": torch.ones(batch.num_nodes, 1, dtype=torch.float64),
               "edge_index": torch.stack([batch.edge_dst, batch.edge_src]),
               "shifts": batch.edge_vec(batch.pos) - (batch.pos[batch.edge_src] - batch.pos[batch.edge_dst]),
               "unit_shifts": torch.zeros(batch.edge_src.numel(), 3, dtype=torch.float64),
               "cell": batch.cell, "batch": batch.batch, "ptr": torch.tensor([0, batch.num_nodes])}
    reference = loaded.host(host_in, compute_force=True)
    energy = float(loaded.scale) * reference["energy"] + loaded.atomic_energies.sum() * batch.num_nodes
    assert torch.allclose(out["energy"], energy, rtol=1e-12, atol=0)
    assert torch.allclose(out["forces"], float(loaded.scale) * reference["forces"], rtol=0,
                          atol=1e-12 * float(reference["forces"].abs().max()))


def test_unknown_model_kind_names_model_kind(tmp_path):
    with pytest.raises(ValueError, match="model.kind must be one of"):
        run(tmp_path, {"kind": "SchNet"})


def test_nequip_validated_breaking_runs_through_the_trainer(tmp_path):
    pytest.importorskip("nequip")
    config = tiny_train_config(str(write_emt_copper(tmp_path / "cu.xyz", 12, seed=2)), tmp_path / "run", epochs=1,
                               symmetry={"validate": True, "finetune_steps": 2, "fraction": 0.25, "min_blocks": 1},
                               data={"val_fraction": 0.25})
    config["model"] = nequip_section()
    result = train(config)
    payload = torch.load(result.model_path, weights_only=True)
    record = payload["symmetry"]
    assert payload["kind"] == "NequIP" and record["validated"] and record["decision"]["candidates"]
    # θ is found through relaxed_parameters, under the wrapper's "host." prefix
    assert set(record["breaking_beyond"]) == {"host.model.func.layer0_convnet.conv.theta"}


def test_host_potential_refuses_unknown_species():
    pytest.importorskip("nequip")
    from ase import Atoms

    model = build_host_potential(host_model_section("NequIP", nequip_section()), torch.float64).eval()
    atoms = emt_copper_frames(1, seed=3)[0]
    model(graphs_of([atoms]))  # Cu: known
    gold = Atoms("Au2", positions=[[0, 0, 0], [0, 0, 2.5]])
    with pytest.raises(ValueError, match=r"HostPotential: atomic numbers \[79\] are not among"):
        model(graphs_of([gold]))
