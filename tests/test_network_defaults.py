"""RelaxedNetwork's radial basis and species embedding: defaults, old model files, bad values."""
import math

import pytest
import torch
from ase.build import bulk

from relaxed_e3nn.data import from_ase
from relaxed_e3nn.models import RelaxedNetwork, RelaxedNetworkConfig, model_from_dict, model_to_dict
from relaxed_e3nn.models._config import current_keys
from relaxed_e3nn.models._network import _radial_embedding

SMALL = dict(species=[29, 79], cutoff=3.5, num_layers=1, irreps_hidden="8x0e+4x1o+4x1e", lmax=1,
             num_radial_basis=4, radial_neurons=8, num_neighbors=8.0, relaxed=False)


def cell(dtype):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.numbers[1] = 79
    atoms.rattle(0.1, seed=3)
    return from_ase(atoms, 3.5, dtype=dtype)


def test_new_configs_get_the_bessel_basis_and_an_embedding():
    config = RelaxedNetworkConfig(species=[29])
    assert config.radial_basis == "bessel" and config.num_species_features == 32
    model = RelaxedNetwork(dict(SMALL, num_species_features=6), dtype=torch.float64)
    assert str(model.irreps_node_input) == "6x0e"
    assert str(RelaxedNetwork(dict(SMALL, num_species_features=0), dtype=torch.float64).irreps_node_input) == "2x0e"


def test_stored_configs_without_the_keys_read_as_the_former_architecture():
    stored = RelaxedNetworkConfig(species=[29]).to_dict()
    del stored["radial_basis"], stored["num_species_features"]
    current = current_keys(stored)
    assert current["radial_basis"] == "smooth_finite" and current["num_species_features"] == 0
    written = current_keys(RelaxedNetworkConfig(species=[29]).to_dict())  # keys present: kept
    assert written["radial_basis"] == "bessel" and written["num_species_features"] == 32


def test_a_model_file_without_the_keys_reproduces_its_outputs():
    torch.manual_seed(0)
    model = RelaxedNetwork(dict(SMALL, radial_basis="smooth_finite", num_species_features=0),
                           dtype=torch.float64).eval()
    payload = model_to_dict(model)
    del payload["config"]["radial_basis"], payload["config"]["num_species_features"]
    loaded = model_from_dict(payload).eval()
    graph = cell(torch.float64)
    assert loaded.species_embedding is None and loaded.config.radial_basis == "smooth_finite"
    before, after = model(graph, compute_forces=True), loaded(graph, compute_forces=True)
    assert torch.equal(before["energy"], after["energy"]) and torch.equal(before["forces"], after["forces"])


@pytest.mark.parametrize("key, value", [("radial_basis", "gaussian"), ("num_species_features", -1)])
def test_bad_values_name_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        RelaxedNetworkConfig(**dict(SMALL, **{key: value}))


def test_bessel_basis_formula_and_cutoff(dtype):
    r = torch.tensor([0.7, 2.0, 3.4999, 3.5, 4.0], dtype=dtype)
    basis = _radial_embedding(r, 3.5, 3, "bessel")
    assert basis.shape == (5, 3) and basis.dtype == dtype
    x = 2.0 / 3.5
    expected = [math.sin(k * math.pi * x) / x * math.exp(1 - 1 / (1 - x ** 4)) for k in (1, 2, 3)]
    assert torch.allclose(basis[1], torch.tensor(expected, dtype=dtype), rtol=1e-6 if dtype == torch.float32 else 1e-12)
    assert basis[2].abs().max() < 1e-30 and torch.equal(basis[3:], torch.zeros_like(basis[3:]))
    assert torch.isfinite(basis).all()
    # gradients are finite beyond the cutoff as well (no 1/0 in the unused branch)
    r = r.clone().requires_grad_(True)
    _radial_embedding(r, 3.5, 3, "bessel").sum().backward()
    assert torch.isfinite(r.grad).all() and torch.equal(r.grad[3:], torch.zeros_like(r.grad[3:]))
