"""Neighbor-list construction: relaxed_e3nn (matscipy cell list) vs ase's ``neighbor_list``.

A rattled 1008-atom fcc Cu cell (7 x 6 x 6 cubic cells), 5 A cutoff: indices and shifts.
Prints the median of repeats for each and the speed-up; both are timed in this process.
"""
import statistics
import time

import numpy as np
import torch
from ase.build import bulk
from ase.neighborlist import neighbor_list as ase_neighbor_list

from relaxed_e3nn.data import from_ase, neighbor_list


def median_time(function, repeats):
    function()  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    torch.set_num_threads(1)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (7, 6, 6)
    atoms.rattle(0.05, seed=0)
    cutoff = 5.0
    positions, cell, pbc = atoms.get_positions(), np.asarray(atoms.get_cell()), atoms.pbc

    src, dst, shift = neighbor_list(positions, cutoff, cell=cell, pbc=pbc)
    i, j, S = ase_neighbor_list("ijS", atoms, cutoff)
    ours = sorted(zip(dst.tolist(), src.tolist(), map(tuple, shift.tolist())))
    theirs = sorted(zip(i.tolist(), j.tolist(), map(tuple, S.tolist())))
    assert ours == theirs, "neighbor lists differ"

    t_ours = median_time(lambda: neighbor_list(positions, cutoff, cell=cell, pbc=pbc), repeats=15)
    t_graph = median_time(lambda: from_ase(atoms, cutoff), repeats=15)
    t_ase = median_time(lambda: ase_neighbor_list("ijS", atoms, cutoff), repeats=5)
    print(f"{len(atoms)} atoms, cutoff {cutoff} A, {len(src)} edges (identical to ase's)")
    print(f"ase neighbor_list('ijS')        : {t_ase * 1e3:8.2f} ms (median of 5)")
    print(f"relaxed_e3nn neighbor_list      : {t_ours * 1e3:8.2f} ms (median of 15)  speed-up {t_ase / t_ours:5.1f}x")
    print(f"relaxed_e3nn from_ase (+tensors): {t_graph * 1e3:8.2f} ms (median of 15)  speed-up {t_ase / t_graph:5.1f}x")


if __name__ == "__main__":
    main()
