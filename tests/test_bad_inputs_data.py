"""Bad input to the data layer: every case a clear exception that names the argument, never a hang.

One test per case family, parametrised over cases; each case states the exception type it expects
and a pattern that names the argument (and, where it matters, the quoted quantity: the pair
estimate, the cell volume, the path and frame of a file).
"""
import dataclasses
import time

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write as ase_write

from relaxed_e3nn.data import AtomicGraph, collate, from_arrays, from_ase, neighbor_list, read

CU_POSITIONS = np.array([[0.0, 0.0, 0.0], [1.8, 1.8, 0.0], [1.8, 0.0, 1.8], [0.0, 1.8, 1.8]])
CU_CELL = 3.6 * np.eye(3)
CU_NUMBERS = [29] * 4
WATER = np.array([[0.0, 0.0, 0.0], [0.757, 0.586, 0.0], [-0.757, 0.586, 0.0]])


def cu(**keywords):
    """The 4-atom fcc Cu cell through ``from_arrays`` (``keywords`` override)."""
    arguments = dict(positions=CU_POSITIONS, atomic_numbers=CU_NUMBERS, cutoff=3.0, cell=CU_CELL, pbc=True)
    arguments.update(keywords)
    return from_arrays(arguments.pop("positions"), arguments.pop("atomic_numbers"), arguments.pop("cutoff"),
                       **arguments)


def water(**keywords):
    arguments = dict(positions=WATER, atomic_numbers=[8, 1, 1], cutoff=2.0)
    arguments.update(keywords)
    return from_arrays(arguments.pop("positions"), arguments.pop("atomic_numbers"), arguments.pop("cutoff"),
                       **arguments)


def check(case):
    """Run ``case = (call, exception, pattern)`` and require that exception with that pattern."""
    call, exception, pattern = case
    with pytest.raises(exception, match=pattern):
        call()


# --------------------------------------------------------------------------- neighbor-list guard
GUARD = {
    "cu_cutoff_1e4_pbc": (lambda: cu(cutoff=1e4), ValueError, r"about 1\.44e\+12 pairs expected.*max_pairs"),
    "cu_cutoff_1e3_pbc": (lambda: cu(cutoff=1e3), ValueError, r"pairs expected.*max_pairs=1e\+08"),
    "neighbor_list_direct": (lambda: neighbor_list(CU_POSITIONS, 1e4, cell=CU_CELL, pbc=True), ValueError,
                             r"neighbor_list: about .* pairs expected"),
    "slab_long_cutoff": (lambda: cu(cutoff=1e4, pbc=[True, True, False]), ValueError,
                         r"π·rc²·N²/A, .*A=12\.96 Å²\).*max_pairs"),
    "wire_long_cutoff": (lambda: cu(cutoff=1e8, pbc=[True, False, False]), ValueError,
                         r"2·rc·N²/L, rc=1e\+08 Å, N=4, L=3\.6 Å\).*max_pairs"),
    "from_ase_bulk": (lambda: from_ase(bulk("Cu", "fcc", a=3.6), 1e4), ValueError, "max_pairs"),
    "small_max_pairs": (lambda: cu(max_pairs=10), ValueError, r"more than max_pairs=10"),
    "molecule_small_max_pairs": (lambda: water(max_pairs=2), ValueError, r"max_pairs=2"),
    "max_pairs_string": (lambda: cu(max_pairs="1e8"), TypeError, "max_pairs must be a number"),
    "max_pairs_negative": (lambda: cu(max_pairs=-1), ValueError, "max_pairs must be a positive"),
    "max_pairs_nan": (lambda: cu(max_pairs=float("nan")), ValueError, "max_pairs must be a positive"),
}


@pytest.mark.parametrize("case", GUARD.values(), ids=GUARD.keys())
def test_neighbor_list_guard_refuses_too_many_pairs_at_once(case):
    start = time.perf_counter()
    check(case)
    assert time.perf_counter() - start < 1.0  # the estimate, not the enumeration


def test_neighbor_list_guard_is_an_estimate_that_lets_real_lists_through():
    assert cu(cutoff=8.0).num_edges > 0  # ~1.4e3 pairs, far below the default
    assert cu(cutoff=1e4, max_pairs=None, pbc=[False, False, False]).num_edges == 12  # a molecule: N(N-1)
    assert water(cutoff=100.0, max_pairs=6).num_edges == 6


# --------------------------------------------------------------------------- degenerate cells
def _cell(*rows):
    return np.array(rows, dtype=float)


CELLS = {
    "volume_1e-9": (lambda: cu(positions=CU_POSITIONS * 1e-3, cell=1e-3 * np.eye(3)), ValueError,
                    r"volume 1\.000e-09 Å³.*degenerate or near-singular"),
    "thin_1e-9": (lambda: cu(cell=_cell([3.6, 0, 0], [0, 3.6, 0], [0, 0, 1e-9])), ValueError,
                  r"zero volume or nearly so \(volume 1\.296e-08"),
    "coplanar": (lambda: cu(cell=_cell([3.6, 0, 0], [0, 3.6, 0], [3.6, 3.6, 0])), ValueError,
                 r"span zero volume.*cell"),
    "nearly_coplanar": (lambda: cu(cell=_cell([1e3, 0, 0], [0, 1e3, 0], [1e3, 1e3, 1e-3])), ValueError,
                        r"volume 1\.000e\+03 Å³, the lattice vectors are nearly linearly dependent"),
    "zero_vector": (lambda: cu(cell=_cell([3.6, 0, 0], [0, 3.6, 0], [0, 0, 0])), ValueError, "zero volume"),
    "all_zero": (lambda: cu(cell=np.zeros((3, 3))), ValueError, "zero volume"),
    "slab_zero_area": (lambda: cu(cell=_cell([3.6, 0, 0], [7.2, 0, 0], [0, 0, 1]), pbc=[True, True, False]),
                       ValueError, "zero area"),
    "wire_tiny_length": (lambda: cu(cell=_cell([1e-6, 0, 0], [0, 1, 0], [0, 0, 1]), pbc=[True, False, False]),
                         ValueError, r"zero length or nearly so \(length 1\.000e-06 Å"),
    "pbc_without_cell": (lambda: water(pbc=True), ValueError, "needs a cell"),
    "cell_nan": (lambda: cu(cell=np.full((3, 3), np.nan)), ValueError, "cell contains NaN"),
    "cell_inf": (lambda: cu(cell=np.diag([3.6, 3.6, np.inf])), ValueError, "cell contains NaN or inf"),
    "cell_shape": (lambda: cu(cell=np.eye(2)), ValueError, r"cell must have shape \[3, 3\]"),
    "cell_strings": (lambda: cu(cell=[["3.6", "0", "0"]] * 3), TypeError, "cell must be an array of numbers"),
    "ase_degenerate": (lambda: from_ase(Atoms("Cu", cell=1e-4 * np.eye(3), pbc=True), 3.0), ValueError,
                       r"volume 1\.000e-12"),
}


@pytest.mark.parametrize("case", CELLS.values(), ids=CELLS.keys())
def test_degenerate_cells_are_refused_with_their_volume(case):
    check(case)


# --------------------------------------------------------------------------- dtypes
DTYPES = {
    "from_arrays_float16": (lambda: water(dtype=torch.float16), TypeError, "dtype must be torch.float32 or"),
    "from_arrays_bfloat16": (lambda: water(dtype=torch.bfloat16), TypeError, "dtype must be torch.float32 or"),
    "from_arrays_int64": (lambda: water(dtype=torch.int64), TypeError, "dtype must be torch.float32"),
    "from_arrays_string": (lambda: water(dtype="float32"), TypeError, "dtype must be torch.float32"),
    "from_arrays_complex": (lambda: water(dtype=torch.complex64), TypeError, "dtype must be torch.float32"),
    "from_ase_float16": (lambda: from_ase(molecule("H2O"), 2.0, dtype=torch.float16), TypeError, "dtype"),
    "from_ase_bfloat16": (lambda: from_ase(bulk("Cu"), 3.0, dtype=torch.bfloat16), TypeError, "dtype"),
}


@pytest.mark.parametrize("case", DTYPES.values(), ids=DTYPES.keys())
def test_only_float32_and_float64_are_accepted(case):
    check(case)


def test_half_precision_default_dtype_is_refused_too():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)
    try:
        with pytest.raises(TypeError, match="dtype must be torch.float32 or torch.float64, got torch.float16"):
            water()
    finally:
        torch.set_default_dtype(old)


# --------------------------------------------------------------------------- numbers given as strings etc.
NUMBERS = {
    "cutoff_string": (lambda: water(cutoff="4.0"), TypeError, "cutoff must be a number, got str '4.0'"),
    "cutoff_string_periodic": (lambda: cu(cutoff="3.0"), TypeError, "cutoff must be a number"),
    "cutoff_none": (lambda: water(cutoff=None), TypeError, "cutoff must be a number"),
    "cutoff_bool": (lambda: water(cutoff=True), TypeError, "cutoff must be a number"),
    "cutoff_list": (lambda: water(cutoff=[4.0]), TypeError, "cutoff must be a number"),
    "cutoff_zero": (lambda: water(cutoff=0.0), ValueError, "cutoff must be a positive finite number"),
    "cutoff_negative": (lambda: water(cutoff=-1), ValueError, "cutoff must be a positive finite number"),
    "cutoff_nan": (lambda: water(cutoff=float("nan")), ValueError, "cutoff must be a positive finite number"),
    "cutoff_inf": (lambda: water(cutoff=float("inf")), ValueError, "cutoff must be a positive finite number"),
    "from_ase_cutoff_string": (lambda: from_ase(molecule("H2O"), "4.0"), TypeError, "cutoff must be a number"),
    "neighbor_list_cutoff_string": (lambda: neighbor_list(WATER, "4.0"), TypeError, "cutoff must be a number"),
    "positions_strings": (lambda: water(positions=[["0", "0", "0"]] * 3), TypeError,
                          "positions must be an array of numbers"),
    "positions_complex": (lambda: water(positions=WATER + 1j), TypeError, "positions must be real"),
    "positions_ragged": (lambda: water(positions=[[0, 0, 0], [1, 1]], atomic_numbers=[1, 1]), TypeError,
                         "positions must be an array of numbers"),
    "atomic_numbers_strings": (lambda: water(atomic_numbers=["O", "H", "H"]), TypeError,
                               "atomic_numbers must be an array of numbers"),
    "atomic_numbers_fractional": (lambda: water(atomic_numbers=[8, 1.5, 1]), TypeError,
                                  "atomic_numbers must be integers"),
    "atomic_numbers_nan": (lambda: water(atomic_numbers=[8, np.nan, 1]), TypeError, "atomic_numbers must be integers"),
    "atomic_numbers_bool": (lambda: water(atomic_numbers=[True, True, True]), TypeError,
                            "atomic_numbers must be integers"),
    "atomic_numbers_negative": (lambda: water(atomic_numbers=[8, -1, 1]), ValueError,
                                "atomic_numbers must be non-negative"),
    "node_features_strings": (lambda: water(node_features={"charges": ["a", "b", "c"]}), TypeError,
                              r"node_features\['charges'\] must be an array of numbers"),
    "graph_targets_string": (lambda: water(graph_targets={"energy": "1.0"}), TypeError,
                             r"graph_targets\['energy'\] must be an array of numbers"),
    "node_features_not_a_dict": (lambda: water(node_features=[1, 2, 3]), TypeError, "node_features must be a dict"),
    "graph_targets_not_a_dict": (lambda: water(graph_targets=1.0), TypeError, "graph_targets must be a dict"),
    "pbc_string": (lambda: cu(pbc="yes"), TypeError, "pbc must be bools"),
    "pbc_twos": (lambda: cu(pbc=[2, 2, 2]), TypeError, "pbc must be bools"),
    "pbc_shape": (lambda: cu(pbc=[True, True]), ValueError, r"pbc must have shape \[3\]"),
}


@pytest.mark.parametrize("case", NUMBERS.values(), ids=NUMBERS.keys())
def test_numbers_and_arrays_of_the_wrong_type_are_refused(case):
    check(case)


# --------------------------------------------------------------------------- NaN and inf
def _ase_with(**results):
    atoms = molecule("H2O")
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def _info(key, value):
    atoms = molecule("H2O")
    atoms.info[key] = value
    return atoms


def _array(key, value):
    atoms = molecule("H2O")
    atoms.arrays[key] = value
    return atoms


NAN = np.nan
FINITE = {
    "positions_nan": (lambda: water(positions=WATER * NAN), ValueError, r"positions contains NaN or inf"),
    "positions_inf": (lambda: water(positions=np.vstack([WATER[:2], [np.inf, 0, 0]])), ValueError,
                      r"positions contains NaN or inf: 1 non-finite value\(s\) \(first at index \[2, 0\]\)"),
    "positions_tensor_nan": (lambda: water(positions=torch.full((3, 3), NAN)), ValueError, "positions contains NaN"),
    "node_features_nan": (lambda: water(node_features={"velocities": np.full((3, 3), NAN)}), ValueError,
                          r"node_features\['velocities'\] contains NaN or inf"),
    "node_features_inf": (lambda: water(node_features={"charges": [0.0, np.inf, 0.0]}), ValueError,
                          r"node_features\['charges'\] contains NaN or inf"),
    "node_targets_nan": (lambda: water(node_targets={"forces": np.full((3, 3), NAN)}), ValueError,
                         r"node_targets\['forces'\] contains NaN"),
    "graph_targets_nan": (lambda: water(graph_targets={"energy": NAN}), ValueError,
                          r"graph_targets\['energy'\] contains NaN or inf"),
    "graph_targets_inf_stress": (lambda: cu(graph_targets={"stress": np.diag([1.0, np.inf, 1.0])}), ValueError,
                                 r"graph_targets\['stress'\] contains NaN"),
    "structure_index_quoted": (lambda: water(graph_targets={"energy": NAN}, structure_index=7), ValueError,
                               r"graph_targets\['energy'\] \(structure 7\) contains NaN"),
    "ase_energy_key_nan": (lambda: from_ase(_info("REF_energy", NAN), 2.0, energy_key="REF_energy"), ValueError,
                           r"graph_targets\['energy'\] contains NaN"),
    "ase_energy_key_string": (lambda: from_ase(_info("REF_energy", "abc"), 2.0, energy_key="REF_energy"),
                              TypeError, "energy_key 'REF_energy' must be an array of numbers"),
    "ase_energy_key_vector": (lambda: from_ase(_info("REF_energy", [1.0, 2.0]), 2.0, energy_key="REF_energy"),
                              ValueError, "energy_key 'REF_energy' must be a single number"),
    "ase_forces_key_nan": (lambda: from_ase(_array("REF_forces", np.full((3, 3), NAN)), 2.0,
                                            forces_key="REF_forces"), ValueError, r"node_targets\['forces'\]"),
    "ase_calculator_energy_nan": (lambda: from_ase(_ase_with(energy=NAN), 2.0), ValueError,
                                  r"graph_targets\['energy'\] contains NaN"),
    "ase_calculator_forces_inf": (lambda: from_ase(_ase_with(energy=0.0, forces=np.full((3, 3), np.inf)), 2.0),
                                  ValueError, r"node_targets\['forces'\] contains NaN or inf"),
    "ase_velocities_nan": (lambda: from_ase(_array("velocities", np.full((3, 3), NAN)), 2.0,
                                            node_features="velocities"), ValueError,
                           r"node_features\['velocities'\] contains NaN"),
    "ase_info_target_nan": (lambda: from_ase(_info("dipole", [0.0, NAN, 0.0]), 2.0, graph_targets="dipole"),
                            ValueError, r"graph_targets\['dipole'\] contains NaN"),
    "ase_positions_nan": (lambda: from_ase(Atoms("H2", positions=[[0, 0, 0], [NAN, 0, 0]]), 2.0), ValueError,
                          "positions contains NaN or inf"),
}


@pytest.mark.parametrize("case", FINITE.values(), ids=FINITE.keys())
def test_nan_and_inf_are_refused_where_data_enter(case):
    check(case)


# --------------------------------------------------------------------------- AtomicGraph made by hand
def _long(values):
    return torch.tensor(values, dtype=torch.int64)


GRAPHS = {
    "edge_src_out_of_range": (lambda: dataclasses.replace(water(), edge_src=water().edge_src + 3), ValueError,
                              r"edge_src must index the 3 atoms \(0 \.\. 2\); entry 0 is"),
    "edge_dst_negative": (lambda: dataclasses.replace(water(), edge_dst=water().edge_dst - 3), ValueError,
                          r"edge_dst must index the 3 atoms"),
    "edge_src_float": (lambda: dataclasses.replace(water(), edge_src=water().edge_src.double()), TypeError,
                       "edge_src must be an integer tensor"),
    "edge_src_2d": (lambda: dataclasses.replace(water(), edge_src=water().edge_src[None]), ValueError,
                    r"edge_src must have shape \[\*\]"),
    "edge_dst_length": (lambda: dataclasses.replace(water(), edge_dst=water().edge_dst[:-1]), ValueError,
                        r"edge_dst must have shape \[6\]"),
    "edge_shift_shape": (lambda: dataclasses.replace(water(), edge_shift=torch.zeros(6, 2)), ValueError,
                         r"edge_shift must have shape \[6, 3\]"),
    "batch_out_of_range": (lambda: dataclasses.replace(water(), batch=_long([0, 0, 1])), ValueError,
                           r"batch must index the 1 graphs"),
    "batch_length": (lambda: dataclasses.replace(water(), batch=_long([0, 0])), ValueError,
                     r"batch must have shape \[3\]"),
    "pos_shape": (lambda: dataclasses.replace(water(), pos=torch.zeros(3, 2)), ValueError,
                  r"pos must have shape \[\*, 3\]"),
    "pos_integer": (lambda: dataclasses.replace(water(), pos=torch.zeros(3, 3, dtype=torch.int64)), TypeError,
                    "pos must be a floating-point tensor"),
    "pos_list": (lambda: dataclasses.replace(water(), pos=WATER.tolist()), TypeError, "pos must be a torch.Tensor"),
    "pos_nan": (lambda: dataclasses.replace(water(), pos=torch.full((3, 3), NAN, dtype=torch.float64)), ValueError,
                "AtomicGraph: pos contains NaN or inf"),
    "cell_nan": (lambda: dataclasses.replace(cu(), cell=torch.full((1, 3, 3), NAN, dtype=torch.float64)),
                 ValueError, "AtomicGraph: cell contains NaN"),
    "atomic_numbers_length": (lambda: dataclasses.replace(water(), atomic_numbers=_long([8, 1])), ValueError,
                              r"atomic_numbers must have shape \[3\]"),
    "node_features_rows": (lambda: dataclasses.replace(water(), node_features={"q": torch.zeros(2)}), ValueError,
                           r"node_features\['q'\] must have 3 rows"),
    "node_features_nan": (lambda: dataclasses.replace(water(), node_features={"q": torch.full((3,), NAN)}),
                          ValueError, r"node_features\['q'\] contains NaN"),
    "graph_targets_rows": (lambda: dataclasses.replace(water(), graph_targets={"energy": torch.zeros(2)}),
                           ValueError, r"graph_targets\['energy'\] must have 1 rows"),
    "graph_targets_inf": (lambda: dataclasses.replace(water(), graph_targets={"energy": torch.tensor([np.inf])}),
                          ValueError, r"graph_targets\['energy'\] contains NaN or inf"),
    "graph_targets_array": (lambda: dataclasses.replace(water(), graph_targets={"energy": np.zeros(1)}), TypeError,
                            r"graph_targets\['energy'\] must be a torch.Tensor"),
    "cutoff_string": (lambda: dataclasses.replace(water(), cutoff="2.0"), TypeError, "cutoff must be a number"),
    "origin_shape": (lambda: dataclasses.replace(water(), origin=torch.zeros(3, dtype=torch.float64)), ValueError,
                     r"origin must have shape \[1, 3\]"),
    "cell_shape": (lambda: dataclasses.replace(water(), cell=torch.zeros(3, 3)), ValueError,
                   r"cell must have shape \[\*, 3, 3\]"),
}


@pytest.mark.parametrize("case", GRAPHS.values(), ids=GRAPHS.keys())
def test_malformed_graphs_are_refused_naming_the_field(case):
    check(case)


def test_index_and_value_checks_need_no_device_read_off_the_cpu():
    """Shapes are checked everywhere; values only on the CPU, where graphs are built (no host sync)."""
    graph = water(dtype=torch.float64)
    meta = graph.to(device="meta")
    assert meta.pos.device.type == "meta" and meta.origin.device.type == "meta"
    with pytest.raises(ValueError, match=r"edge_dst must have shape \[6\]"):
        dataclasses.replace(meta, edge_dst=meta.edge_dst[:-1])
    assert graph.to(dtype=torch.float32).origin.dtype == torch.float64  # the origin keeps its digits


# --------------------------------------------------------------------------- collate
def _mutated(attribute, change):
    def call():
        graphs = [water(dtype=torch.float64), water(dtype=torch.float64)]
        change(getattr(graphs[1], attribute))
        return collate(graphs)
    return call


def _set_nan(tensor):
    tensor.view(-1)[0] = NAN


COLLATE = {
    "pos_nan_in_place": (_mutated("pos", _set_nan), ValueError, r"collate: graph 1: pos contains NaN or inf"),
    "edge_src_in_place": (_mutated("edge_src", lambda t: t.fill_(9)), ValueError,
                          r"collate: graph 1: edge_src must index the 3 atoms"),
    "node_features_nan": (lambda: collate([water(node_features={"q": [0.0, 1.0, 2.0]}),
                                           _with_nan_feature()]), ValueError,
                          r"collate: graph 1: node_features\['q'\] contains NaN"),
    "graph_targets_nan": (lambda: collate([water(graph_targets={"energy": 1.0}), _with_nan_energy()]), ValueError,
                          r"collate: graph 1: graph_targets\['energy'\] contains NaN"),
    "not_a_graph": (lambda: collate([water(), {"pos": WATER}]), TypeError, "collate: item 1 is a dict"),
    "empty": (lambda: collate([]), ValueError, "collate: got an empty list"),
    "cutoffs_differ": (lambda: collate([water(), water(cutoff=3.0)]), ValueError, "collate: graph 1 was built with"),
    "dtypes_differ": (lambda: collate([water(dtype=torch.float32), water(dtype=torch.float64)]), ValueError,
                      "collate: graph 1 has positions of dtype"),
}


def _with_nan_feature():
    graph = water(node_features={"q": [0.0, 1.0, 2.0]})
    graph.node_features["q"][1] = NAN
    return graph


def _with_nan_energy():
    graph = water(graph_targets={"energy": 1.0})
    graph.graph_targets["energy"][0] = NAN
    return graph


@pytest.mark.parametrize("case", COLLATE.values(), ids=COLLATE.keys())
def test_collate_refuses_bad_graphs_naming_which(case):
    check(case)


# --------------------------------------------------------------------------- files
PARTIAL_CIF = """data_CuAu
_cell_length_a 3.6
_cell_length_b 3.6
_cell_length_c 3.6
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P 1'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
{sites}
"""


def _cif(tmp_path, sites, name="partial.cif"):
    path = tmp_path / name
    path.write_text(PARTIAL_CIF.format(sites="\n".join(sites)))
    return path


HALF_HALF = ["Cu1 Cu 0.0 0.0 0.0 0.5", "Au1 Au 0.0 0.0 0.0 0.5", "Cu2 Cu 0.5 0.5 0.0 1.0"]
MOSTLY_CU = ["Cu1 Cu 0.0 0.0 0.0 0.75", "Au1 Au 0.0 0.0 0.0 0.25", "Cu2 Cu 0.5 0.5 0.0 1.0"]
VACANCY = ["Cu1 Cu 0.0 0.0 0.0 0.9", "Cu2 Cu 0.5 0.5 0.0 1.0"]


def _xyz(tmp_path, corrupt):
    """Three water frames in extxyz, the second corrupted by ``corrupt(lines)``."""
    path = tmp_path / "frames.xyz"
    ase_write(path, [molecule("H2O")] * 3, format="extxyz")
    lines = path.read_text().splitlines()
    corrupt(lines)
    path.write_text("\n".join(lines) + "\n")
    return path


def _replace_line(number, text):
    def corrupt(lines):
        lines[number] = text
    return corrupt


FILES = {
    "cif_partial_occupancy": (lambda p: read(_cif(p, HALF_HALF), 3.0), ValueError,
                              r"site 0 has partial occupancy \((Cu 0.5, Au 0.5|Au 0.5, Cu 0.5)\) \(structure 0\)"
                              r".*majority_species=True"),
    "cif_partial_minority": (lambda p: read(_cif(p, MOSTLY_CU), 3.0), ValueError,
                             r"partial occupancy \(Cu 0.75, Au 0.25\)"),
    "cif_vacancy": (lambda p: read(_cif(p, VACANCY), 3.0), ValueError, r"partial occupancy \(Cu 0.9\)"),
    "cif_tie_with_majority": (lambda p: read(_cif(p, HALF_HALF), 3.0, majority_species=True), ValueError,
                              "site 0 has no majority species"),
    "cif_majority_not_bool": (lambda p: read(_cif(p, MOSTLY_CU), 3.0, majority_species="yes"), TypeError,
                              "majority_species must be a bool"),
    "xyz_non_numeric_coordinate": (lambda p: read(_xyz(p, _replace_line(8, "O 0.0 x 0.1")), 2.0), ValueError,
                                   r"read: cannot parse '.*frames\.xyz' \(extxyz\) at frame 1: ValueError"),
    "xyz_wrong_atom_count": (lambda p: read(_xyz(p, _replace_line(5, "7")), 2.0), ValueError,
                             r"read: cannot parse '.*frames\.xyz' \(extxyz\) at frame 2 \(line 15: not a valid"),
    "xyz_count_not_a_number": (lambda p: read(_xyz(p, _replace_line(5, "three")), 2.0), ValueError,
                               r"cannot parse '.*frames\.xyz' \(extxyz\) at frame 1 \(line 6"),
    "xyz_truncated": (lambda p: read(_xyz(p, lambda lines: lines.__delitem__(slice(12, None))), 2.0), ValueError,
                      r"cannot parse '.*frames\.xyz' \(extxyz\) at frame 2"),
    "xyz_slice_frame_number": (lambda p: read(_xyz(p, _replace_line(13, "H 0 0")), 2.0, index="1:"), ValueError,
                               r"at frame 2"),
    "xyz_bad_header": (lambda p: read(_xyz(p, _replace_line(0, "three")), 2.0), ValueError,
                       r"cannot parse .* at frame 0"),
    "index_float": (lambda p: read(_xyz(p, lambda lines: None), 2.0, index=1.5), TypeError, "read: index must be"),
    "index_out_of_range": (lambda p: read(_xyz(p, lambda lines: None), 2.0, index=10), ValueError,
                           "holds no structures at index 10"),
    "missing_file": (lambda p: read(p / "missing.xyz", 2.0), FileNotFoundError, r"read: no such file .*missing"),
    "unknown_keyword": (lambda p: read(_xyz(p, lambda lines: None), 2.0, cutof=2.0), TypeError,
                        r"unexpected keyword arguments \['cutof'\]"),
    "cutoff_string": (lambda p: read(_xyz(p, lambda lines: None), "2.0"), TypeError, "cutoff must be a number"),
    "dtype_float16": (lambda p: read(_xyz(p, lambda lines: None), 2.0, dtype=torch.float16), TypeError,
                      "dtype must be torch.float32 or torch.float64"),
    "max_pairs_guard": (lambda p: read(_cif(p, ["Cu1 Cu 0 0 0 1.0"], "cu.cif"), 1e4), ValueError,
                        r"pairs expected.*max_pairs.*\(structure 0\)"),
}


@pytest.mark.parametrize("case", FILES.values(), ids=FILES.keys())
def test_files_give_clear_errors_with_path_and_frame(case, tmp_path):
    call, exception, pattern = case
    with pytest.raises(exception, match=pattern):
        call(tmp_path)


def test_majority_species_is_an_explicit_option(tmp_path):
    graph, = read(_cif(tmp_path, MOSTLY_CU), 3.0, majority_species=True)
    assert graph.atomic_numbers.tolist() == [29, 29]
    graph, = read(_cif(tmp_path, VACANCY, "vacancy.cif"), 3.0, majority_species=True)
    assert graph.atomic_numbers.tolist() == [29, 29]
    ordered = tmp_path / "ordered.cif"
    ase_write(ordered, bulk("Cu", "fcc", a=3.6, cubic=True))
    assert read(ordered, 3.0)[0].num_nodes == 4  # full occupancy needs no option
