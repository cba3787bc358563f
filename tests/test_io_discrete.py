"""DEGNN / EGNN in the one model file format: bitwise round trip, the exact group, clear errors,
RelaxedNetwork files without a "kind" entry, and the model written by ``train_dynamics``."""
import dataclasses
import json
import os

import numpy as np
import pytest
import torch
from e3nn import o3

import relaxed_e3nn
from relaxed_e3nn._dtype import default_dtype
from relaxed_e3nn.data.generators._box_nbody import box_nbody
from relaxed_e3nn.discrete import DEGNN, EGNN, fully_connected_batch
from relaxed_e3nn.train import train_dynamics
from relaxed_e3nn.train._dynamics import _evaluate, _Tensors
from relaxed_e3nn.groups import point_group
from relaxed_e3nn.models import FORMAT_VERSION, RelaxedNetwork, load, model_from_dict, model_to_dict, save, state_checksum
from test_models import make

RELATIVE = {torch.float32: 1e-5, torch.float64: 1e-10}
CENTER = [0.3, -0.2, 0.1]


def random_rotation(seed):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(4, generator=gen, dtype=torch.float64)
    return o3.quaternion_to_matrix(q / q.norm())


def inputs(dtype, n=6, node_attr_dim=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    pos = torch.randn(n, 3, generator=gen, dtype=torch.float64).to(dtype) * 2
    vel = torch.randn(n, 3, generator=gen, dtype=torch.float64).to(dtype)
    attr = torch.randn(n, node_attr_dim, generator=gen, dtype=torch.float64).to(dtype)
    edge_src, edge_dst, _ = fully_connected_batch(1, n)
    return pos, vel, attr, edge_src, edge_dst


def same_element_set(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two (G, 3, 3) tensors hold exactly the same matrices (any order)."""
    a, b = a.reshape(-1, 9), b.reshape(-1, 9)
    return a.shape == b.shape and all(bool((b == row).all(-1).any()) for row in a)


def equivariance_error(model, g, dtype):
    pos, vel, attr, src, dst = inputs(dtype)
    g = g.to(dtype)
    c = torch.tensor(CENTER, dtype=dtype)
    out = model(pos, vel, attr, src, dst)
    out_of_moved = model(c + (pos - c) @ g.T, vel @ g.T, attr, src, dst)
    expected = c + (out - c) @ g.T
    return float((out_of_moved - expected).detach().abs().max() / expected.detach().abs().max())


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


def degnn_in_random_frame(**kwargs):
    group = point_group("D3d", frame=random_rotation(1))
    options = dict(node_attr_dim=2, hidden=8, num_layers=2, variant="ranking", center=CENTER, node_orbit=True)
    options.update(kwargs)
    return DEGNN(group, **options), group


def test_degnn_round_trip_bitwise_with_its_group(dtype, tmp_path):
    model, group = degnn_in_random_frame()
    model.eval()
    before = model(*inputs(dtype))
    path = tmp_path / "sub" / "degnn.pt"
    relaxed_e3nn.save(model, path)
    assert sorted(os.listdir(path.parent)) == ["degnn.pt"]  # no temporary file left behind

    loaded = relaxed_e3nn.load(path)
    assert type(loaded) is DEGNN and not loaded.training
    assert_same_state(loaded, model)
    after = loaded(*inputs(dtype))
    assert after.dtype == dtype and torch.equal(after, before)

    # the group survives exactly: the float64 element set of the named group in its random frame
    assert same_element_set(loaded._group_elements, group.elements)
    assert not same_element_set(loaded._group_elements, point_group("D3d").elements)  # the frame matters
    assert loaded.to_config() == model.to_config() and loaded.group_name == "D3d"
    assert torch.equal(loaded.elements, model.elements)

    # and so the loaded model is equivariant under that group, proper and improper elements alike
    improper = [g for g in group.elements if torch.det(g) < 0]
    assert len(improper) == 6
    for g in list(group.elements[1:4]) + improper[:3]:
        assert equivariance_error(loaded, g, dtype) < RELATIVE[dtype]
    assert equivariance_error(loaded, -random_rotation(2), dtype) > 1e-3  # not an element: the check fails

    payload = model_to_dict(loaded)
    assert payload["kind"] == "DEGNN" and payload["dtype"] == str(dtype).split(".")[1] and "frame" not in payload
    assert payload["format_version"] == FORMAT_VERSION == 2
    json.dumps(payload["config"])  # plain data


def test_degnn_dtype_change_keeps_the_exact_group():
    with default_dtype(torch.float32):
        model, group = degnn_in_random_frame(variant="pooling", node_orbit=False)
    with default_dtype(torch.float64):
        assert model.elements.dtype == torch.float32
        wide = model_from_dict(model_to_dict(model), dtype=torch.float64)
        assert wide.embedding.weight.dtype == torch.float64
        for layer in wide.layers:  # built from the float64 list, not widened from float32
            assert layer.elements.dtype == torch.float64 and torch.equal(layer.elements, group.elements)
        for name, p in wide.named_parameters():
            assert torch.equal(p, model.get_parameter(name).double()), name
        for g in group.elements[1:]:
            assert equivariance_error(wide, g, torch.float64) < 1e-10


def test_egnn_round_trip_bitwise(dtype, tmp_path):
    model = EGNN(2, hidden=8, num_layers=2, center=CENTER).eval()
    before = model(*inputs(dtype))
    path = tmp_path / "egnn.pt"
    save(model, path)
    loaded = load(path)
    assert type(loaded) is EGNN and not loaded.training
    assert_same_state(loaded, model)
    assert torch.equal(loaded(*inputs(dtype)), before)
    payload = model_to_dict(loaded)
    assert payload["kind"] == "EGNN"
    assert payload["config"] == {"node_attr_dim": 2, "hidden": 8, "num_layers": 2, "center": model.center.tolist()}


def test_relaxed_network_file_without_kind_still_loads(tmp_path):
    model = make(torch.float64).eval()
    payload = model_to_dict(model)
    assert payload["kind"] == "RelaxedNetwork"
    legacy = {k: v for k, v in payload.items() if k != "kind"}  # as written before the entry existed
    torch.save(legacy, tmp_path / "legacy.pt")
    loaded = load(tmp_path / "legacy.pt")
    assert isinstance(loaded, RelaxedNetwork) and loaded.config.to_dict() == payload["config"]
    assert_same_state(loaded, model)
    save(model, tmp_path / "new.pt")
    assert isinstance(load(tmp_path / "new.pt", kind="RelaxedNetwork"), RelaxedNetwork)
    assert isinstance(load(tmp_path / "legacy.pt", kind="RelaxedNetwork"), RelaxedNetwork)
    with pytest.raises(ValueError, match="legacy.pt: holds a model of kind 'RelaxedNetwork', expected 'EGNN'"):
        load(tmp_path / "legacy.pt", kind="EGNN")


def test_bad_payloads_raise_clear_errors(tmp_path):
    with default_dtype(torch.float64):
        model, _ = degnn_in_random_frame(num_layers=1)
    good = model_to_dict(model)

    with pytest.raises(ValueError, match="unknown model kind 'SchNet'"):
        model_from_dict({**good, "kind": "SchNet"})
    config = dict(good["config"])
    del config["variant"]
    with pytest.raises(ValueError, match=r"invalid DEGNN config.*missing keys \['variant'\]"):
        model_from_dict({**good, "config": config})
    with pytest.raises(ValueError, match=r"invalid EGNN config.*unknown keys \['group'"):
        model_from_dict({**model_to_dict(EGNN(2, hidden=4, num_layers=1)), "config": {**good["config"]}})
    sheared = np.array(good["config"]["group"])
    sheared[1, 0, 1] += 0.1
    with pytest.raises(ValueError, match="invalid DEGNN config.*orthogonal"):
        model_from_dict({**good, "config": {**good["config"], "group": sheared.tolist()}})
    with pytest.raises(ValueError, match="invalid DEGNN config.*group"):
        model_from_dict({**good, "config": {**good["config"], "group": "D3d in my frame"}})
    # weights whose group is another frame's D3d: same shapes, a different group
    other = model_to_dict(DEGNN("D3d", **{k: good["config"][k] for k in ("node_attr_dim", "hidden", "num_layers")},
                                variant="ranking", node_orbit=True))
    state = {**good["state_dict"], "layers.0.elements": other["state_dict"]["layers.0.elements"]}
    with pytest.raises(ValueError, match="layers.0.elements.*differs from the config's group"):
        # a consistent checksum, so that the group check (not the checksum) is what catches it
        model_from_dict({**good, "state_dict": state, "sha256": state_checksum(state)}, source="degnn.pt")
    with pytest.raises(ValueError, match="no 'frame' entry"):
        model_from_dict({**good, "frame": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]})
    state = dict(good["state_dict"])
    del state["embedding.weight"]
    with pytest.raises(ValueError, match=r"weights do not match.*missing \['embedding.weight'\]"):
        model_from_dict({**good, "state_dict": state, "sha256": state_checksum(state)})
    with pytest.raises(TypeError, match="model must be one of"):
        model_to_dict(torch.nn.Linear(3, 3))
    with pytest.raises(TypeError, match="dtype"):
        DEGNN.from_config(good["config"], dtype=torch.int64)
    assert type(model_from_dict(good)) is DEGNN  # the untouched payload loads

    # callers that need one kind say so, and get a clear error for another
    save(model, tmp_path / "degnn.pt")
    with pytest.raises(ValueError, match="degnn.pt: holds a model of kind 'DEGNN', expected 'RelaxedNetwork'"):
        load(tmp_path / "degnn.pt", kind="RelaxedNetwork")
    with pytest.raises(ValueError, match="kind must be one of"):
        load(tmp_path / "degnn.pt", kind="degnn")
    assert type(load(tmp_path / "degnn.pt", kind="DEGNN")) is DEGNN


def _tiny_config(output_dir, **kwargs):
    config = dict(model="degnn", hidden=4, num_layers=1, num_train=4, num_val=4, num_test=4, epochs=2,
                  batch_size=4, input_frame=1, target_frame=2,
                  output_dir=None if output_dir is None else str(output_dir))
    return {**config, **kwargs}


def test_train_dynamics_writes_the_scored_model(tmp_path):
    data = box_nbody(num_samples=12, num_bodies=4, input_frame=1, target_frame=2, seed=0)
    result = train_dynamics(_tiny_config(tmp_path / "run", dtype="float64"), data=data)
    model_path = tmp_path / "run" / "model.pt"
    assert result["model_path"] == str(model_path)
    assert sorted(os.listdir(tmp_path / "run")) == ["metrics.json", "model.pt"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["model_path"] == str(model_path)

    model = load(model_path)
    assert type(model) is DEGNN and model.group_name == "D2h" and model.embedding.weight.dtype == torch.float64
    assert same_element_set(model._group_elements, point_group("D2h", frame=torch.as_tensor(data.group_frame)).elements)
    test = _Tensors(data.subset(slice(8, 12)), torch.float64)
    assert _evaluate(model, test, 4, {}) == result["test_mse"]  # the file holds the weights that were scored

    egnn = train_dynamics(_tiny_config(tmp_path / "egnn", model="egnn"), data=data)
    assert type(load(egnn["model_path"])) is EGNN
    assert train_dynamics(_tiny_config(None), data=data)["model_path"] is None


def test_train_dynamics_writes_nothing_when_training_fails(tmp_path):
    data = box_nbody(num_samples=12, num_bodies=4, input_frame=1, target_frame=2, seed=0)
    broken = dataclasses.replace(data, targets=np.full_like(data.targets, np.nan))
    with pytest.raises(FloatingPointError, match="loss became nan"):
        train_dynamics(_tiny_config(tmp_path / "run"), data=broken)
    assert not (tmp_path / "run").exists() or os.listdir(tmp_path / "run") == []
