"""RelaxedNetwork and RelaxedNetworkConfig: symmetry, readouts, derivatives, batching, bad input."""
import contextlib
import dataclasses
import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from e3nn import o3

from _geometry import random_orthogonal
from _tolerance import tolerance

from relaxed_e3nn.data import collate, from_ase
from relaxed_e3nn.models import RelaxedNetwork, RelaxedNetworkConfig
from relaxed_e3nn.nn import relaxed_parameters

SMALL = dict(irreps_hidden="8x0e+2x0o+4x1o+4x1e+2x2e+2x2o", num_layers=2, num_radial_basis=6, radial_neurons=16,
             num_neighbors=6.0, lmax=2)
CUTOFF = 3.5


def rel_err(a, b, floor=1e-30):
    """max |a - b| / max(max |b|, floor)."""
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp(min=floor))


def molecule(seed=0, n=7, species=(1, 6, 8)):
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0.0, 3.0, size=(n, 3))
    numbers = rng.choice(species, size=n)
    return Atoms(numbers=numbers, positions=pos)


def crystal(seed=0):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.numbers[1] = 79
    atoms.rattle(0.1, seed=seed)
    return atoms


def transform(graph, R):
    """The graph with positions, cell (rows) and vector features acted on by ``R``."""
    R = R.to(graph.pos.dtype)
    feats = dict(graph.node_features)
    if "velocities" in feats:
        feats["velocities"] = feats["velocities"] @ R.T
    return dataclasses.replace(graph, pos=graph.pos @ R.T, cell=graph.cell @ R.T, node_features=feats)


_CACHE = {}


def make(dtype, fresh=False, **kwargs):
    """A small model built in ``dtype`` (e3nn's constants take the dtype they are built in), cached
    per architecture and dtype since building e3nn layers dominates test time. Tests that change a
    cached model's state restore it."""
    fields = dict(SMALL, species=[1, 6, 8, 29, 79], cutoff=CUTOFF, relaxed=False, irreps_relaxed=2, relax_at="both")
    fields.update(kwargs)
    key = json.dumps(fields, sort_keys=True) + str(dtype)
    strict_key = json.dumps(dict(fields, relaxed=False), sort_keys=True) + str(dtype)
    if fresh or key not in _CACHE:
        if fields["relaxed"] and strict_key in _CACHE and not fresh:  # cheaper than a new build
            strict = _CACHE[strict_key]
            model = RelaxedNetwork.from_equivariant(strict, fields["irreps_relaxed"], fields["relax_at"])
        else:
            model = RelaxedNetwork(RelaxedNetworkConfig(**fields), dtype=dtype)
        if fresh:
            return model
        _CACHE[key] = model
    return _CACHE[key].train()


@contextlib.contextmanager
def broken_theta(model, seed=0, size=0.3):
    """Give every relaxed weight a random symmetry-breaking part; restore it afterwards."""
    saved = [theta.detach().clone() for _, _, theta in relaxed_parameters(model)]
    assert saved, "model has no relaxed weights"
    gen = torch.Generator().manual_seed(seed)
    try:
        with torch.no_grad():
            for _, _, theta in relaxed_parameters(model):
                theta.add_(size * torch.randn(theta.shape, generator=gen, dtype=torch.float64).to(theta.dtype))
        yield model
    finally:
        with torch.no_grad():
            for (_, _, theta), old in zip(relaxed_parameters(model), saved):
                theta.copy_(old)


# --------------------------------------------------------------------------- equivariance
def energy_errors(model, graph, rotations, stress):
    """Largest relative errors of energy, forces and stress under the given O(3) elements."""
    out = model(graph, compute_forces=True, compute_stress=stress)
    assert out["forces"].abs().max() > 1e-3  # a check on vanishing forces would prove nothing
    errors = {"energy": 0.0, "forces": 0.0, "stress": 0.0}
    for R in rotations:
        Rt = R.to(graph.pos.dtype)
        rot = model(transform(graph, R), compute_forces=True, compute_stress=stress)
        errors["energy"] = max(errors["energy"], rel_err(rot["energy"], out["energy"], floor=1.0))
        errors["forces"] = max(errors["forces"], rel_err(rot["forces"], out["forces"] @ Rt.T))
        if stress:
            errors["stress"] = max(errors["stress"], rel_err(rot["stress"], Rt @ out["stress"] @ Rt.T))
    return errors


@pytest.mark.parametrize("relaxed", [False, True], ids=["strict", "relaxed"])
def test_energy_forces_stress_equivariant(dtype, relaxed):
    """Strict twin, and relaxed network at initialisation (theta_breaking = 0): exactly E(3)."""
    model = make(dtype, relaxed=relaxed)
    tol = tolerance(dtype, "rel")
    for atoms, stress in ((molecule(), False), (crystal(), True)):
        graph = from_ase(atoms, CUTOFF, dtype=dtype)
        errors = energy_errors(model, graph, random_orthogonal(4, seed=0), stress)
        assert max(errors.values()) < tol, errors


def test_broken_theta_breaks_equivariance(dtype):
    """Negative control: the same check fails once theta has a random symmetry-breaking part."""
    model = make(dtype, relaxed=True)
    graph = from_ase(crystal(), CUTOFF, dtype=dtype)
    with broken_theta(model):
        errors = energy_errors(model, graph, random_orthogonal(4, seed=0), True)
    assert min(errors.values()) > 1e-3, errors
    # and the model is back to exact equivariance once theta is restored
    assert max(energy_errors(model, graph, random_orthogonal(2, seed=0), True).values()) < tolerance(dtype, "rel")


def rotate_theta_(model, R):
    """theta -> D_theta(R) theta in place, for every relaxed weight."""
    with torch.no_grad():
        for _, irreps, theta in relaxed_parameters(model):
            theta.copy_(irreps.D_from_matrix(R).to(theta.dtype) @ theta)


def test_joint_equivariance_with_broken_theta(dtype):
    """For any theta: model_{D(R) theta}(R x) = D(R) model_theta(x), parity included."""
    model = make(dtype, relaxed=True)
    graph = from_ase(crystal(4), CUTOFF, dtype=dtype)
    tol = tolerance(dtype, "rel")
    with broken_theta(model, seed=1):
        out = model(graph, compute_forces=True, compute_stress=True)
        for R in random_orthogonal(2, seed=5):
            Rt = R.to(dtype)
            rotate_theta_(model, R)
            rot = model(transform(graph, R), compute_forces=True, compute_stress=True)
            rotate_theta_(model, R.T)
            assert rel_err(rot["energy"], out["energy"], floor=1.0) < tol
            assert rel_err(rot["forces"], out["forces"] @ Rt.T) < tol
            assert rel_err(rot["stress"], Rt @ out["stress"] @ Rt.T) < tol


def test_polar_vector_theta_keeps_exactly_c_inf_v(dtype):
    """theta = 0e + (1o along z) in every layer: the whole network keeps C_inf_v about z
    (rotations about z, mirrors containing z) exactly and breaks the rest."""
    model = make(dtype, relaxed=True)
    graph = from_ase(crystal(10), CUTOFF, dtype=dtype)
    saved = [theta.detach().clone() for _, _, theta in relaxed_parameters(model)]
    try:
        with torch.no_grad():
            for _, irreps, theta in relaxed_parameters(model):
                start = 0
                for mul, ir in irreps:
                    if ir == o3.Irrep("1o"):
                        theta[start + 2] = 0.4  # l = 1 components are (x, y, z)
                    start += mul * ir.dim
        angle = torch.tensor(1.234, dtype=torch.float64)
        c, s = torch.cos(angle), torch.sin(angle)
        kept = [
            torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=torch.float64),  # C(angle) about z
            torch.tensor([[-c, s, 0], [s, c, 0], [0, 0, 1]], dtype=torch.float64),  # mirror containing z
        ]
        broken = [-torch.eye(3, dtype=torch.float64),  # inversion
                  torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)),  # mirror normal to z
                  torch.tensor([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=torch.float64)]  # C4 about x
        assert max(energy_errors(model, graph, kept, True).values()) < tolerance(dtype, "rel")
        for R in broken:
            assert energy_errors(model, graph, [R], True)["forces"] > 1e-3
    finally:
        with torch.no_grad():
            for (_, _, theta), old in zip(relaxed_parameters(model), saved):
                theta.copy_(old)


IRREPS_SIGNAL = "0e+0o+1o+1e+2e+2o"


def featured_molecule(dtype, n=8):
    atoms = molecule(1, n=n)
    rng = np.random.default_rng(3)
    atoms.set_velocities(rng.normal(size=(n, 3)))
    atoms.set_initial_charges(rng.normal(size=n))
    return from_ase(atoms, CUTOFF, node_features=["velocities", "charges"], dtype=dtype)


def node_model(dtype):
    return make(dtype, relaxed=True, output="node", irreps_out=IRREPS_SIGNAL,
                node_features={"velocities": "1o", "charges": "0e"})


def test_node_and_graph_outputs_equivariant(dtype):
    """Per-atom irreps (with vector node features) and their per-graph mean, relaxed at init."""
    model = node_model(dtype)
    graph = featured_molecule(dtype)
    y = model(graph)["node_output"]
    irreps = o3.Irreps(IRREPS_SIGNAL)
    assert y.shape == (graph.num_nodes, irreps.dim)
    for sl in irreps.slices():  # every output irrep is actually produced
        assert y[:, sl].abs().max() > 1e-6
    graph_model = make(dtype, relaxed=False, output="graph", irreps_out=IRREPS_SIGNAL, graph_reduce="sum",
                       node_features={"velocities": "1o", "charges": "0e"})
    z = graph_model(graph)["graph_output"]
    assert z.shape == (1, irreps.dim) and z.abs().min() > 1e-6
    tol = tolerance(dtype, "rel")
    for R in random_orthogonal(4, seed=1):
        D = irreps.D_from_matrix(R).to(dtype)
        assert rel_err(model(transform(graph, R))["node_output"], y @ D.T) < tol
        assert rel_err(graph_model(transform(graph, R))["graph_output"], z @ D.T) < tol
    with broken_theta(model):  # negative control
        y = model(graph)["node_output"]
        R = random_orthogonal(2, seed=0)[1]
        assert rel_err(model(transform(graph, R))["node_output"], y @ irreps.D_from_matrix(R).to(dtype).T) > 1e-3


def test_graph_reduce_mean_and_sum(dtype):
    graph = featured_molecule(dtype)
    model = make(dtype, relaxed=False, output="graph", irreps_out=IRREPS_SIGNAL, graph_reduce="sum",
                 node_features={"velocities": "1o", "charges": "0e"})
    summed = model(graph)["graph_output"]
    model.config.graph_reduce = "mean"  # read at every call
    try:
        mean = model(graph)["graph_output"]
    finally:
        model.config.graph_reduce = "sum"
    assert rel_err(mean * graph.num_nodes, summed) < tolerance(dtype, "rel")


def test_equivariance_check_detects_a_wrong_representation(dtype):
    """Negative control of the check itself: with the output parity mislabelled it must fail."""
    model = node_model(dtype)
    graph = featured_molecule(dtype)
    y = model(graph)["node_output"]
    wrong = o3.Irreps("0o+0e+1e+1o+2o+2e")
    errors = [rel_err(model(transform(graph, R))["node_output"], y @ wrong.D_from_matrix(R).to(dtype).T)
              for R in random_orthogonal(4, seed=0)]
    assert max(errors) > 0.1


def test_frame_reorients_the_symmetry_breaking(dtype):
    """Frame F: model_F(R x) = D(R) model_{F R}(x); with F = R^T the rotated input is undone."""
    tol = tolerance(dtype, "rel")
    model = make(dtype, relaxed=True)
    graph = from_ase(crystal(5), CUTOFF, dtype=dtype)
    R = random_orthogonal(2, seed=7)[1]  # improper
    Rt = R.to(dtype)
    with broken_theta(model, seed=2):
        try:
            plain = model(graph, compute_forces=True, compute_stress=True)
            model.set_frame(R.T)
            framed = model(transform(graph, R), compute_forces=True, compute_stress=True)
        finally:
            model.set_frame(torch.eye(3))
        assert rel_err(framed["energy"], plain["energy"], floor=1.0) < tol
        assert rel_err(framed["forces"], plain["forces"] @ Rt.T) < tol
        assert rel_err(framed["stress"], Rt @ plain["stress"] @ Rt.T) < tol
        # without the frame the broken model does see the rotation
        assert rel_err(model(transform(graph, R))["energy"], plain["energy"]) > 1e-4

    nodes = node_model(dtype)
    graph = featured_molecule(dtype)
    irreps = o3.Irreps(IRREPS_SIGNAL)
    with broken_theta(nodes, seed=3):
        try:
            plain = nodes(graph)["node_output"]
            nodes.set_frame(R.T)
            framed = nodes(transform(graph, R))["node_output"]
        finally:
            nodes.set_frame(torch.eye(3))
    assert rel_err(framed, plain @ irreps.D_from_matrix(R).to(dtype).T) < tol
    with pytest.raises(ValueError, match="frame"):
        model.set_frame([[1, 0, 0], [0, 1, 0], [0, 0, 1.5]])


def test_relaxed_from_equivariant_equals_strict_twin(dtype):
    strict = make(dtype, relaxed=False)
    graphs = collate([from_ase(crystal(6), CUTOFF, dtype=dtype), from_ase(molecule(5), CUTOFF, dtype=dtype)])
    strict.set_atomic_energies([0.1, 0.2, 0.3, 0.4, 0.5])
    try:
        relaxed = RelaxedNetwork.from_equivariant(strict, irreps_relaxed=1, relax_at="both")
        a = strict(graphs, compute_forces=True, compute_stress=True)
    finally:
        strict.set_atomic_energies([0.0] * 5)
    assert relaxed.config.relaxed and relaxed.config.irreps_relaxed == 1
    assert len(list(relaxed_parameters(relaxed))) == SMALL["num_layers"] + 1
    assert relaxed.atomic_energies.tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    b = relaxed(graphs, compute_forces=True, compute_stress=True)
    atol = {torch.float32: 1e-6, torch.float64: 1e-12}[dtype]
    for key in ("energy", "forces"):
        difference, size = (a[key] - b[key]).detach().abs().max(), a[key].detach().abs().max()
        assert float(difference) <= atol * max(1.0, float(size))
    assert torch.allclose(a["stress"][0], b["stress"][0], rtol=0, atol=atol)
    with broken_theta(relaxed):  # the twin is only equal while theta_breaking = 0
        assert (relaxed(graphs)["energy"] - a["energy"]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="already relaxed"):
        RelaxedNetwork.from_equivariant(relaxed)


def test_translation_invariance_and_permutation_equivariance(dtype):
    model = make(dtype)
    atoms = crystal(1)
    graph = from_ase(atoms, CUTOFF, dtype=dtype)
    out = model(graph, compute_forces=True, compute_stress=True)
    tol = tolerance(dtype, "rel")

    shifted = dataclasses.replace(graph, pos=graph.pos + torch.tensor([0.7, -1.3, 2.1], dtype=dtype))
    moved = model(shifted, compute_forces=True, compute_stress=True)
    for key in ("energy", "forces", "stress"):
        assert rel_err(moved[key], out[key]) < tol * 10

    perm = torch.randperm(len(atoms))
    permuted_atoms = atoms[perm.numpy()]
    permuted = model(from_ase(permuted_atoms, CUTOFF, dtype=dtype), compute_forces=True, compute_stress=True)
    assert rel_err(permuted["energy"], out["energy"]) < tol
    assert rel_err(permuted["forces"], out["forces"][perm]) < tol
    assert rel_err(permuted["stress"], out["stress"]) < tol


def test_batch_composition_does_not_matter(dtype):
    model = make(dtype)
    graphs = [from_ase(a, CUTOFF, dtype=dtype) for a in (molecule(3), crystal(2), molecule(4, n=5))]
    alone = [model(g, compute_forces=True, compute_stress=True) for g in graphs]
    batch = model(collate(graphs), compute_forces=True, compute_stress=True)
    tol = tolerance(dtype, "rel")
    assert rel_err(batch["energy"], torch.cat([o["energy"] for o in alone])) < tol
    assert rel_err(batch["forces"], torch.cat([o["forces"] for o in alone])) < tol
    # the molecules have no cell: their stress is undefined (NaN), the crystal's is not
    assert torch.isnan(batch["stress"][0]).all() and torch.isnan(batch["stress"][2]).all()
    assert rel_err(batch["stress"][1], alone[1]["stress"][0]) < tol


# --------------------------------------------------------------------------- derivatives
def _energy(model, graph, pos, cell=None):
    g = dataclasses.replace(graph, pos=pos, cell=graph.cell if cell is None else cell)
    return float(model(g)["energy"].detach().sum())


def test_forces_and_stress_match_finite_differences():
    dtype = torch.float64
    model = make(dtype).eval()
    atoms = crystal(3)
    atoms.set_cell(atoms.cell[:] @ np.array([[1.0, 0.05, 0.0], [0.0, 0.97, 0.1], [0.02, 0.0, 1.03]]),
                   scale_atoms=True)  # triclinic
    graph = from_ase(atoms, CUTOFF, dtype=dtype)
    out = model(graph, compute_forces=True, compute_stress=True)
    h = 1e-5
    fd_forces = torch.zeros_like(graph.pos)
    for i in range(graph.num_nodes):
        for a in range(3):
            dp = torch.zeros_like(graph.pos)
            dp[i, a] = h
            fd_forces[i, a] = -(_energy(model, graph, graph.pos + dp) - _energy(model, graph, graph.pos - dp)) / (2 * h)
    assert rel_err(out["forces"], fd_forces) < 1e-7
    volume = abs(float(torch.linalg.det(graph.cell[0])))
    fd_stress = torch.zeros(3, 3, dtype=dtype)
    for a in range(3):
        for b in range(3):
            eps = torch.zeros(3, 3, dtype=dtype)
            eps[a, b] += h / 2
            eps[b, a] += h / 2
            energies = []
            for sign in (1, -1):
                deform = torch.eye(3, dtype=dtype) + sign * eps
                energies.append(_energy(model, graph, graph.pos @ deform, graph.cell @ deform))
            fd_stress[a, b] = (energies[0] - energies[1]) / (2 * h * volume)
    assert rel_err(out["stress"][0], fd_stress) < 1e-7
    assert out["stress"][0].abs().max() > 1e-4


def test_energy_is_smooth_at_the_cutoff():
    """A neighbor leaving the cutoff changes neither energy nor forces discontinuously."""
    dtype = torch.float64
    model = make(dtype).eval()
    values = []
    for r in (CUTOFF - 1e-3, CUTOFF + 1e-3):
        atoms = Atoms("CO", positions=[[0, 0, 0], [0.3, 0.2, r]])
        atoms.positions[1] *= r / np.linalg.norm(atoms.positions[1])
        graph = from_ase(atoms, CUTOFF, dtype=dtype)
        values.append(model(graph, compute_forces=True))
    assert values[0]["energy"].item() != 0.0
    assert abs(values[0]["energy"] - values[1]["energy"]).item() < 1e-12
    assert (values[0]["forces"] - values[1]["forces"]).abs().max().item() < 1e-12


def test_training_mode_forces_backpropagate_to_weights():
    model = make(torch.float64, relaxed=True).train()
    model.zero_grad(set_to_none=True)
    graph = from_ase(crystal(), CUTOFF, dtype=torch.float64)
    out = model(graph, compute_forces=True, compute_stress=True)
    loss = out["forces"].pow(2).sum() + out["stress"].pow(2).sum()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    thetas = [theta for _, _, theta in relaxed_parameters(model)]
    assert all(theta.grad is not None for theta in thetas)
    model.zero_grad(set_to_none=True)
    model.eval()  # evaluation: derivatives are detached from the weights
    assert not model(graph, compute_forces=True)["forces"].requires_grad


def test_atomic_energies_and_scale():
    dtype = torch.float64
    model = make(dtype)
    graph = from_ase(Atoms("H2O", positions=[[0, 0, 0], [0.9, 0.3, 0], [0.1, 0.8, 0.2]]), CUTOFF, dtype=dtype)
    e0 = model(graph)["energy"]
    model.set_atomic_energies([-13.6, 0.0, -2040.0, 0.0, 0.0])
    try:
        e1 = model(graph)["energy"]
        assert torch.allclose(e1 - e0, torch.tensor([2 * -13.6 - 2040.0], dtype=dtype))
        assert model.atomic_energies.tolist() == [-13.6, 0.0, -2040.0, 0.0, 0.0]
        model.set_scale(2.0)
        e2 = model(graph)["energy"]
        assert torch.allclose(e2 - e1, e0)
    finally:
        model.set_atomic_energies([0.0] * 5)
        model.set_scale(1.0)
    with pytest.raises(ValueError, match="one entry per species"):
        model.set_atomic_energies([1.0])
    with pytest.raises(ValueError, match="finite"):
        model.set_scale(float("inf"))


# --------------------------------------------------------------------------- bad input
def test_unknown_species_and_bad_graphs_raise():
    model = make(torch.float64)
    hnof = Atoms("HNOF", positions=[[0, 0, 0], [1.0, 0, 0], [0, 1.1, 0], [0, 0, 1.2]])
    graph = from_ase(hnof, CUTOFF, dtype=torch.float64)
    message = r"atomic numbers \[7, 9\] are not among the model's species \[1, 6, 8, 29, 79\]"
    with pytest.raises(ValueError, match=message):
        model(graph)
    water_atoms = Atoms("H2O", positions=[[0, 0, 0], [0.9, 0.3, 0], [2.1, 2.8, 0.2]])
    water = from_ase(water_atoms, CUTOFF, dtype=torch.float64)
    with pytest.raises(TypeError, match="dtype"):
        model(water.to(dtype=torch.float32))
    with pytest.raises(ValueError, match="shorter than the model's cutoff"):
        model(from_ase(water_atoms, CUTOFF - 0.5, dtype=torch.float64))
    long_graph = from_ase(water_atoms, CUTOFF + 2.0, dtype=torch.float64)
    assert long_graph.num_edges > water.num_edges
    longer, exact = model(long_graph, compute_forces=True), model(water, compute_forces=True)
    assert torch.allclose(longer["energy"], exact["energy"], rtol=0, atol=1e-14)
    assert torch.allclose(longer["forces"], exact["forces"], rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="NaN"):
        model(dataclasses.replace(water, pos=water.pos * float("nan")))
    with pytest.raises(TypeError, match="AtomicGraph"):
        model({"pos": water.pos})
    featured = node_model(torch.float64)
    with pytest.raises(ValueError, match="velocities"):
        featured(water)
    bad = {"velocities": torch.zeros(3, 2, dtype=torch.float64), "charges": torch.zeros(3, dtype=torch.float64)}
    with pytest.raises(ValueError, match=r"velocities.*shape \[3, 3\]"):
        featured(dataclasses.replace(water, node_features=bad))
    with pytest.raises(ValueError, match="output='energy'"):
        featured(water, compute_forces=True)
    with pytest.raises(ValueError, match="irreps_out"):  # nothing reachable from scalars in one layer
        make(torch.float64, fresh=True, output="node", irreps_out="0o", num_layers=1)


# --------------------------------------------------------------------------- config
def test_config_round_trip_and_validation():
    with pytest.warns(DeprecationWarning, match="no longer config fields"):  # a former field, still read
        config = RelaxedNetworkConfig(species=[1, 8], output="graph", irreps_out="1o+2e",
                                      node_features={"charges": "0e"}, irreps_relaxed="0e+1o", atomic_energies=[1, 2])
    d = config.to_dict()
    assert RelaxedNetworkConfig.from_dict(json.loads(json.dumps(d))) == config
    assert RelaxedNetworkConfig.from_dict({"species": [29]}) == RelaxedNetworkConfig(species=[29])

    with pytest.raises(ValueError, match="unknown key.*'num_layer'"):
        RelaxedNetworkConfig.from_dict({**d, "num_layer": 3})
    with pytest.raises(ValueError, match="missing required key.*species"):
        RelaxedNetworkConfig.from_dict({"cutoff": 3.0})
    bad = {
        "cutoff": "5", "num_layers": 2.0, "relaxed": 1, "species": [1.0], "node_features": ["charges"],
        "frame": [[1, 0], [0, 1]], "irreps_relaxed": 1.5, "atomic_energies": "0",
    }
    for key, value in bad.items():
        with pytest.raises(ValueError, match=f"RelaxedNetworkConfig: {key} must be"):
            RelaxedNetworkConfig.from_dict({**d, key: value})
    invalid = {
        "cutoff": -1.0, "output": "forces", "num_layers": 0, "irreps_hidden": "banana", "relax_at": "everywhere",
        "species": [1, 1], "frame": [[1, 0, 0], [0, 1, 0], [0, 0, 2]], "graph_reduce": "max",
    }
    for key, value in invalid.items():
        with pytest.raises(ValueError, match=key):
            RelaxedNetworkConfig.from_dict({**d, key: value})
    with pytest.raises(ValueError, match="atomic_energies must have one entry per species"):
        RelaxedNetworkConfig(species=[1, 8], atomic_energies=[0.0])
    with pytest.raises(ValueError, match="irreps_out"):
        RelaxedNetworkConfig(species=[1], output="node")
    with pytest.raises(ValueError, match="irreps_out"):
        RelaxedNetworkConfig(species=[1], output="energy", irreps_out="1o")


def test_config_former_names_warn_and_numbers_become_plain():
    with pytest.warns(DeprecationWarning, match="'radial_layers' is deprecated; use 'num_radial_layers'"):
        config = RelaxedNetworkConfig.from_dict({"species": [1], "radial_layers": 3})
    assert config.num_radial_layers == 3 and "radial_layers" not in config.to_dict()
    with pytest.raises(ValueError, match="give 'num_radial_layers' only"):
        RelaxedNetworkConfig.from_dict({"species": [1], "radial_layers": 3, "num_radial_layers": 3})
    with pytest.raises(ValueError, match="RelaxedNetworkConfig: num_radial_layers must be a non-negative int"):
        RelaxedNetworkConfig(species=[1], num_radial_layers=-1)
    # numpy numbers are accepted and stored as plain Python numbers (JSON-able)
    config = RelaxedNetworkConfig.from_dict({"species": list(np.array([8, 1])), "num_layers": np.int64(3),
                                             "cutoff": np.float32(4.0)})
    assert type(config.num_layers) is int and type(config.cutoff) is float and config.species == [8, 1]
    assert RelaxedNetworkConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert set(RelaxedNetworkConfig.known_keys()) >= {"layers", "radial_layers", "atomic_energies", "scale"}


class _NoHostRead(torch.Tensor):
    """A tensor that fails when read back as a Python bool (a host synchronisation on a GPU)."""

    def __bool__(self):
        raise AssertionError("a tensor was read back to the host")


def test_periodicity_is_read_where_the_graph_is_built_not_per_forward():
    model = make(torch.float64)
    cu, mol = (from_ase(a, CUTOFF, dtype=torch.float64) for a in (crystal(0), molecule(0)))
    assert cu.periodic is True and mol.periodic is False
    assert collate([mol, cu]).periodic is True and collate([mol, mol]).periodic is False
    assert cu.to(dtype=torch.float32).periodic is True
    expected = model(cu, compute_forces=True)
    cu.pbc = cu.pbc.as_subclass(_NoHostRead)
    with pytest.raises(AssertionError, match="read back"):  # the control: reading pbc is caught
        bool(cu.pbc.any())
    out = model(cu, compute_forces=True)
    assert torch.equal(out["energy"], expected["energy"]) and torch.equal(out["forces"], expected["forces"])
    # a stale value is caught where a graph is built on the CPU; None derives it again
    with pytest.raises(ValueError, match="periodic=True disagrees with pbc"):
        dataclasses.replace(cu, pbc=torch.zeros(1, 3, dtype=torch.bool))
    assert dataclasses.replace(cu, pbc=torch.zeros(1, 3, dtype=torch.bool), periodic=None).periodic is False
    with pytest.raises(TypeError, match="periodic must be a bool"):
        dataclasses.replace(mol, periodic=torch.tensor(False))
