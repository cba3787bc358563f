"""RelaxedCalculator: ASE energy/forces/stress, finite differences, NVE energy conservation, optimisers."""
import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.cluster import Icosahedron
from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

import relaxed_e3nn
from relaxed_e3nn.calculators import RelaxedCalculator
from relaxed_e3nn.data import from_ase
from test_models import CUTOFF, broken_theta, crystal, make, node_model, random_orthogonal

F64 = torch.float64


def cluster(seed=1):
    atoms = Icosahedron("Cu", 2)  # 13 atoms
    atoms.rattle(0.05, seed=seed)
    return atoms


def test_calculator_matches_the_model_and_finite_differences():
    model = make(F64, relaxed=True)
    atoms = crystal(7)
    atoms.set_cell(atoms.cell[:] @ np.array([[1.0, 0.04, 0.0], [0.0, 0.98, 0.07], [0.03, 0.0, 1.02]]),
                   scale_atoms=True)
    with broken_theta(model, seed=4):  # a symmetry-breaking model: stress and forces still exact
        atoms.calc = RelaxedCalculator(model)
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
        stress = atoms.get_stress()
        reference = model.eval()(from_ase(atoms, CUTOFF, dtype=F64), compute_forces=True, compute_stress=True)
        numerical_forces = calculate_numerical_forces(atoms, eps=1e-5)
        numerical_stress = calculate_numerical_stress(atoms, eps=1e-6)
    assert energy == pytest.approx(float(reference["energy"].detach()), abs=1e-12)
    np.testing.assert_allclose(forces, reference["forces"].detach().numpy(), atol=1e-12)
    assert stress.shape == (6,)  # Voigt: xx yy zz yz xz xy
    full = reference["stress"][0].detach().numpy()
    np.testing.assert_allclose(stress, [full[0, 0], full[1, 1], full[2, 2], full[1, 2], full[0, 2], full[0, 1]],
                               atol=1e-12)
    assert np.abs(forces).max() > 1e-2 and np.abs(stress).max() > 1e-4
    np.testing.assert_allclose(forces, numerical_forces, atol=1e-7 * np.abs(forces).max())
    np.testing.assert_allclose(stress, numerical_stress, atol=1e-7 * np.abs(stress).max())


def run_nve(model, steps, seed=0):
    atoms = cluster()
    atoms.calc = RelaxedCalculator(model)
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(seed))
    Stationary(atoms)
    ZeroRotation(atoms)
    record = {"total": [], "kinetic": [], "momentum": [], "angular": []}

    def observe():
        record["total"].append(atoms.get_total_energy())
        record["kinetic"].append(atoms.get_kinetic_energy())
        record["momentum"].append(atoms.get_momenta().sum(axis=0))
        record["angular"].append(atoms.get_angular_momentum())

    dynamics = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    dynamics.attach(observe, interval=1)
    dynamics.run(steps)
    return len(atoms), {k: np.array(v) for k, v in record.items()}


def test_nve_conserves_energy_with_a_symmetry_breaking_model():
    """100 velocity-Verlet steps (1 fs, float64, 13-atom Cu cluster, smooth random model): the total
    energy drifts by less than 1e-4 eV/atom although the kinetic energy changes by far more;
    linear momentum is conserved, angular momentum is not (the broken theta exerts a torque)."""
    model = make(F64, relaxed=True).eval()
    with broken_theta(model, seed=5, size=0.5):
        n, record = run_nve(model, 100)
    drift = (record["total"].max() - record["total"].min()) / n
    swing = (record["kinetic"].max() - record["kinetic"].min()) / n
    assert drift < 1e-4, drift
    assert swing > 100 * drift and swing > 1e-3
    assert np.abs(record["momentum"]).max() < 1e-9
    assert np.abs(record["angular"][-1] - record["angular"][0]).max() > 1e-2


def test_nve_strict_model_conserves_angular_momentum():
    """Control for the test above: the strict twin exerts no torque."""
    n, record = run_nve(make(F64).eval(), 30)
    assert (record["total"].max() - record["total"].min()) / n < 1e-4
    assert np.abs(record["angular"]).max() < 1e-9


def test_works_with_an_ase_optimizer():
    atoms = cluster(seed=2)
    atoms.calc = RelaxedCalculator(make(F64))
    e0, f0 = atoms.get_potential_energy(), np.abs(atoms.get_forces()).max()
    BFGS(atoms, logfile=None).run(fmax=1e-3, steps=30)
    assert atoms.get_potential_energy() < e0
    assert np.abs(atoms.get_forces()).max() < 0.5 * f0


def test_uses_the_stored_frame():
    """A model whose frame is R^T sees R-rotated atoms exactly as the unrotated model sees the originals."""
    model = make(F64, relaxed=True)
    R = random_orthogonal(2, seed=11)[1].numpy()
    atoms = crystal(8)
    rotated = atoms.copy()
    rotated.set_cell(atoms.cell[:] @ R.T)
    rotated.positions = atoms.positions @ R.T
    with broken_theta(model, seed=6):
        atoms.calc = RelaxedCalculator(model)
        e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=False)
        rotated.calc = RelaxedCalculator(model)
        assert abs(rotated.get_potential_energy() - e) > 1e-5  # the broken model notices the rotation
        model.set_frame(R.T)
        try:
            rotated.calc = RelaxedCalculator(model)
            assert rotated.get_potential_energy() == pytest.approx(e, abs=1e-10)
            np.testing.assert_allclose(rotated.get_forces(), f @ R.T, atol=1e-10)
            np.testing.assert_allclose(rotated.get_stress(voigt=False), R @ s @ R.T, atol=1e-10)
        finally:
            model.set_frame(np.eye(3).tolist())


def test_from_file_with_dtype_and_errors(tmp_path):
    model = make(F64)
    relaxed_e3nn.save(model, tmp_path / "model.pt")
    atoms = crystal(9)
    atoms.calc = RelaxedCalculator(tmp_path / "model.pt")
    e64 = atoms.get_potential_energy()
    atoms.calc = RelaxedCalculator(str(tmp_path / "model.pt"), dtype=torch.float32)
    assert atoms.calc.dtype == torch.float32
    assert atoms.get_potential_energy() == pytest.approx(e64, rel=1e-5)

    atoms.calc = RelaxedCalculator(model)
    strangers = Atoms("CuNaCl", positions=[[0, 0, 0], [2.0, 0, 0], [0, 2.0, 0]])
    strangers.calc = RelaxedCalculator(model)
    with pytest.raises(ValueError, match=r"atomic numbers \[11, 17\] that the model was not trained on"):
        strangers.get_potential_energy()
    molecule = cluster()
    molecule.calc = RelaxedCalculator(model)
    assert molecule.get_forces().shape == (13, 3)
    with pytest.raises(PropertyNotImplementedError, match="stress"):
        molecule.get_stress()
    with pytest.raises(TypeError, match="path or a RelaxedNetwork"):
        RelaxedCalculator(42)
    with pytest.raises(FileNotFoundError):
        RelaxedCalculator(tmp_path / "absent.pt")
    with pytest.raises(ValueError, match="output='energy'"):
        RelaxedCalculator(node_model(F64))
