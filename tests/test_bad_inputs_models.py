"""Bad input to models, layers, model files and the calculator: a clear exception naming the argument.

One test per case family, parametrised over cases; each case states the exception type it expects
and a pattern that names the argument (the file and the tensor for bad weights). The last tests
check the precision promise that goes with the builders' float64 origin: a float32 model gives
the same forces for a structure translated by 1e4 or 1e6 Å.
"""
import dataclasses

import numpy as np
import pytest
import torch
from ase import Atoms
from e3nn import o3

from relaxed_e3nn.calculators import RelaxedCalculator
from relaxed_e3nn.data import from_arrays, from_ase
from relaxed_e3nn.discrete import DEGNN, EGNN
from relaxed_e3nn.groups import D_from_matrix
from relaxed_e3nn.models import RelaxedNetwork, RelaxedNetworkConfig, load, model_from_dict, model_to_dict, save
from relaxed_e3nn.models import state_checksum
from relaxed_e3nn.nn import RelaxedConvolution, RelaxedLinear, RelaxedTensorProduct, RelaxedWeights
from test_models import CUTOFF, broken_theta, crystal, make, molecule, rel_err

F32, F64 = torch.float32, torch.float64


@pytest.fixture(scope="module")
def model():
    return make(F64, relaxed=True)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("models") / "model.pt"
    save(model, path)
    return path


def run(case, *arguments):
    call, exception, pattern = case
    with pytest.raises(exception, match=pattern):
        call(*arguments)


def _theta_key(state):
    return next(name for name in state if name.endswith("theta.theta"))


def _file_with(tmp_path, model, change, name="bad.pt", checksum=True):
    """``model``'s file with ``change(payload)`` applied (and its checksum recomputed unless asked not to)."""
    payload = model_to_dict(model)
    change(payload)
    if checksum:
        payload["sha256"] = state_checksum(payload["state_dict"])
    path = tmp_path / name
    torch.save(payload, path)
    return path


def _poke(value, which="theta"):
    """A payload change writing ``value`` into the first entry of a weight (``theta`` or the first tensor)."""
    def change(payload):
        state = payload["state_dict"]
        key = _theta_key(state) if which == "theta" else next(k for k, v in state.items() if v.is_floating_point())
        state[key] = state[key].clone()
        state[key].view(-1)[0] = value
    return change


def _resize_theta(payload):
    state = payload["state_dict"]
    key = _theta_key(state)
    state[key] = torch.zeros(state[key].numel() + 3, dtype=state[key].dtype)


# --------------------------------------------------------------------------- dtypes
def _config():
    return RelaxedNetworkConfig(species=[1, 8], cutoff=CUTOFF, irreps_hidden="4x0e+2x1o", num_layers=1,
                                num_radial_basis=4, radial_neurons=8)


DTYPES = {
    "network_float16": (lambda m, f: RelaxedNetwork(_config(), dtype=torch.float16), TypeError,
                        "RelaxedNetwork: dtype must be torch.float32 or torch.float64, got torch.float16"),
    "network_bfloat16": (lambda m, f: RelaxedNetwork(_config(), dtype=torch.bfloat16), TypeError,
                         "RelaxedNetwork: dtype must be"),
    "network_int64": (lambda m, f: RelaxedNetwork(_config(), dtype=torch.int64), TypeError, "dtype must be"),
    "network_string": (lambda m, f: RelaxedNetwork(_config(), dtype="float32"), TypeError, "dtype must be"),
    "egnn_float16": (lambda m, f: EGNN.from_config(EGNN(2, hidden=4, num_layers=1).to_config(), dtype=torch.float16),
                     TypeError, "EGNN.from_config: dtype must be torch.float32 or torch.float64"),
    "degnn_bfloat16": (lambda m, f: DEGNN.from_config(DEGNN("C2", 2, hidden=4, num_layers=1).to_config(),
                                                      dtype=torch.bfloat16),
                       TypeError, "DEGNN.from_config: dtype must be"),
    "load_float16": (lambda m, f: load(f, dtype=torch.float16), TypeError, "load: dtype must be torch.float32"),
    "load_bfloat16": (lambda m, f: load(f, dtype=torch.bfloat16), TypeError, "load: dtype must be"),
    "model_from_dict_float16": (lambda m, f: model_from_dict(model_to_dict(m), dtype=torch.float16), TypeError,
                                "model_from_dict: dtype must be"),
    "file_saved_in_float16": (lambda m, f: load(_file_with(f.parent, m, lambda p: p.update(dtype="float16"),
                                                           "half.pt")),
                              ValueError, r"half\.pt: dtype 'float16' is not supported"),
    "file_saved_in_bfloat16": (lambda m, f: load(_file_with(f.parent, m, lambda p: p.update(dtype="bfloat16"),
                                                            "bhalf.pt")),
                               ValueError, r"bhalf\.pt: dtype 'bfloat16' is not supported"),
    "calculator_float16": (lambda m, f: RelaxedCalculator(m, dtype=torch.float16), TypeError,
                           "RelaxedCalculator: dtype must be torch.float32"),
    "calculator_file_bfloat16": (lambda m, f: RelaxedCalculator(f, dtype=torch.bfloat16), TypeError,
                                 "dtype must be torch.float32"),
}


@pytest.mark.parametrize("case", DTYPES.values(), ids=DTYPES.keys())
def test_only_float32_and_float64_models(case, model, model_file):
    run(case, model, model_file)


# --------------------------------------------------------------------------- weights on load
def _load_state(model, change):
    state = {k: v.clone() for k, v in model.state_dict().items()}
    change(state)
    model.load_state_dict(state)


def _nan_theta(state):
    state[_theta_key(state)].view(-1)[0] = float("nan")


def _long_theta(state):
    key = _theta_key(state)
    state[key] = torch.zeros(state[key].numel() + 1, dtype=state[key].dtype)


WEIGHTS = {
    "nan_theta_in_file": (lambda m, p: load(_file_with(p, m, _poke(float("nan")), "nan_theta.pt")), ValueError,
                          r"nan_theta\.pt: state_dict\['.*theta\.theta'\] contains NaN or inf"),
    "inf_theta_in_file": (lambda m, p: load(_file_with(p, m, _poke(float("inf")), "inf_theta.pt")), ValueError,
                          r"inf_theta\.pt: state_dict\['.*theta\.theta'\] contains NaN or inf"),
    "nan_weight_in_file": (lambda m, p: load(_file_with(p, m, _poke(float("nan"), "first"), "nan_w.pt")),
                           ValueError, r"nan_w\.pt: state_dict\['.*'\] contains NaN or inf: 1 non-finite"),
    "theta_of_wrong_size_in_file": (lambda m, p: load(_file_with(p, m, _resize_theta, "long_theta.pt")),
                                    ValueError, r"long_theta\.pt: weights do not match the model config: "
                                                r"state_dict\['.*theta\.theta'\] has shape"),
    "flipped_bytes_in_file": (lambda m, p: load(_file_with(p, m, _poke(0.123456), "flipped.pt", checksum=False)),
                              ValueError, r"flipped\.pt: checksum mismatch"),
    "nan_in_model_dict": (lambda m, p: model_from_dict(_payload(m, _poke(float("nan"))), source="payload"),
                          ValueError, r"payload: state_dict\['.*theta\.theta'\] contains NaN"),
    "nan_theta_load_state_dict": (lambda m, p: _load_state(make(F64, fresh=True, relaxed=True), _nan_theta),
                                  ValueError, r"RelaxedWeights: .*theta\.theta contains NaN or inf"),
    "theta_of_wrong_size_load_state_dict": (lambda m, p: _load_state(make(F64, fresh=True, relaxed=True),
                                                                     _long_theta),
                                            ValueError, r"RelaxedWeights: .*theta\.theta has shape \[\d+\], but "
                                                        r"irreps_relaxed .* needs"),
    "theta_of_wrong_size_weights": (lambda m, p: RelaxedWeights("1x0e+1x1o").load_state_dict({"theta": torch.ones(3)}),
                                    ValueError, r"theta has shape \[3\], but irreps_relaxed 1x0e\+1x1o needs \[4\]"),
    "inf_theta_weights": (lambda m, p: RelaxedWeights(1).load_state_dict({"theta": torch.full((8,), float("inf"))}),
                          ValueError, "theta contains NaN or inf"),
}


def _payload(model, change):
    payload = model_to_dict(model)
    change(payload)
    payload["sha256"] = state_checksum(payload["state_dict"])
    return payload


@pytest.mark.parametrize("case", WEIGHTS.values(), ids=WEIGHTS.keys())
def test_bad_weights_are_refused_on_load_naming_file_and_tensor(case, model, tmp_path):
    run(case, model, tmp_path)


def test_weight_checks_leave_good_files_alone(model, model_file):
    loaded = load(model_file)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


# --------------------------------------------------------------------------- irreps arguments
def _convolution(**changes):
    arguments = dict(irreps_in="4x0e", irreps_node_attr="2x0e", irreps_edge_attr="0e+1o", irreps_out="4x0e",
                     number_of_basis=4, radial_layers=1, radial_neurons=8, num_neighbors=3.0)
    arguments.update(changes)
    return lambda: RelaxedConvolution(**arguments)


IRREPS = {
    "linear_malformed_in": (lambda: RelaxedLinear("1xfoo", "1x0e"), ValueError, "RelaxedLinear: irreps_in must be"),
    "linear_negative_out": (lambda: RelaxedLinear("1x0e", "-1x0e"), ValueError,
                            "RelaxedLinear: irreps_out must have non-negative multiplicities"),
    "linear_number_in": (lambda: RelaxedLinear(3.5, "1x0e"), ValueError, "irreps_in must be an irreps string"),
    "linear_negative_relaxed": (lambda: RelaxedLinear("1x0e", "1x0e", irreps_relaxed="-2x1o"), ValueError,
                                "irreps_relaxed must have non-negative multiplicities"),
    "linear_malformed_relaxed": (lambda: RelaxedLinear("1x0e", "1x0e", irreps_relaxed="1x3q"), ValueError,
                                 "irreps_relaxed must be an irreps string"),
    "linear_negative_int_relaxed": (lambda: RelaxedLinear("1x0e", "1x0e", irreps_relaxed=-1), ValueError,
                                    "irreps_relaxed as an int is the largest l and must be >= 0"),
    "linear_bool_relaxed": (lambda: RelaxedLinear("1x0e", "1x0e", irreps_relaxed=True), TypeError,
                            "irreps_relaxed must be an int"),
    "linear_float_relaxed": (lambda: RelaxedLinear("1x0e", "1x0e", irreps_relaxed=2.0), TypeError,
                             "irreps_relaxed must be an int"),
    "tp_malformed_in1": (lambda: RelaxedTensorProduct("2xq", "1x0e", "1x0e", []), ValueError,
                         "RelaxedTensorProduct: irreps_in1 must be"),
    "tp_negative_in2": (lambda: RelaxedTensorProduct("1x0e", "-2x1o", "1x0e", []), ValueError,
                        "RelaxedTensorProduct: irreps_in2 must have non-negative"),
    "tp_malformed_out": (lambda: RelaxedTensorProduct("1x0e", "1x0e", "1x1z", []), ValueError,
                         "RelaxedTensorProduct: irreps_out must be"),
    "weights_negative": (lambda: RelaxedWeights("-1x1o"), ValueError, "irreps must have non-negative multiplicities"),
    "weights_malformed": (lambda: RelaxedWeights("1x1o+foo"), ValueError, "irreps must be an irreps string"),
    "weights_negative_in_sum": (lambda: RelaxedWeights("1x0e + -3x2e"), ValueError,
                                "irreps must have non-negative multiplicities"),
    "weights_empty": (lambda: RelaxedWeights(""), ValueError, "irreps must have a positive dimension"),
    "convolution_malformed_in": (_convolution(irreps_in="4x0w"), ValueError, "RelaxedConvolution: irreps_in must"),
    "convolution_negative_attr": (_convolution(irreps_node_attr="-2x0e"), ValueError,
                                  "RelaxedConvolution: irreps_node_attr must have non-negative"),
    "convolution_malformed_edge": (_convolution(irreps_edge_attr="0e+1"), ValueError,
                                   "RelaxedConvolution: irreps_edge_attr must"),
    "convolution_negative_relaxed": (_convolution(irreps_relaxed="-1x1o"), ValueError,
                                     "irreps_relaxed must have non-negative"),
    "convolution_num_neighbors_string": (_convolution(num_neighbors="4.0"), TypeError,
                                         "RelaxedConvolution: num_neighbors must be a number, got str"),
    "convolution_num_neighbors_nan": (_convolution(num_neighbors=float("nan")), ValueError,
                                      "num_neighbors must be a positive finite number"),
    "config_malformed_hidden": (lambda: RelaxedNetworkConfig(species=[1], irreps_hidden="8x0q"), ValueError,
                                "RelaxedNetworkConfig: irreps_hidden must be"),
    "config_negative_relaxed": (lambda: RelaxedNetworkConfig(species=[1], irreps_relaxed="-1x1o"), ValueError,
                                "RelaxedNetworkConfig: irreps_relaxed must have non-negative"),
    "config_cutoff_string": (lambda: RelaxedNetworkConfig(species=[1], cutoff="4.0"), ValueError,
                             "RelaxedNetworkConfig: cutoff must be"),
}


@pytest.mark.parametrize("case", IRREPS.values(), ids=IRREPS.keys())
def test_irreps_and_numbers_are_checked_before_e3nn_sees_them(case):
    run(case)


# --------------------------------------------------------------------------- D_from_matrix
def _almost_orthogonal(dtype, size):
    R = torch.eye(3, dtype=torch.float64)
    R[0, 1] = size
    return R.to(dtype)


MATRICES = {
    "twice_identity": (lambda: D_from_matrix("1o+2e", 2 * torch.eye(3)), ValueError,
                       r"D_from_matrix: R must be orthogonal .* = 3 exceeds the tolerance 1\.0e-04"),
    "gaussian": (lambda: D_from_matrix("2e", torch.randn(3, 3, generator=torch.Generator().manual_seed(1))),
                 ValueError, "R must be orthogonal"),
    "shear_float64": (lambda: D_from_matrix("1o", _almost_orthogonal(F64, 1e-5)), ValueError,
                      r"exceeds the tolerance 1\.0e-06"),
    "shear_float32": (lambda: D_from_matrix("1o", _almost_orthogonal(F32, 1e-3)), ValueError,
                      r"exceeds the tolerance 1\.0e-04"),
    "one_bad_in_a_batch": (lambda: D_from_matrix("1o", torch.stack([torch.eye(3), 1.5 * torch.eye(3)])), ValueError,
                           "R must be orthogonal"),
    "zero": (lambda: D_from_matrix("1o", torch.zeros(3, 3)), ValueError, "R must be orthogonal"),
    "nan": (lambda: D_from_matrix("1o", torch.full((3, 3), float("nan"))), ValueError,
            r"= inf exceeds .*finite entries required"),
    "inf": (lambda: D_from_matrix("1o", torch.diag(torch.tensor([1.0, 1.0, float("inf")]))), ValueError,
            "R must be orthogonal"),
    "wrong_shape": (lambda: D_from_matrix("1o", torch.eye(2)), ValueError, r"R must have shape \[\.\.\., 3, 3\]"),
    "vector": (lambda: D_from_matrix("1o", torch.ones(3)), ValueError, r"R must have shape"),
    "tol_string": (lambda: D_from_matrix("1o", torch.eye(3), tol="1e-3"), TypeError, "tol must be a number"),
    "tol_negative": (lambda: D_from_matrix("1o", torch.eye(3), tol=-1.0), ValueError, "tol must be a positive"),
    "malformed_irreps": (lambda: D_from_matrix("1x1k", torch.eye(3)), ValueError, "irreps must be an irreps string"),
}


@pytest.mark.parametrize("case", MATRICES.values(), ids=MATRICES.keys())
def test_D_from_matrix_refuses_non_orthogonal_matrices(case):
    run(case)


def test_D_from_matrix_accepts_rounded_rotations_within_the_stated_tolerance():
    R = o3.rand_matrix(5, dtype=F32)
    composed = R[0] @ R[1] @ R[2] @ R[3] @ R[4]  # float32 rounding accumulates
    assert D_from_matrix("1o+2e", composed).shape == (8, 8)
    assert torch.allclose(D_from_matrix("1o", R.double()), R.double(), atol=1e-6)  # float32 cast to float64
    assert D_from_matrix("1o", _almost_orthogonal(F64, 1e-5), tol=1e-4).shape == (3, 3)


# --------------------------------------------------------------------------- evaluation inputs
def _atoms_with(change):
    atoms = molecule(0)
    change(atoms)
    return atoms


def _calculate(model, atoms):
    atoms.calc = RelaxedCalculator(model)
    return atoms.get_forces()


def _set_nan(atoms):
    atoms.positions[2, 1] = np.nan


EVALUATION = {
    "calculator_nan_positions": (lambda m: _calculate(m, _atoms_with(_set_nan)), ValueError,
                                 r"positions contains NaN or inf: 1 non-finite value\(s\) \(first at index \[2, 1\]"),
    "calculator_degenerate_cell": (lambda m: _calculate(m, Atoms("HO", positions=[[0, 0, 0], [0.5, 0, 0]],
                                                                 cell=1e-4 * np.eye(3), pbc=True)),
                                   ValueError, "volume 1.000e-12"),
    "calculator_unknown_species": (lambda m: _calculate(m, Atoms("Fe")), ValueError,
                                   r"atomic numbers \[26\] that the model was not trained on"),
    "calculator_path_type": (lambda m: RelaxedCalculator(3), TypeError, "path_or_model must be a path"),
    "graph_edge_out_of_range": (lambda m: m(dataclasses.replace(_graph(), edge_src=_graph().edge_src + 100)),
                                ValueError, r"edge_src must index the 7 atoms"),
    "graph_cutoff_string": (lambda m: m(dataclasses.replace(_graph(), cutoff="3.5")), TypeError,
                            "cutoff must be a number"),
    "load_path_type": (lambda m: load(3.5), TypeError, "load: path must be a str or os.PathLike"),
}


def _graph():
    return from_ase(molecule(0), CUTOFF, dtype=F64)


@pytest.mark.parametrize("case", EVALUATION.values(), ids=EVALUATION.keys())
def test_evaluation_inputs_are_refused_before_the_model_runs(case, model):
    run(case, model)


# --------------------------------------------------------------------------- far from the origin
SHIFT_DIRECTION = np.array([1.0, -0.7, 0.3])


def _forces_far_away(model, atoms, shift):
    """Forces of ``atoms`` translated by ``shift`` Å (through the ASE calculator)."""
    moved = atoms.copy()
    moved.positions += shift * SHIFT_DIRECTION
    moved.calc = RelaxedCalculator(model)
    return torch.from_numpy(moved.get_forces())


@pytest.mark.parametrize("structure", [molecule, crystal], ids=["molecule", "crystal"])
def test_float32_forces_do_not_change_under_large_translations(structure):
    model = make(F32, relaxed=True)
    with broken_theta(model, seed=3):  # a symmetry-breaking model is still translation invariant
        atoms = structure(0)
        reference = _forces_far_away(model, atoms, 0.0)
        assert reference.abs().max() > 1e-3
        for shift in (1e4, 1e6):
            assert rel_err(_forces_far_away(model, atoms, shift), reference) <= 1e-5, shift


def test_the_origin_is_subtracted_before_the_cast():
    """The control: casting to float32 first loses the digits for good (the error the origin avoids)."""
    model = make(F32, relaxed=True)
    atoms = molecule(0)
    with broken_theta(model, seed=3):
        reference = model.eval()(from_ase(atoms, CUTOFF, dtype=F32), compute_forces=True)["forces"]
        far = atoms.get_positions() + 1e6 * SHIFT_DIRECTION
        graph = from_arrays(far, atoms.numbers, CUTOFF, dtype=F32)
        assert graph.origin.dtype == F64 and np.allclose(graph.origin.numpy()[0], far.mean(axis=0), rtol=0, atol=1e-9)
        assert torch.allclose(graph.pos.double() + graph.origin, torch.from_numpy(far), rtol=0, atol=1e-6)
        assert rel_err(model(graph, compute_forces=True)["forces"], reference) <= 1e-5
        cast_first = torch.tensor(far, dtype=F32)  # what building from float32 positions would do
        lossy = from_arrays(cast_first, atoms.numbers, CUTOFF, dtype=F32)
        assert rel_err(model(lossy, compute_forces=True)["forces"], reference) > 1e-3
        model.train()
