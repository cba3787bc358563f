"""The box n-body generator as ``ase.Atoms`` (its entry in ``GENERATORS``)."""
from ase import Atoms

from relaxed_e3nn._settings import renamed_arguments
from relaxed_e3nn.data.generators._box_nbody import box_nbody

__all__ = ["box_nbody_atoms"]


@renamed_arguments(n="num_samples")
def box_nbody_atoms(num_samples: int = 200, seed: int = 0, **options) -> list:
    """``box_nbody`` as a list of ``ase.Atoms`` (the ``GENERATORS`` calling convention).

    Each system becomes one non-periodic ``Atoms`` of hydrogen placeholders with the input-frame
    positions and velocities (``get_velocities()``), ``initial_charges`` the charges (or masses
    for gravity, also set as ``masses``), ``arrays["target_positions"]`` the target frame and
    ``info`` holding ``parent_group`` = ``residual_group`` (the box's group), ``group_frame``,
    ``half_widths``, ``center``, ``interaction``, ``dt``, ``steps_per_frame``, ``input_frame`` and
    ``target_frame``. Options are those of :func:`box_nbody`.
    """
    data = box_nbody(num_samples=num_samples, seed=seed, **options)
    structures = []
    for k in range(len(data)):
        atoms = Atoms(
            symbols=["H"] * data.positions.shape[1], positions=data.positions[k], pbc=False
        )
        atoms.set_velocities(data.velocities[k])
        atoms.set_initial_charges(data.charges[k])
        if data.interaction == "gravity":
            atoms.set_masses(data.charges[k])
        atoms.arrays["target_positions"] = data.targets[k].copy()
        atoms.info.update({
            "parent_group": data.group_name,
            "residual_group": data.group_name,
            "group_frame": data.group_frame.copy(),
            "half_widths": data.half_widths.copy(),
            "center": data.center.copy(),
            "interaction": data.interaction,
            "planar": data.planar,
            "dt": data.dt,
            "steps_per_frame": data.steps_per_frame,
            "input_frame": data.input_frame,
            "target_frame": data.target_frame,
        })
        structures.append(atoms)
    return structures
