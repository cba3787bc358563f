"""Exact point-group equivariance of the discrete message passing (relaxed_e3nn.discrete)."""
import functools
import json
import math

import pytest
import torch

from relaxed_e3nn._dtype import default_dtype
from relaxed_e3nn.discrete import (
    DEGNN,
    EGNN,
    PointGroupMessagePassing,
    fully_connected_batch,
    group_elements,
)
from relaxed_e3nn.train import train_dynamics
from relaxed_e3nn.discrete import _orbit
from relaxed_e3nn.discrete._orbit import orbit_sum_and_readout
from relaxed_e3nn.groups import point_group
from _equivariance import equivariance_error
from _geometry import INVERSION, close_group, random_rotation, reflection, rotation_about
from _tolerance import tolerance


GENERATORS = {
    "Oh": [rotation_about([0, 0, 1], math.pi / 2), rotation_about([1, 1, 1], 2 * math.pi / 3), INVERSION],
    "D4h": [rotation_about([0, 0, 1], math.pi / 2), rotation_about([1, 0, 0], math.pi), INVERSION],
    "D2h": [rotation_about([0, 0, 1], math.pi), rotation_about([1, 0, 0], math.pi), INVERSION],
    "C4v": [rotation_about([0, 0, 1], math.pi / 2), reflection([1, 0, 0])],
    "C3v": [rotation_about([0, 0, 1], 2 * math.pi / 3), reflection([0, 1, 0])],
}
ORDERS = {"Oh": 48, "D4h": 16, "D2h": 8, "C4v": 8, "C3v": 6}


def _group_in_random_frame(name, seed):
    gen = torch.Generator().manual_seed(seed)
    frame = random_rotation(gen)
    elements = close_group(GENERATORS[name])
    assert elements.shape[0] == ORDERS[name]
    return frame @ elements @ frame.T, frame


def _scale_up(module, factor=1.0, readout=30.0):
    """Make every weight matter: no near-zero readouts or biases hide a violation."""
    gen = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "readout" in name:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * readout / math.sqrt(p.shape[-2]))
            elif "bias" in name:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * factor)
            elif "rank_weight" in name:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
            else:
                p.mul_(factor)


def _system(n, seed, dtype, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    pos = (torch.randn(n, 3, generator=gen, dtype=torch.float64) * scale).to(dtype)
    vel = torch.randn(n, 3, generator=gen, dtype=torch.float64).to(dtype)
    attr = torch.randn(n, 2, generator=gen, dtype=torch.float64).to(dtype)
    src, dst, _ = fully_connected_batch(1, n)
    return pos, vel, attr, src, dst


def _rel_err(a, b):
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def _act(g, x, c):
    return c + (x - c) @ g.T


# -- group input ------------------------------------------------------------------------------
def test_ground_truth_groups_match_the_catalogue():
    for name in GENERATORS:
        ours = close_group(GENERATORS[name])
        catalogue = group_elements(point_group(name))
        assert catalogue.shape == ours.shape
        # same set of matrices
        distance = (ours.reshape(-1, 1, 9) - catalogue.reshape(1, -1, 9)).abs().amax(-1)
        assert float(distance.amin(1).max()) < 1e-12


def test_group_elements_accepts_names_objects_tensors_and_generators():
    frame, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))
    by_name = group_elements("D4h")
    by_object = group_elements(point_group("D4h", frame=frame))
    by_tensor = group_elements(close_group(GENERATORS["D4h"]))
    by_generators = group_elements(torch.stack(GENERATORS["D4h"]))
    for mats in (by_name, by_object, by_tensor, by_generators):
        assert mats.shape == (16, 3, 3)
        assert torch.allclose(mats[0], torch.eye(3, dtype=torch.float64))
    rotated = frame @ by_name @ frame.T  # the same group in the user's frame, as a set
    distance = (by_object.reshape(-1, 1, 9) - rotated.reshape(1, -1, 9)).abs().amax(-1)
    assert float(distance.amin(1).max()) < 1e-12
    assert float((by_object - by_name).abs().max()) > 0.1


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (torch.randn(4, 3, 3, dtype=torch.float64), ValueError, "orthogonal"),
        (torch.eye(3).repeat(2, 1, 1), ValueError, "duplicates"),
        (torch.zeros(2, 3), ValueError, "shape"),
        (torch.full((1, 3, 3), float("nan")), ValueError, "finite"),
        ("C∞v", ValueError, "finite"),
        ("not-a-group", ValueError, "unknown point group"),
        (object(), TypeError, "group"),
    ],
)
def test_group_elements_rejects_bad_input(bad, error, match):
    with pytest.raises(error, match=match):
        group_elements(bad)


# -- layer: every element, every intermediate, float64, scaled-up weights ----------------------
@pytest.mark.parametrize("variant", ["pooling", "attention", "ranking"])
@pytest.mark.parametrize("name", ["Oh", "D4h", "D2h", "C4v", "C3v"])
def test_layer_every_intermediate_is_exactly_equivariant(name, variant):
    with default_dtype(torch.float64):
        elements, frame = _group_in_random_frame(name, seed=len(name) + len(variant))
        gen = torch.Generator().manual_seed(7)
        center = torch.randn(3, generator=gen, dtype=torch.float64) * 2
        layer = PointGroupMessagePassing(
            elements, hidden=12, edge_attr_dim=2, variant=variant, node_orbit=True, vector_channels=3
        )
        _scale_up(layer)
        pos, vel, attr, src, dst = _system(6, seed=11, dtype=torch.float64)
        pos = pos + center
        h = torch.randn(6, 12, generator=gen, dtype=torch.float64)
        edge_attr = attr[src] * attr[dst]
        node_center = center.expand_as(pos)
        ref = layer.edge_outputs(h, pos, vel, node_center, src, dst, edge_attr)
        ref_h, ref_pos = layer(h, pos, vel, node_center, src, dst, edge_attr)
        # the weights really are large enough to matter
        ref = type(ref)(*(t.detach() for t in ref))
        assert float(ref.edge_vectors.abs().max()) > 1.0 and float(ref.node_vectors.abs().max()) > 1.0
        non_diagonal = 0
        for g in elements:
            non_diagonal += int((g - torch.diag(torch.diagonal(g))).abs().max() > 1e-6)
            gpos, gvel = _act(g, pos, center), vel @ g.T
            out = layer.edge_outputs(h, gpos, gvel, node_center, src, dst, edge_attr)
            assert _rel_err(out.orbit_embedding, ref.orbit_embedding) < 1e-10
            assert _rel_err(out.messages, ref.messages) < 1e-10
            assert _rel_err(out.edge_vectors, ref.edge_vectors @ g.T) < 1e-10
            assert _rel_err(out.node_vectors, ref.node_vectors @ g.T) < 1e-10
            new_h, new_pos = layer(h, gpos, gvel, node_center, src, dst, edge_attr)
            assert _rel_err(new_h, ref_h) < 1e-10
            assert _rel_err(new_pos, _act(g, ref_pos, center)) < 1e-10
        # in a random frame every element other than +-1 is non-diagonal
        scalar = sum(int((g - g[0, 0] * torch.eye(3)).abs().max() < 1e-12) for g in elements)
        assert non_diagonal == len(elements) - scalar


@torch.no_grad()
def test_cubic_permutation_elements_in_the_standard_frame():
    """The 40 Oh elements that are not sign flips (the per-axis-weight failure case) are exact."""
    with default_dtype(torch.float64):
        oh = point_group("Oh").elements
        model = DEGNN(oh, node_attr_dim=2, hidden=12, num_layers=2)
        _scale_up(model, readout=10.0)
        pos, vel, attr, src, dst = _system(5, seed=3, dtype=torch.float64)
        ref = model(pos, vel, attr, src, dst)
        permuting = [g for g in oh if (g - torch.diag(torch.diagonal(g))).abs().max() > 0.5]
        assert len(permuting) == 40
        for g in permuting:
            assert _rel_err(model(pos @ g.T, vel @ g.T, attr, src, dst), ref @ g.T) < 1e-10


# -- whole model in both precisions --------------------------------------------------------------
@pytest.mark.parametrize("variant", ["pooling", "attention", "ranking"])
def test_model_equivariance_both_dtypes(dtype, variant):
    group = point_group("D4h", frame=random_rotation(torch.Generator().manual_seed(5)))
    center = torch.tensor([0.3, -1.2, 0.7])
    model = DEGNN(group, node_attr_dim=2, hidden=16, num_layers=3, variant=variant, center=center, node_orbit=True)
    _scale_up(model, readout=3.0)
    pos, vel, attr, src, dst = _system(5, seed=1, dtype=dtype)
    ref = model(pos, vel, attr, src, dst)
    assert ref.dtype == dtype
    elements = model.elements
    assert bool((torch.det(elements) < 0).any())  # improper elements included
    inputs = ["cartesian_points", "1o", None, None, None]
    error = equivariance_error(model, (pos, vel, attr, src, dst), inputs, "cartesian_points", elements, center=center)
    assert error < tolerance(dtype, "rel")


def test_model_is_not_equivariant_beyond_its_group(dtype):
    """Negative control: a generic rotation and an element outside G both break the check."""
    group = point_group("D2h")
    model = DEGNN(group, node_attr_dim=2, hidden=16, num_layers=2)
    _scale_up(model, readout=3.0)
    pos, vel, attr, src, dst = _system(5, seed=2, dtype=dtype)
    ref = model(pos, vel, attr, src, dst)
    generic = random_rotation(torch.Generator().manual_seed(9)).to(dtype)
    four_fold = rotation_about([0, 0, 1], math.pi / 2).to(dtype)  # in D4h, not in D2h
    for g in (generic, four_fold, -generic):
        assert _rel_err(model(pos @ g.T, vel @ g.T, attr, src, dst), ref @ g.T) > 1e-3
    # and the trivial group C1 is not even D2h-equivariant
    trivial = DEGNN(point_group("C1"), node_attr_dim=2, hidden=16, num_layers=2)
    _scale_up(trivial, readout=3.0)
    ref1 = trivial(pos, vel, attr, src, dst)
    flip = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=dtype))
    assert _rel_err(trivial(pos @ flip.T, vel @ flip.T, attr, src, dst), ref1 @ flip.T) > 1e-3


# -- ranking: ties and degenerate configurations ---------------------------------------------------
def _lexicographic_embedding(tuples, elements):
    """The defective reference: sort the orbit's vectors lexicographically and flatten."""
    orbit = torch.einsum("gab,mkb->mgka", elements, tuples).reshape(tuples.shape[0], elements.shape[0], -1)
    out = []
    for row in orbit:
        keys = sorted(range(row.shape[0]), key=lambda i: tuple(row[i].tolist()))
        out.append(row[keys].reshape(-1))
    return torch.stack(out)


@torch.no_grad()
def test_ranking_is_exact_and_continuous_on_mirror_planes():
    with default_dtype(torch.float64):
        group = point_group("C4v")  # mirror planes xz, yz and the diagonals
        elements = group.elements
        layer = PointGroupMessagePassing(group, hidden=10, variant="ranking", node_orbit=True)
        _scale_up(layer)
        gen = torch.Generator().manual_seed(0)
        n = 5
        # every position and velocity in the mirror plane y = 0: orbits have coincident members
        pos = torch.randn(n, 3, generator=gen) * 2
        vel = torch.randn(n, 3, generator=gen)
        pos[:, 1] = 0.0
        vel[:, 1] = 0.0
        pos[0] = 0.0  # one particle at the centre (on every symmetry element)
        vel[0] = 0.0
        h = torch.randn(n, 10, generator=gen)
        src, dst, _ = fully_connected_batch(1, n)
        center = torch.zeros(n, 3)
        ref = layer.edge_outputs(h, pos, vel, center, src, dst)
        for g in elements:
            out = layer.edge_outputs(h, pos @ g.T, vel @ g.T, center, src, dst)
            assert _rel_err(out.orbit_embedding, ref.orbit_embedding) < 1e-12
            assert _rel_err(out.edge_vectors, ref.edge_vectors @ g.T) < 1e-12
        # continuity through the tie: an off-plane nudge of 1e-9 moves the embedding by O(1e-9)
        nudge = torch.zeros(n, 3)
        nudge[:, 1] = 1e-9
        for sign in (1.0, -1.0):
            moved = layer.edge_outputs(h, pos + sign * nudge, vel, center, src, dst)
            assert float((moved.orbit_embedding - ref.orbit_embedding).abs().max().detach()) < 1e-6
        # the lexicographic sort jumps across the same tie (the defect this design avoids)
        tuples = torch.stack([pos[dst], pos[src], vel[dst], vel[src]], dim=1)
        lex_up = _lexicographic_embedding(tuples + torch.stack([nudge[dst]] * 4, 1), elements)
        lex_down = _lexicographic_embedding(tuples - torch.stack([nudge[dst]] * 4, 1), elements)
        assert float((lex_up - lex_down).abs().max()) > 0.1


@pytest.mark.parametrize("variant", ["pooling", "attention", "ranking"])
@torch.no_grad()
def test_degenerate_inputs_stay_exact(variant):
    """All particles at the centre at rest, or collinear on an axis: fully stabilised orbits."""
    with default_dtype(torch.float64):
        group = point_group("Oh")
        model = DEGNN(group, node_attr_dim=1, hidden=8, num_layers=2, variant=variant, node_orbit=True)
        _scale_up(model, readout=3.0)
        src, dst, _ = fully_connected_batch(1, 4)
        attr = torch.tensor([[1.0], [-1.0], [1.0], [0.5]])
        cases = [
            (torch.zeros(4, 3), torch.zeros(4, 3)),
            (torch.tensor([[0.0, 0, z] for z in (-2.0, -1.0, 1.0, 2.0)]), torch.zeros(4, 3)),
        ]
        for pos, vel in cases:
            ref = model(pos, vel, attr, src, dst)
            assert torch.isfinite(ref).all()
            for g in group.elements:
                assert float((model(pos @ g.T, vel @ g.T, attr, src, dst) - ref @ g.T).abs().max()) < 1e-10
        # at the centre, at rest, the output must be a fixed point of every g: only 0 is
        assert float(model(*cases[0], attr, src, dst).abs().max()) < 1e-12


# -- permutations, batches, centres ------------------------------------------------------------
def test_permutation_equivariance(dtype):
    model = DEGNN(point_group("C3v"), node_attr_dim=2, hidden=16, num_layers=2, variant="ranking")
    _scale_up(model, readout=3.0)
    pos, vel, attr, src, dst = _system(6, seed=4, dtype=dtype)
    ref = model(pos, vel, attr, src, dst)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(1))
    inverse = torch.argsort(perm)
    out = model(pos[perm], vel[perm], attr[perm], inverse[src], inverse[dst])
    assert _rel_err(out, ref[perm]) < tolerance(dtype, "rel")


def test_batched_systems_with_per_system_centres(dtype):
    group = point_group("C4v")
    model = DEGNN(group, node_attr_dim=2, hidden=16, num_layers=2, node_orbit=True)
    _scale_up(model, readout=3.0)
    p1, v1, a1, s1, d1 = _system(4, seed=5, dtype=dtype)
    p2, v2, a2, s2, d2 = _system(5, seed=6, dtype=dtype)
    c = torch.tensor([[1.0, 2.0, -1.0], [-3.0, 0.5, 2.0]], dtype=dtype)
    one = model(p1, v1, a1, s1, d1, center=c[0])
    two = model(p2, v2, a2, s2, d2, center=c[1])
    batch = torch.cat([torch.zeros(4, dtype=torch.long), torch.ones(5, dtype=torch.long)])
    both = model(
        torch.cat([p1, p2]), torch.cat([v1, v2]), torch.cat([a1, a2]),
        torch.cat([s1, s2 + 4]), torch.cat([d1, d2 + 4]), batch=batch, center=c,
    )
    assert _rel_err(both, torch.cat([one, two])) < tolerance(dtype, "rel")
    # each system rotated about its own centre by a different element
    g1, g2 = group.elements[3].to(dtype), group.elements[6].to(dtype)
    moved = model(
        torch.cat([_act(g1, p1, c[0]), _act(g2, p2, c[1])]), torch.cat([v1 @ g1.T, v2 @ g2.T]),
        torch.cat([a1, a2]), torch.cat([s1, s2 + 4]), torch.cat([d1, d2 + 4]), batch=batch, center=c,
    )
    expected = torch.cat([_act(g1, one, c[0]), _act(g2, two, c[1])])
    assert _rel_err(moved, expected) < tolerance(dtype, "rel")


# -- the fused orbit kernel -------------------------------------------------------------------
def _kernel_inputs(seed, order, width):
    """Random ``(tuples, weight, shift, transported)`` for 5 rows of 6 numbers, with gradients."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [(5, 6), (order, 6, width), (5, width), (order, width, 2)]
    return tuple(torch.randn(shape, generator=gen, requires_grad=True) for shape in shapes), gen


def _assert_same_values_and_gradients(first, second, inputs, seeds):
    for a, b in zip(first, second):
        assert torch.allclose(a, b, atol=1e-12)
    for a, b in zip(torch.autograd.grad(first, inputs, seeds), torch.autograd.grad(second, inputs, seeds)):
        assert torch.allclose(a, b, atol=1e-12)


def test_fused_orbit_kernel_matches_unfused_and_gradcheck(monkeypatch):
    with default_dtype(torch.float64):
        monkeypatch.setattr(_orbit, "_CHUNK_ELEMENTS", 24)  # force several chunks (2 rows each)
        (x, w, u, t), gen = _kernel_inputs(0, order=3, width=4)
        assert torch.autograd.gradcheck(orbit_sum_and_readout, (x, w, u, t))

        def unfused(x, w, u, t):
            f = torch.relu(torch.einsum("mi,gic->mgc", x, w) + u[:, None, :])
            return f.sum(1), torch.einsum("mgk,gkr->mr", f, t)

        seeds = [torch.randn(5, 4, generator=gen), torch.randn(5, 2, generator=gen)]
        _assert_same_values_and_gradients(orbit_sum_and_readout(x, w, u, t), unfused(x, w, u, t), (x, w, u, t), seeds)


def test_centrosymmetric_kernel_matches_the_full_orbit(monkeypatch):
    with default_dtype(torch.float64):
        monkeypatch.setattr(_orbit, "_CHUNK_ELEMENTS", 24)
        (x, w, u, t), gen = _kernel_inputs(1, order=2, width=3)
        half_orbit = functools.partial(orbit_sum_and_readout, centrosymmetric=True)
        assert torch.autograd.gradcheck(half_orbit, (x, w, u, t))
        half = half_orbit(x, w, u, t)
        full = orbit_sum_and_readout(x, torch.cat([w, -w]), u, torch.cat([t, -t]))
        seeds = [torch.randn(5, 3, generator=gen), torch.randn(5, 2, generator=gen)]
        _assert_same_values_and_gradients(half, full, (x, w, u, t), seeds)


def test_pooling_kernel_matches_generic_path():
    """The fused "pooling" path and the generic per-element path give the same layer."""
    with default_dtype(torch.float64):
        layer = PointGroupMessagePassing(point_group("D4h"), hidden=8, variant="pooling", node_orbit=True)
        _scale_up(layer)
        pos, vel, _, src, dst = _system(5, seed=8, dtype=torch.float64)
        h = torch.randn(5, 8)
        fused = layer.edge_outputs(h, pos, vel, torch.zeros(5, 3), src, dst)
        f = layer.orbit_features(
            torch.stack([pos[dst], pos[src], vel[dst], vel[src]], 1), layer.orbit_weight,
            layer.invariant_linear(torch.cat([h[dst], h[src], ((pos[dst] - pos[src]) ** 2).sum(-1, keepdim=True)], -1)),
        )
        assert torch.allclose(fused.orbit_embedding, f.mean(1), atol=1e-12)


# -- EGNN baseline ------------------------------------------------------------------------------
def test_egnn_is_e3_equivariant(dtype):
    model = EGNN(node_attr_dim=2, hidden=16, num_layers=3)
    pos, vel, attr, src, dst = _system(5, seed=3, dtype=dtype)
    inputs = ["cartesian_points", "1o", None, None, None]
    error = equivariance_error(model, (pos, vel, attr, src, dst), inputs, "cartesian_points", num_elements=6, translate=True)
    assert error < tolerance(dtype, "rel")


def test_egnn_check_fails_when_the_symmetry_is_broken(dtype):
    """Negative control: velocities left unrotated, or an input-dependent offset, break the check."""
    model = EGNN(node_attr_dim=2, hidden=16, num_layers=3)
    pos, vel, attr, src, dst = _system(5, seed=3, dtype=dtype)
    ref = model(pos, vel, attr, src, dst)
    r = random_rotation(torch.Generator().manual_seed(4)).to(dtype)
    for g in (r, -r):
        assert _rel_err(model(pos @ g.T, vel, attr, src, dst), ref @ g.T) > 1e-3
    anchor = torch.tensor([1.0, 0.0, 0.0], dtype=dtype)  # a fixed direction: not E(3)-equivariant
    broken = lambda p, v: model(p, v, attr, src, dst) + anchor * p.sum()  # noqa: E731
    assert _rel_err(broken(pos @ (-r).T, vel @ (-r).T), broken(pos, vel) @ (-r).T) > 1e-3
    # the shared check sees both
    unrotated_velocities = ["cartesian_points", None, None, None, None]
    assert equivariance_error(model, (pos, vel, attr, src, dst), unrotated_velocities, "cartesian_points") > 1e-3
    assert equivariance_error(broken, (pos, vel), ["cartesian_points", "1o"], "cartesian_points") > 1e-3


# -- input validation ---------------------------------------------------------------------------
def test_bad_input_raises_clear_errors():
    model = DEGNN(point_group("C2v"), node_attr_dim=1, hidden=8, num_layers=1)
    pos, vel, attr, src, dst = _system(4, seed=0, dtype=torch.float32)
    attr = attr[:, :1]
    with pytest.raises(ValueError, match="pos"):
        model(pos.clone().fill_(float("nan")), vel, attr, src, dst)
    with pytest.raises(ValueError, match="node_attr"):
        model(pos, vel, attr.repeat(1, 2), src, dst)
    with pytest.raises(ValueError, match="vel"):
        model(pos, vel[:2], attr, src, dst)
    with pytest.raises(ValueError, match="edge_src"):
        model(pos, vel, attr, src + 10, dst)
    with pytest.raises(TypeError, match="edge_dst"):
        model(pos, vel, attr, src, dst.float())
    with pytest.raises(ValueError, match="center"):
        model(pos, vel, attr, src, dst, center=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="variant"):
        DEGNN("C2v", node_attr_dim=1, variant="lexicographic")
    with pytest.raises(ValueError, match="finite"):
        DEGNN("C∞v", node_attr_dim=1)


# -- training entry point -----------------------------------------------------------------------
@pytest.mark.slow
def test_train_dynamics_smoke(tmp_path):
    config = dict(
        model="degnn", group="auto", hidden=8, num_layers=1, num_train=8, num_val=4, num_test=4,
        epochs=2, batch_size=4, input_frame=1, target_frame=2, output_dir=str(tmp_path),
    )
    result = train_dynamics(config)
    assert result["group"] == "D2h" and result["group_order"] == 8
    assert math.isfinite(result["test_mse"]) and result["time_per_step_s"] > 0
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["test_mse"] == pytest.approx(result["test_mse"])
    assert written["num_parameters"] == written["n_parameters"] == sum(p.numel() for p in result.model.parameters())
    egnn = train_dynamics({**config, "model": "egnn", "output_dir": None})
    assert egnn["group_order"] is None and math.isfinite(egnn["test_mse"])
    with pytest.raises(ValueError, match="unknown keys"):
        train_dynamics({**config, "epoch": 3})
    with pytest.raises(ValueError, match="model"):
        train_dynamics({**config, "model": "mlp"})


@pytest.mark.parametrize("variant", ["pooling", "attention", "ranking"])
def test_graph_without_edges(variant):
    """Isolated particles: only the node term and the velocity term act, still equivariant."""
    with default_dtype(torch.float64):
        group = point_group("D4h")
        model = DEGNN(group, node_attr_dim=1, hidden=8, num_layers=2, variant=variant, node_orbit=True)
        _scale_up(model, readout=3.0)
        pos = torch.randn(3, 3, requires_grad=True)
        vel, attr = torch.randn(3, 3), torch.ones(3, 1)
        none = torch.zeros(0, dtype=torch.long)
        out = model(pos, vel, attr, none, none)
        out.sum().backward()
        assert torch.isfinite(pos.grad).all()
        for g in group.elements:
            assert _rel_err(model(pos @ g.T, vel @ g.T, attr, none, none), out @ g.T) < 1e-10
        with pytest.raises(ValueError, match="pos"):
            model(torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0, 1), none, none)


def test_moving_to_float64_keeps_the_group_exact():
    """A model built under a float32 default and moved to float64 re-derives exact elements."""
    frame = random_rotation(3)
    group = point_group("D3d", frame=frame)
    with default_dtype(torch.float32):
        model = DEGNN(group, 2, hidden=8, num_layers=1)
    assert (model.layers[0].elements.double() - group.elements).abs().max() > 1e-9  # float32-rounded
    model = model.to(torch.float64)
    assert torch.equal(model.layers[0].elements, group.elements)
