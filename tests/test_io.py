"""relaxed_e3nn.save / load and the model payload: bitwise round trip, clear errors on bad files."""
import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

import relaxed_e3nn
from relaxed_e3nn.data import collate, from_ase
from relaxed_e3nn.models import (
    FORMAT_VERSION,
    METADATA_KEYS,
    RelaxedNetwork,
    load,
    model_from_dict,
    model_to_dict,
    save,
    state_checksum,
)
from relaxed_e3nn.nn import relaxed_parameters
from test_models import CUTOFF, broken_theta, crystal, energy_errors, make, molecule, random_orthogonal


def outputs(model, graph):
    out = model(graph, compute_forces=True, compute_stress=True)
    return {k: v.detach() for k, v in out.items()}


def assert_bitwise_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]) or (  # NaN stress of molecules compares unequal to itself
            torch.equal(torch.isnan(a[key]), torch.isnan(b[key]))
            and torch.equal(a[key].nan_to_num(), b[key].nan_to_num())
        ), key


def test_save_load_bitwise_round_trip(dtype, tmp_path):
    model = make(dtype, relaxed=True)
    graph = collate([from_ase(crystal(), CUTOFF, dtype=dtype), from_ase(molecule(), CUTOFF, dtype=dtype)])
    path = tmp_path / "sub" / "model.pt"
    model.set_atomic_energies([-1.5, 0.25, 3.0, -0.125, 7.0])
    try:
        with broken_theta(model):  # theta must round-trip too
            model.eval()
            before = outputs(model, graph)
            relaxed_e3nn.save(model, path)
            state = {k: v.clone() for k, v in model.state_dict().items()}
    finally:
        model.set_atomic_energies([0.0] * 5)
    assert sorted(os.listdir(path.parent)) == ["model.pt"]  # no temporary file left behind

    loaded = relaxed_e3nn.load(path)
    assert isinstance(loaded, RelaxedNetwork) and not loaded.training
    assert loaded.atomic_energies.tolist() == [-1.5, 0.25, 3.0, -0.125, 7.0]
    assert loaded.config == RelaxedNetwork(loaded.config).config
    assert loaded.state_dict().keys() == state.keys()
    for key, value in loaded.state_dict().items():
        assert value.dtype == state[key].dtype and torch.equal(value, state[key]), key
    assert any(theta.abs().sum() > 1 for _, _, theta in relaxed_parameters(loaded))
    assert_bitwise_equal(outputs(loaded, graph), before)

    # the payload functions the trainer's checkpoints wrap, through weights_only torch.load
    payload = model_to_dict(loaded)
    assert payload["format_version"] == FORMAT_VERSION and payload["dtype"] == str(dtype).split(".")[1]
    assert payload["package_version"] == relaxed_e3nn.__version__
    json.dumps(payload["config"])  # plain data
    torch.save({"model": payload, "epoch": 3}, tmp_path / "checkpoint.pt")
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    again = model_from_dict(checkpoint["model"]).eval()
    assert_bitwise_equal(outputs(again, graph), before)


def test_load_converts_dtype_and_keeps_exact_equivariance(tmp_path):
    """A float32 file loaded as float64 gets float64 weights and float64-exact e3nn constants
    (the file's float32 Wigner 3j buffers would limit equivariance to ~1e-10)."""
    model = make(torch.float32, relaxed=True)
    save(model, tmp_path / "m.pt")
    loaded = load(tmp_path / "m.pt", dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in loaded.parameters())
    for name, value in loaded.state_dict().items():  # weights are the float32 values, exactly
        if name in dict(loaded.named_parameters()):
            assert torch.equal(value, model.state_dict()[name].double())
    graph = from_ase(crystal(), CUTOFF, dtype=torch.float64)
    rotations = random_orthogonal(2)
    assert max(energy_errors(loaded, graph, rotations, True).values()) < 1e-13
    # negative control: the same model with the file's float32 constants cast up
    loaded.load_state_dict(model.state_dict())
    assert max(energy_errors(loaded, graph, rotations, True).values()) > 1e-12


def write_bytes(path, data: bytes):
    path.write_bytes(data)
    return path


def test_bad_files_raise_clear_errors(tmp_path):
    model = make(torch.float64)
    good = tmp_path / "good.pt"
    save(model, good)
    blob = good.read_bytes()

    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load(tmp_path / "missing.pt")
    cases = {
        "empty.pt": (b"", "empty file"),
        "truncated.pt": (blob[: len(blob) // 2], "corrupt, truncated or foreign"),
        "text.pt": (b"energy: 1.0\nforces: [0, 0, 0]\n", "corrupt, truncated or foreign"),
        "noise.pt": (bytes(range(256)) * 8, "corrupt, truncated or foreign"),
    }
    for name, (data, message) in cases.items():
        path = write_bytes(tmp_path / name, data)
        with pytest.raises(ValueError, match=message) as info:
            load(path)
        assert name in str(info.value)

    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3), "epoch": 1}, foreign)
    with pytest.raises(ValueError, match="foreign.pt: not a relaxed_e3nn model"):
        load(foreign)
    torch.save(model.state_dict(), tmp_path / "state.pt")
    with pytest.raises(ValueError, match="state.pt: not a relaxed_e3nn model"):
        load(tmp_path / "state.pt")
    torch.save({"model": model_to_dict(model), "optimizer": {}}, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="training checkpoint"):
        load(tmp_path / "checkpoint.pt")

    payload = model_to_dict(model)
    newer = dict(payload, format_version=FORMAT_VERSION + 1)
    torch.save(newer, tmp_path / "newer.pt")
    with pytest.raises(ValueError, match=f"newer.pt: written with model format version {FORMAT_VERSION + 1}"):
        load(tmp_path / "newer.pt")
    bad_config = dict(payload, config={**payload["config"], "num_layers": "two"})
    torch.save(bad_config, tmp_path / "bad_config.pt")
    with pytest.raises(ValueError, match="bad_config.pt: invalid model config.*num_layers"):
        load(tmp_path / "bad_config.pt")
    wrong_weights = dict(payload, config={**payload["config"], "radial_neurons": 7})
    torch.save(wrong_weights, tmp_path / "wrong_weights.pt")
    with pytest.raises(ValueError, match="wrong_weights.pt: weights do not match the model config"):
        load(tmp_path / "wrong_weights.pt")
    missing = {k: v for k, v in payload.items() if k != "state_dict"}
    with pytest.raises(ValueError, match="missing entries.*state_dict"):
        model_from_dict(missing)
    with pytest.raises(ValueError, match="expected a dict"):
        model_from_dict([1, 2])
    with pytest.raises(TypeError, match="RelaxedNetwork"):
        model_to_dict(torch.nn.Linear(2, 2))


def test_failed_save_leaves_the_old_file(tmp_path, monkeypatch):
    model = make(torch.float64)
    path = tmp_path / "model.pt"
    save(model, path)
    before = path.read_bytes()

    def broken_save(obj, handle, *args, **kwargs):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save(model, path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.pt"]


# --------------------------------------------------------------------------- format versions
DATA = Path(__file__).resolve().parent / "data"


def _fixture_module():
    """tests/data/make_format1_fixture.py (the inputs the format-1 files were evaluated on)."""
    spec = importlib.util.spec_from_file_location("make_format1_fixture", DATA / "make_format1_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_close_or_both_nan(actual: torch.Tensor, expected: torch.Tensor, atol: float):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    assert torch.equal(torch.isnan(actual), torch.isnan(expected))
    assert float((actual.nan_to_num() - expected.nan_to_num()).abs().max()) <= atol


def test_format1_relaxed_network_file_still_loads_and_reproduces_its_outputs():
    payload = torch.load(DATA / "model_format1.pt", weights_only=True)
    assert payload["format_version"] == 1 and "atomic_energies" in payload["config"]
    model = load(DATA / "model_format1.pt")
    assert model.metadata == {} and model.config.num_layers == 1
    assert model.atomic_energies.tolist() == [-13.6, -2041.5] and float(model.scale) == 0.75
    assert not model.config.frame_is_identity
    assert any(float(theta.detach().abs().max()) > 0.1 for _, _, theta in relaxed_parameters(model))
    expected = torch.load(DATA / "model_format1_expected.pt", weights_only=True)
    out = outputs(model, _fixture_module().fixture_graph())
    assert out.keys() == expected.keys()
    for key in expected:
        assert_close_or_both_nan(out[key], expected[key], atol=1e-12)
    # negative control: the same file read with its fitted shifts dropped no longer matches
    model.set_atomic_energies([0.0, 0.0])
    assert float((outputs(model, _fixture_module().fixture_graph())["energy"] - expected["energy"]).abs().max()) > 1


def test_format1_degnn_file_still_loads_and_reproduces_its_outputs():
    model = load(DATA / "degnn_format1.pt", kind="DEGNN")
    expected = torch.load(DATA / "degnn_format1_expected.pt", weights_only=True)["pos"]
    out = model(*_fixture_module().degnn_inputs()).detach()
    assert_close_or_both_nan(out, expected, atol=1e-12)


def test_format2_checksum_and_metadata(tmp_path):
    model = make(torch.float64, relaxed=True)
    payload = model_to_dict(model)
    assert payload["format_version"] == FORMAT_VERSION == 2
    assert payload["sha256"] == state_checksum(model.state_dict())
    assert not set(METADATA_KEYS) & set(payload)  # optional entries only when set

    metadata = {"symmetry": {"parent": "Oh", "kept": "C4v", "p_value": 0.01},
                "data_keys": {"energy": "REF_energy", "forces": "REF_forces"},
                "recipe": {"host": "gate_points_2101", "irreps_relaxed": 2}}
    path = tmp_path / "model.pt"
    save(model, path, metadata=metadata)
    assert torch.load(path, weights_only=True)["data_keys"] == metadata["data_keys"]
    loaded = load(path)
    assert loaded.metadata == metadata
    save(loaded, tmp_path / "again.pt")  # a loaded model keeps its metadata
    assert load(tmp_path / "again.pt").metadata == metadata

    tampered = torch.load(path, weights_only=True)
    name = next(k for k in tampered["state_dict"] if k.endswith("theta.theta"))
    tampered["state_dict"][name][1] += 1e-9
    torch.save(tampered, tmp_path / "tampered.pt")
    with pytest.raises(ValueError, match="tampered.pt: checksum mismatch"):
        load(tmp_path / "tampered.pt")
    unsummed = {k: v for k, v in torch.load(path, weights_only=True).items() if k != "sha256"}
    with pytest.raises(ValueError, match="missing entries.*sha256"):
        model_from_dict(unsummed)
    for bad, message in (({"colour": {}}, "unknown metadata key 'colour'"),
                         ({"recipe": "gate_points"}, r"metadata\['recipe'\] must be a dict"),
                         ({"symmetry": {"R": torch.eye(3)}}, "plain JSON data")):
        with pytest.raises(ValueError, match=message):
            save(model, tmp_path / "bad.pt", metadata=bad)
    assert not (tmp_path / "bad.pt").exists()


def test_config_dicts_with_former_fields_seed_the_buffers():
    d = dict(make(torch.float64).config.to_dict(), atomic_energies=[1.0, 2.0, 3.0, 4.0, 5.0], scale=0.5)
    d["layers"] = d.pop("num_layers")
    with pytest.warns(DeprecationWarning) as record:
        model = RelaxedNetwork(d, dtype=torch.float64)
    messages = " ".join(str(w.message) for w in record)
    assert "'layers' is deprecated" in messages and "no longer config fields" in messages
    assert model.atomic_energies.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0] and float(model.scale) == 0.5
    assert "atomic_energies" not in model.config.to_dict() and model.config.initial_buffers == {}
    assert "atomic_energies" not in model_to_dict(model)["config"]
