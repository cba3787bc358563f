"""relax() on MACE models: identical outputs at θ = 0, edge convention, joint equivariance, Stab(θ), files.

Skipped when MACE is not installed (``scripts/install_mace.sh``: mace-torch with ``--no-deps`` on
e3nn 0.6, plus ``pip install relaxed_e3nn[mace]``; CI installs it). The adapter module is imported
first, so that it is the one importing MACE (which sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``).
"""
import copy
import math
import os
import sys

import pytest
import torch

_SWITCH = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
_switch_before = os.environ.get(_SWITCH)
_mace_imported_before = "mace" in sys.modules
_mace_adapter = pytest.importorskip(
    "relaxed_e3nn.nn.hosts._mace", reason="MACE is not installed: run scripts/install_mace.sh"
)
_switch_after = os.environ.get(_SWITCH)

import numpy as np  # noqa: E402
from e3nn import o3  # noqa: E402
from mace.modules import MACE  # noqa: E402
from mace.modules.blocks import RealAgnosticInteractionBlock, RealAgnosticResidualInteractionBlock  # noqa: E402

import relaxed_e3nn  # noqa: E402
from _geometry import INVERSION, reflection, rotation_about  # noqa: E402
from _hosts import (  # noqa: E402
    assert_jointly_equivariant, cluster, random_axis, set_polar_thetas_, set_random_thetas_, symmetry_error,
)
from _tolerance import tolerance  # noqa: E402
from relaxed_e3nn._dtype import default_dtype  # noqa: E402
from relaxed_e3nn.nn import relax, relaxed_mace_model, relaxed_parameters  # noqa: E402
from relaxed_e3nn.nn.hosts import RelaxedHostBlock, edge_reversal_signs, recipe_of  # noqa: E402

RelaxedMACEInteraction = _mace_adapter.RelaxedMACEInteraction
R_MAX = 4.0
TYPES = torch.tensor([0, 1, 0, 0, 1, 0, 1, 0])


def mace_kwargs() -> dict:
    return dict(r_max=R_MAX, num_bessel=4, num_polynomial_cutoff=5, max_ell=2,
                interaction_cls=RealAgnosticResidualInteractionBlock,
                interaction_cls_first=RealAgnosticInteractionBlock,
                num_interactions=2, num_elements=2, hidden_irreps=o3.Irreps("4x0e+4x1o"),
                MLP_irreps=o3.Irreps("4x0e"), atomic_energies=np.zeros(2), avg_num_neighbors=6.0,
                atomic_numbers=[29, 79], correlation=2, gate=torch.nn.functional.silu)


def plain_model(dtype) -> torch.nn.Module:
    with default_dtype(dtype):
        return MACE(**mace_kwargs())


def energy_forces(model, pos):
    dtype = next(model.parameters()).dtype
    pos = pos.to(dtype)
    num_atoms = len(pos)
    distances = (pos[None] - pos[:, None]).norm(dim=-1)
    receiver, sender = torch.nonzero((distances < R_MAX) & (distances > 0), as_tuple=True)
    data = {"positions": pos, "node_attrs": torch.nn.functional.one_hot(TYPES[:num_atoms], 2).to(dtype),
            "edge_index": torch.stack([sender, receiver]), "shifts": torch.zeros(len(sender), 3, dtype=dtype),
            "unit_shifts": torch.zeros(len(sender), 3, dtype=dtype), "cell": torch.zeros(3, 3, dtype=dtype),
            "batch": torch.zeros(num_atoms, dtype=torch.long), "ptr": torch.tensor([0, num_atoms])}
    out = model(data, compute_force=True)
    return out["energy"], out["forces"]


def test_importing_the_adapter_leaves_weights_only_loading_alone(tmp_path, monkeypatch):
    if not _mace_imported_before:
        assert _switch_after == _switch_before
    # even with MACE's switch set, the package's files load weights-only: pickled code is refused
    monkeypatch.setenv(_SWITCH, "1")
    path = tmp_path / "pickled.pt"
    torch.save({"format": "relaxed_e3nn.model", "model": torch.nn.Linear(2, 2)}, path)
    with pytest.raises(ValueError, match="not a readable relaxed_e3nn model"):
        relaxed_e3nn.load(path)


def test_relax_finds_every_interaction_and_keeps_outputs(dtype):
    plain = plain_model(dtype)
    relaxed = relax(copy.deepcopy(plain), irreps_relaxed=2)
    assert [type(m.block) for m in relaxed.interactions] == [RealAgnosticInteractionBlock,
                                                            RealAgnosticResidualInteractionBlock]
    assert len(list(relaxed_parameters(relaxed))) == 2
    pos = cluster()
    energy, forces = energy_forces(plain, pos)
    energy_relaxed, forces_relaxed = energy_forces(relaxed, pos)
    assert energy.dtype == dtype
    assert torch.equal(energy, energy_relaxed) and torch.equal(forces, forces_relaxed)


def test_theta_is_stated_in_the_sender_minus_receiver_convention():
    block = relax(plain_model(torch.float64)).interactions[1]
    set_random_thetas_(block, seed=1)
    vectors = torch.randn(10, 3, dtype=torch.float64)  # sender - receiver
    sh = o3.SphericalHarmonics(block.irreps_edge_attr, normalize=True, normalization="component")
    ours, host = sh(vectors), sh(-vectors)  # MACE's vectors are receiver - sender
    signs = edge_reversal_signs(block.irreps_edge_attr)
    assert torch.allclose(host, ours * signs, atol=1e-14)
    expected = (ours @ block.edge_relaxation(block.theta())) * signs
    assert torch.allclose(block.relax_edge_attr(host), expected, atol=1e-12)


def test_reversing_an_edge_flips_the_odd_parity_blocks_of_theta():
    block = relax(plain_model(torch.float64)).interactions[1]
    forward = RelaxedHostBlock(torch.nn.Linear(1, 1).double(), block.irreps_edge_attr, irreps_relaxed=2,
                               relax_at="edge")
    forward.edge_relaxation.load_state_dict(block.edge_relaxation.state_dict())
    set_random_thetas_(forward, seed=2)
    irreps = forward.irreps_relaxed
    parity = torch.cat([torch.full((mul * ir.dim,), float(ir.p)) for mul, ir in irreps]).double()
    odd_l = torch.cat([torch.full((mul * ir.dim,), float((-1) ** ir.l)) for mul, ir in irreps]).double()
    theta = forward.theta().detach()
    vectors = torch.randn(10, 3, dtype=torch.float64)
    sh = o3.SphericalHarmonics(block.irreps_edge_attr, normalize=True, normalization="component")
    signs = edge_reversal_signs(block.irreps_edge_attr)
    reversed_edges = sh(-vectors) @ forward.edge_relaxation(theta)
    assert torch.allclose(reversed_edges, (sh(vectors) @ forward.edge_relaxation(theta * parity)) * signs,
                          atol=1e-12)
    # negative control: flipping the odd-l blocks instead is not the same
    assert not torch.allclose(reversed_edges, (sh(vectors) @ forward.edge_relaxation(theta * odd_l)) * signs,
                              atol=1e-6)


def test_jointly_equivariant_for_any_theta(dtype):
    assert_jointly_equivariant(energy_forces, relax(plain_model(dtype), irreps_relaxed=2), dtype, seed=3)


@pytest.mark.parametrize("relax_at", ["edge", "node"])
def test_polar_theta_keeps_exactly_its_stabilizer(dtype, relax_at):
    axis = random_axis(seed=6)
    model = relax(plain_model(dtype), irreps_relaxed=2, relax_at=relax_at)
    set_polar_thetas_(model, axis)
    pos = cluster(seed=7)
    perpendicular = torch.linalg.cross(axis, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    in_plane = torch.linalg.cross(axis, perpendicular)
    for g in (rotation_about(axis, 1.1), reflection(perpendicular), reflection(in_plane)):
        assert symmetry_error(energy_forces, model, pos, g) <= tolerance(dtype, "rel")
    for g in (INVERSION, rotation_about(perpendicular, math.pi / 2), reflection(axis)):
        assert symmetry_error(energy_forces, model, pos, g) > 1e-3
    strict = relax(plain_model(dtype), irreps_relaxed=2, relax_at=relax_at)
    assert symmetry_error(energy_forces, strict, pos, INVERSION) <= tolerance(dtype, "rel")


def test_save_and_load_a_relaxed_mace_model(tmp_path):
    model = relaxed_mace_model(mace_kwargs(), irreps_relaxed=1, dtype=torch.float64)
    assert torch.get_default_dtype() == torch.float32
    set_random_thetas_(model, seed=8)
    recipe = recipe_of(model)
    assert recipe["host"] == "MACE" and recipe["config"]["class"] == "mace.modules.MACE"
    assert recipe["config"]["kwargs"]["interaction_cls"] == {
        "__name__": "mace.modules.blocks.RealAgnosticResidualInteractionBlock"}
    path = tmp_path / "mace.pt"
    relaxed_e3nn.save(model, path)
    assert torch.load(path, weights_only=True)["kind"] == "MACE"
    loaded = relaxed_e3nn.load(path, kind="MACE")
    pos = cluster(seed=9)
    energy, forces = energy_forces(model.eval(), pos)
    energy_loaded, forces_loaded = energy_forces(loaded, pos)
    assert torch.equal(energy, energy_loaded) and torch.equal(forces, forces_loaded)


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="not allowed"):
        relaxed_mace_model(mace_kwargs(), model_class="os.system")
    with pytest.raises(ValueError, match="kwargs"):
        relaxed_mace_model([1, 2])
    with pytest.raises(ValueError, match="not allowed"):
        _mace_adapter.decode_kwargs({"gate": {"__name__": "builtins.eval"}})
    with pytest.raises(TypeError, match="recipe"):
        relaxed_e3nn.save(relax(plain_model(torch.float64)), tmp_path / "no_recipe.pt")
