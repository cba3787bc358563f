"""Small, seeded, offline datasets and configs for tests and examples of the trainer."""
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import ase.io
import numpy as np
from ase import Atoms
from ase import units
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.langevin import Langevin

__all__ = ["emt_copper_frames", "write_emt_copper", "emt_slab_md", "tiny_train_config"]


def emt_copper_frames(n: int = 12, seed: int = 0, *, rattle: float = 0.1, periodic: bool = True,
                      symbols: str = "Cu") -> List[Any]:
    """Rattled copper structures labelled with ase's EMT energies, forces (and stresses).

    ``periodic=True``: cubic 4-atom fcc cells (lattice constant varied by ±2 %);
    ``periodic=False``: 6-atom octahedral clusters. ``symbols="CuAu"`` swaps random atoms to
    gold (EMT knows Cu, Ag, Au, Ni, Pd, Pt, Al).
    """
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        if periodic:
            atoms = bulk("Cu", "fcc", a=3.6 * (1 + rng.uniform(-0.02, 0.02)), cubic=True)
        else:
            d = 1.8
            atoms = Atoms("Cu6", positions=[[d, 0, 0], [-d, 0, 0], [0, d, 0], [0, -d, 0], [0, 0, d], [0, 0, -d]])
        if symbols == "CuAu":
            numbers = atoms.numbers.copy()
            numbers[rng.random(len(atoms)) < 0.4] = 79
            atoms.numbers = numbers
        atoms.positions = atoms.positions + rng.normal(scale=rattle, size=atoms.positions.shape)
        atoms.calc = EMT()
        atoms.get_potential_energy()
        atoms.get_forces()
        if periodic:
            atoms.get_stress()
        frames.append(atoms)
    return frames


def write_emt_copper(path: Union[str, Path], n: int = 12, seed: int = 0, **kwargs) -> Path:
    """Write :func:`emt_copper_frames` to an extxyz file and return its path."""
    path = Path(path)
    ase.io.write(str(path), emt_copper_frames(n, seed, **kwargs), format="extxyz")
    return path


def emt_slab_md(num_frames: int = 60, seed: int = 0, *, size=(3, 3, 3), temperature: float = 500.0,
                timestep: float = 5.0, interval: int = 2, vacuum: float = 6.0) -> List[Any]:
    """Langevin MD of a Cu(111) slab with ase's EMT: frames of one trajectory, in one orientation.

    ``size`` (3, 3, 3) gives 27 atoms, periodic in x and y; ``num_frames`` frames every
    ``interval`` steps of ``timestep`` fs (after ``5 * interval`` equilibration steps), each with
    its EMT energy, forces and stress (a single-point calculator) and ``info["trajectory"] = 0``.
    EMT is rotation invariant: the data's only orientation dependence is the slab's own.
    """
    atoms = fcc111("Cu", size=size, vacuum=vacuum, periodic=True)
    atoms.pbc = (True, True, False)
    atoms.info.pop("adsorbate_info", None)  # not writable to extxyz
    atoms.calc = EMT()
    rng = np.random.default_rng(seed)
    kT = units.kB * temperature
    atoms.set_momenta(rng.normal(size=(len(atoms), 3)) * np.sqrt(atoms.get_masses() * kT)[:, None])
    dynamics = Langevin(atoms, timestep * units.fs, temperature_K=temperature, friction=0.02, rng=rng, fixcm=False)
    dynamics.run(5 * interval)
    frames = []
    for _ in range(num_frames):
        dynamics.run(interval)
        frame = atoms.copy()
        frame.calc = SinglePointCalculator(frame, energy=atoms.get_potential_energy(), forces=atoms.get_forces())
        frame.info["trajectory"] = 0
        frames.append(frame)
    return frames


def tiny_train_config(train: Any, output_dir: Union[str, Path], *, epochs: int = 3,
                      extra_model: Optional[Dict[str, Any]] = None, **top: Any) -> Dict[str, Any]:
    """A config for a one-layer, few-channel model that trains in about a second per epoch.

    Validated symmetry breaking is off (``symmetry: {validate: false}``): these configs test the
    training loop itself, on every structure of ``train``; pass ``symmetry={"validate": True}`` to
    turn it on.
    """
    model = {"cutoff": 4.0, "num_layers": 1, "irreps_hidden": "8x0e+4x1o+4x1e", "lmax": 1,
             "irreps_relaxed": 1, "num_radial_basis": 8, "radial_neurons": 16, "num_neighbors": 12.0}
    model.update(extra_model or {})
    config = {"output_dir": str(output_dir), "epochs": epochs, "batch_size": 4, "dtype": "float64",
              "progress": False, "data": {"train": train, "val_fraction": 0.2},
              "model": model, "optim": {"lr": 0.02}, "symmetry": {"validate": False}}
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    return config
