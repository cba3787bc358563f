"""Atomic numbers to species indices, shared by the energy models."""
from typing import Sequence

import torch

__all__ = ["species_table", "species_indices"]


def species_table(species: Sequence[int]) -> torch.Tensor:
    """Lookup table ``t`` with ``t[Z] = i`` for the model's ``species[i] = Z`` and ``-1`` elsewhere."""
    table = torch.full((max(species) + 1,), -1, dtype=torch.long)
    table[torch.tensor(list(species))] = torch.arange(len(species))
    return table


def species_indices(table: torch.Tensor, atomic_numbers: torch.Tensor, species: Sequence[int],
                    where: str) -> torch.Tensor:
    """Species index of every atom, ``-1`` for an atomic number the model does not know.

    On the CPU (outside ``torch.compile``) an unknown atomic number raises ``ValueError`` naming it;
    elsewhere the check is skipped, so a forward pass on an accelerator does not wait for the host.
    """
    known = (atomic_numbers >= 0) & (atomic_numbers < table.shape[0])
    index = torch.where(known, table[atomic_numbers.clamp(0, table.shape[0] - 1)], torch.full_like(atomic_numbers, -1))
    if atomic_numbers.device.type == "cpu" and not torch.compiler.is_compiling() and bool((index < 0).any()):
        unknown = sorted({int(v) for v in atomic_numbers[index < 0].tolist()})
        raise ValueError(f"{where}: atomic numbers {unknown} are not among the model's species {list(species)}")
    return index
