"""A trained relaxed NequIP model (``model.kind: NequIP``) in the calculator, ``evaluate`` and ``predict``.

Skipped when NequIP is not installed. Dynamics models and bare host models are refused with a
clear error.
"""
import ase.io
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore:data. the validation set holds")

import relaxed_e3nn
from relaxed_e3nn.calculators import RelaxedCalculator
from relaxed_e3nn.cli import main
from relaxed_e3nn.discrete import DEGNN
from relaxed_e3nn.models import GRAPH_MODELS, HostPotential, load, load_graph_model
from relaxed_e3nn.train._testing import emt_copper_frames, write_emt_copper

from test_hosts_train import graphs_of, nequip_section, run


def rel(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(np.abs(np.asarray(b)).max(), 1e-300))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A NequIP HostPotential file trained for two epochs, and labelled copper frames to run it on."""
    pytest.importorskip("nequip")
    root = tmp_path_factory.mktemp("host_calculator")
    _, result = run(root, nequip_section())
    data = write_emt_copper(root / "test.xyz", 3, seed=5)
    return {"root": root, "model": result.model_path, "data": data}


def test_calculator_equals_the_models_own_forward(trained):
    model = load(trained["model"])
    assert isinstance(model, HostPotential) and isinstance(model, GRAPH_MODELS)
    for atoms in emt_copper_frames(2, seed=7):
        expected = model(graphs_of([atoms]), compute_forces=True, compute_stress=True)
        for calc in (RelaxedCalculator(trained["model"]), RelaxedCalculator(model)):
            atoms.calc = calc
            energy = atoms.get_potential_energy()
            assert rel(energy, float(expected["energy"][0].detach())) <= 1e-10
            assert rel(atoms.get_forces(), expected["forces"].detach().numpy()) <= 1e-10
            assert atoms.get_stress().shape == (6,)


def test_calculator_float32_copy_of_a_host_potential(trained):
    model = load(trained["model"])
    atoms = emt_copper_frames(1, seed=8)[0]
    atoms.calc = RelaxedCalculator(model, dtype=torch.float32)
    assert atoms.calc.dtype == torch.float32 and next(model.parameters()).dtype == torch.float64
    expected = float(model(graphs_of([atoms]))["energy"][0].detach())
    assert rel(atoms.get_potential_energy(), expected) <= 1e-4


def test_cli_evaluate_and_predict_take_a_host_potential(trained, capsys):
    model = load(trained["model"])
    assert main(["evaluate", str(trained["model"]), str(trained["data"])]) == 0
    assert "energy_mae" in capsys.readouterr().out
    out = trained["root"] / "predicted.xyz"
    assert main(["predict", str(trained["model"]), str(trained["data"]), "--out", str(out)]) == 0
    frames = ase.io.read(out, ":")
    reference = ase.io.read(trained["data"], ":")
    assert len(frames) == len(reference) == 3
    for predicted, atoms in zip(frames, reference):  # extxyz holds the forces to 8 decimals
        expected = model(graphs_of([atoms]), compute_forces=True)
        assert rel(predicted.get_potential_energy(), float(expected["energy"][0].detach())) <= 1e-10
        assert np.abs(predicted.get_forces() - expected["forces"].detach().numpy()).max() <= 1e-8


def test_a_bare_host_model_is_refused(trained):
    bare = trained["root"] / "bare.pt"
    relaxed_e3nn.save(load(trained["model"]).host, bare)
    with pytest.raises(ValueError, match="bare relaxed host model.*HostPotential"):
        RelaxedCalculator(bare)


def test_a_dynamics_model_is_refused(tmp_path, capsys):
    path = tmp_path / "degnn.pt"
    relaxed_e3nn.save(DEGNN("C2", 2, hidden=4, num_layers=1), path)
    with pytest.raises(ValueError, match=r"RelaxedCalculator: .*degnn\.pt holds a DEGNN, a dynamics model"):
        RelaxedCalculator(path)
    with pytest.raises(ValueError, match=r"load_graph_model: .*a dynamics model .*; use it through "
                                         r"relaxed_e3nn.discrete"):
        load_graph_model(path)
    with pytest.raises(TypeError, match="must be a path or a RelaxedNetwork or HostPotential"):
        RelaxedCalculator(load(path))
    data = write_emt_copper(tmp_path / "cu.xyz", 1, seed=0)
    out = str(tmp_path / "p.xyz")
    for argv in (["evaluate", str(path), str(data)], ["predict", str(path), str(data), "--out", out]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert f"relaxed-e3nn {argv[0]}: error: MODEL: " in err and "a dynamics model" in err
    assert not (tmp_path / "p.xyz").exists()
