"""Well-posed dynamics models: baselines, scalar normalisation, bounded outputs, exact equivariance kept."""
import warnings

import numpy as np
import pytest
import torch
from e3nn import o3

import relaxed_e3nn
from relaxed_e3nn.data.generators._box_nbody import _reflect
from relaxed_e3nn.discrete import DEGNN, EGNN, fully_connected_batch, reflect_into_box
from relaxed_e3nn.groups import point_group

from _tolerance import tolerance

WIDTHS = [5.0, 4.0, 3.0]
CENTER = [0.3, -0.2, 0.1]


def _inputs(dtype, n=6, seed=0, mirror=False):
    gen = torch.Generator().manual_seed(seed)
    pos = (torch.rand(n, 3, generator=gen, dtype=torch.float64) * 2 - 1) * torch.tensor(WIDTHS) * 0.9
    pos = pos + torch.tensor(CENTER, dtype=torch.float64)
    vel = torch.randn(n, 3, generator=gen, dtype=torch.float64) * 3  # far enough to hit the walls
    if mirror:  # on the mirror planes x = c_x and z = c_z: stabilised by some elements
        pos[:, 0], pos[:, 2], vel[:, 0] = CENTER[0], CENTER[2], 0.0
    attr = torch.randint(0, 2, (n, 1), generator=gen).to(torch.float64) * 2 - 1
    src, dst, _ = fully_connected_batch(1, n)
    return pos.to(dtype), vel.to(dtype), attr.to(dtype), src, dst


def _fitted(model, dtype, seed=3):
    """Fit the statistics on random "training" samples (non-trivial values)."""
    gen = torch.Generator().manual_seed(seed)
    pos = (torch.rand(20, 6, 3, generator=gen, dtype=torch.float64) * 2 - 1) * torch.tensor(WIDTHS)
    vel = torch.randn(20, 6, 3, generator=gen, dtype=torch.float64) * 2
    attr = torch.randint(0, 2, (20, 6, 1), generator=gen).to(torch.float64) * 2 - 1
    target = pos + 0.3 * torch.randn(20, 6, 3, generator=gen, dtype=torch.float64)
    model = model.to(dtype)
    stats = model.fit_statistics(pos.to(dtype), vel.to(dtype), attr.to(dtype), target.to(dtype))
    with torch.no_grad():  # leave the zero start of the bounded coefficients: the network must matter
        for layer in model.layers:
            for mlp in (layer.radial_coefficient, layer.velocity_coefficient):
                mlp[-1].weight.normal_(0, 0.5, generator=gen)
    assert stats["length_scale"] != 1.0 and stats["target_scale"] != 1.0
    return model


def _box_degnn(group="D2h", **kwargs):
    options = dict(node_attr_dim=1, hidden=12, num_layers=2, center=CENTER, baseline="reflected", time_step=0.7,
                   half_widths=WIDTHS, coefficient_bound=1.0, normalize=True, node_orbit=True)
    options.update(kwargs)
    return DEGNN(point_group(group), **options)


def _act(g, x):
    c = torch.tensor(CENTER, dtype=x.dtype)
    return c + (x - c) @ g.T


def _rotation(seed):
    q = torch.randn(4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return o3.quaternion_to_matrix(q / q.norm())


def _rel(a, b):
    return float((a - b).detach().abs().max() / b.detach().abs().max())


@pytest.mark.parametrize("mirror", [False, True])
@pytest.mark.parametrize("variant", ["pooling", "ranking"])
def test_normalised_reflected_degnn_is_exactly_box_equivariant(dtype, variant, mirror):
    model = _fitted(_box_degnn(variant=variant), dtype)
    pos, vel, attr, src, dst = _inputs(dtype, mirror=mirror)
    ref = model(pos, vel, attr, src, dst)
    moved_out = ref - model._baseline(pos, vel, torch.tensor(CENTER, dtype=dtype).expand_as(pos))
    assert float(moved_out.detach().abs().max()) > 1e-2  # the network's residual is not negligible
    elements = model.elements.to(dtype)
    assert len(elements) == 8 and bool((torch.det(elements) < 0).any())
    for g in elements:
        assert _rel(model(_act(g, pos), vel @ g.T, attr, src, dst), _act(g, ref)) < tolerance(dtype, "rel")


def test_normalised_model_in_a_random_frame_is_exactly_equivariant(dtype):
    frame = _rotation(4)
    group = point_group("D3d", frame=frame)
    model = DEGNN(group, 1, hidden=12, num_layers=2, center=CENTER, baseline="free_flight", time_step=0.7,
                  coefficient_bound=1.0, normalize=True, variant="attention")
    model = _fitted(model, dtype)
    pos, vel, attr, src, dst = _inputs(dtype)
    ref = model(pos, vel, attr, src, dst)
    for g in model.elements.to(dtype):
        assert _rel(model(_act(g, pos), vel @ g.T, attr, src, dst), _act(g, ref)) < tolerance(dtype, "rel")


def test_normalised_egnn_is_e3_equivariant(dtype):
    model = _fitted(EGNN(1, hidden=12, num_layers=2, center=CENTER, baseline="free_flight", time_step=0.7,
                         coefficient_bound=1.0, normalize=True), dtype)
    pos, vel, attr, src, dst = _inputs(dtype)
    ref = model(pos, vel, attr, src, dst)
    for seed in range(4):
        g = _rotation(seed).to(dtype)
        g = -g if seed % 2 else g  # parity
        shift = torch.randn(3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)
        out = model(pos @ g.T + shift, vel @ g.T, attr, src, dst)
        assert _rel(out, ref @ g.T + shift) < tolerance(dtype, "rel")


def test_negative_the_check_fails_outside_the_group(dtype):
    pos, vel, attr, src, dst = _inputs(dtype)
    twin = _fitted(_box_degnn("C1"), dtype)  # same baseline, no symmetry built in
    flip = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=dtype))
    assert _rel(twin(_act(flip, pos), vel @ flip.T, attr, src, dst), _act(flip, twin(pos, vel, attr, src, dst))) > 1e-3
    box = _fitted(_box_degnn(), dtype)
    c4 = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=dtype)  # not a symmetry of a (5, 4, 3) box
    assert _rel(box(_act(c4, pos), vel @ c4.T, attr, src, dst), _act(c4, box(pos, vel, attr, src, dst))) > 1e-3


def test_reflected_baseline_matches_the_simulator_walls():
    rng = np.random.default_rng(0)
    rel = rng.uniform(-30, 30, size=(200, 3))
    expected = rel.copy()
    _reflect(expected, np.zeros_like(expected), np.zeros(3), np.array(WIDTHS))
    assert np.allclose(reflect_into_box(torch.tensor(rel), torch.tensor(WIDTHS)).numpy(), expected, atol=1e-12)
    open_axis = reflect_into_box(torch.tensor(rel), torch.tensor([5.0, float("inf"), 0.0])).numpy()
    assert np.array_equal(open_axis[:, 1:], rel[:, 1:])


def test_reflected_baseline_needs_a_subgroup_of_the_box_group():
    with pytest.raises(ValueError, match="subgroup of the box group"):
        _box_degnn("D4h")  # the 4-fold axis exchanges x and y, of different widths
    _box_degnn("D4h", half_widths=[4.0, 4.0, 3.0])
    with pytest.raises(ValueError, match="breaks E\\(3\\)"):
        EGNN(1, baseline="reflected", time_step=1.0, half_widths=WIDTHS)
    with pytest.raises(ValueError, match="needs time_step"):
        DEGNN("C1", 1, baseline="free_flight")
    with pytest.raises(ValueError, match="baseline must be one of"):
        DEGNN("C1", 1, baseline="verlet", time_step=1.0)


def test_untrained_model_starts_near_its_baseline_and_stays_bounded():
    model = _box_degnn().double()
    pos, vel, attr, src, dst = _inputs(torch.float64)
    base = model._baseline(pos, vel, torch.tensor(CENTER, dtype=torch.float64).expand_as(pos))
    assert float((model(pos, vel, attr, src, dst) - base).abs().max()) < 0.05
    _fitted(model, torch.float64)
    wild = model(pos, vel * 1e4, attr * 1e3, src, dst)  # outliers far beyond the training data
    residual = wild - model._baseline(pos, vel * 1e4, torch.tensor(CENTER, dtype=torch.float64).expand_as(pos))
    assert float(residual.norm(dim=-1).max()) < float(model.output_bound)
    assert torch.isfinite(wild).all()


def test_save_load_is_bit_for_bit_with_statistics(dtype, tmp_path):
    model = _fitted(_box_degnn(), dtype).eval()
    before = model(*_inputs(dtype))
    relaxed_e3nn.save(model, tmp_path / "m.pt")
    loaded = relaxed_e3nn.load(tmp_path / "m.pt")
    assert loaded.to_config() == model.to_config() and loaded.normalize and loaded.baseline == "reflected"
    assert torch.equal(loaded(*_inputs(dtype)), before)
    wide = relaxed_e3nn.load(tmp_path / "m.pt", dtype=torch.float64)  # statistics survive a dtype change
    assert float(wide.length_scale) == float(model.length_scale)
    assert _rel(wide(*_inputs(torch.float64)), before.double()) < 1e-5


def test_configs_without_the_new_options_build_the_format1_model():
    old = {"node_attr_dim": 1, "hidden": 8, "layers": 1, "center": [0.0, 0.0, 0.0]}  # format-1 key names
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an older file's former key name is read quietly
        model = EGNN.from_config(old)
    assert model.baseline == "none" and not model.normalize and model.coefficient_bound is None
    assert model.to_config() == {"node_attr_dim": 1, "hidden": 8, "num_layers": 1, "center": [0.0, 0.0, 0.0]}
    with pytest.warns(DeprecationWarning, match="EGNN.__init__: 'layers' is deprecated; use 'num_layers'"):
        assert EGNN(1, hidden=8, layers=1).num_layers == 1
    with pytest.warns(DeprecationWarning, match="DEGNN.__init__: 'layers' is deprecated; use 'num_layers'"):
        assert DEGNN("C2", 1, hidden=8, layers=2).num_layers == 2
    with pytest.raises(ValueError, match="hidden and num_layers must be positive integers"):
        EGNN(1, hidden=8, num_layers=0)
    with pytest.raises(ValueError, match="unknown keys \\['baselines'\\]"):
        EGNN.from_config({**old, "baselines": "none"})
