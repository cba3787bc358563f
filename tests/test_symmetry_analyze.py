"""``relaxed-e3nn analyze``: --atol, the stored parent and decision, and warnings about frames and parents."""
import json

import numpy as np
import pytest
import torch
from ase.build import molecule
import ase.io

import relaxed_e3nn
from relaxed_e3nn.cli import main
from relaxed_e3nn.groups import point_group
from relaxed_e3nn.models import RelaxedNetwork, RelaxedNetworkConfig
from relaxed_e3nn.nn import relaxed_parameters
from relaxed_e3nn.symmetry import project_thetas

pytestmark = pytest.mark.slow


def _rotation(seed=0):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q * np.sign(np.linalg.det(q))


def _model(along=None):
    """A tiny CH4 network; θ is scalars only, plus a 1o part along ``along`` when given."""
    config = RelaxedNetworkConfig(species=[1, 6], cutoff=3.0, num_layers=1, irreps_hidden="4x0e+2x1o+2x1e",
                                  lmax=2, num_radial_basis=4, radial_neurons=8, irreps_relaxed=2)
    model = RelaxedNetwork(config, dtype=torch.float64)
    with torch.no_grad():
        for _, _, theta in relaxed_parameters(model):
            theta.normal_()
    project_thetas(model, "O3")
    if along is not None:
        with torch.no_grad():
            for _, irreps, theta in relaxed_parameters(model):
                sl = irreps.slices()[[str(ir) for _, ir in irreps].index("1o")]
                theta[sl] = torch.as_tensor(along, dtype=theta.dtype)
    return model


def _record(parent, chosen):
    return {"chosen": {"group": chosen.schoenflies, "label": chosen.schoenflies, "frame": chosen.frame.tolist()},
            "validated": True, "parent": parent.schoenflies, "parent_frame": parent.frame.tolist(),
            "summary": f"validated: {chosen.schoenflies}"}


def test_stored_parent_is_used_and_a_disagreeing_within_warns(tmp_path, capsys):
    R = _rotation(1)
    methane = molecule("CH4")
    methane.positions = methane.positions @ R.T  # the data frame is rotated
    td = point_group("Td").rotated(R)
    axis = R @ np.ones(3) / np.sqrt(3)  # a C3 axis of the rotated molecule
    model = _model(0.3 * axis)
    path = tmp_path / "m.pt"
    relaxed_e3nn.save(model, path, metadata={"symmetry": _record(td, point_group("C3v").rotated(R))})
    inputs = tmp_path / "inputs.xyz"
    ase.io.write(inputs, methane)
    assert main(["analyze", str(path), "--json", str(tmp_path / "a.json"), "--inputs", str(inputs)]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err
    assert "input Td; learned residual group C3v" in captured.out and "validated: C3v" in captured.out
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["residual_group"]["schoenflies"] == "C3v"
    assert data["stored_decision"]["chosen"]["group"] == "C3v"
    assert data["equivariance_error"]["max_rel"] < 1e-10  # exact under the named group, held-out input
    # the group name means the standard frame, which the rotated data do not have
    assert main(["analyze", str(path), "--within", "Td", "--inputs", str(inputs)]) == 0
    err = capsys.readouterr().err
    assert "disagrees with the parent stored in the model file" in err
    assert "not a symmetry of the --inputs structures" in err and "--within FILE" in err
    # the ideal structure in the data frame agrees with the stored parent: no warning
    ideal = tmp_path / "ideal.xyz"
    ase.io.write(ideal, methane)
    assert main(["analyze", str(path), "--within", str(ideal)]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err and "learned residual group C3v" in captured.out


def test_within_a_rattled_structure_finds_the_parent_and_plots_no_round_off(tmp_path, capsys):
    rattled = molecule("CH4")
    rattled.rattle(0.01, seed=3)
    path = tmp_path / "m.pt"
    relaxed_e3nn.save(_model(), path)
    structure = tmp_path / "rattled.xyz"
    ase.io.write(structure, rattled)
    assert main(["analyze", str(path), "--within", str(structure), "--atol", "1e-9",
                 "--plot", str(tmp_path / "s.png"), "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "parent of the structure (symprec scan): Td" in out
    assert "input Td; learned residual group Td" in out and "no breaking beyond the input symmetry" in out
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["atol"] == 1e-9
    assert all(row["below_floor"] and not row["significant"] for row in data["significance"])
    # a structure without symmetry is said to have none
    blob = rattled.copy()
    blob.positions = np.random.default_rng(0).uniform(-1.5, 1.5, size=(5, 3))
    ase.io.write(structure, blob)
    assert main(["analyze", str(path), "--within", str(structure)]) == 0
    assert "has no symmetry" in capsys.readouterr().err
    assert main(["analyze", str(path), "--atol", "-1"]) == 1
    assert "--atol" in capsys.readouterr().err
