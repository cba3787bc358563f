"""Turn the ways a user names a finite point group into a validated ``(G, 3, 3)`` tensor."""
from typing import Union

import torch

from relaxed_e3nn.groups import PointGroup, point_group, point_group_from_generators

__all__ = ["group_elements"]

_TOLERANCE = 1e-6


def _is_closed(mats: torch.Tensor) -> bool:
    products = torch.einsum("aij,bjk->abik", mats, mats).reshape(-1, 1, 9)
    distance = (products - mats.reshape(1, -1, 9)).abs().amax(-1)
    return bool((distance.amin(-1) < _TOLERANCE).all())


def group_elements(group: Union[str, torch.Tensor, object]) -> torch.Tensor:
    r"""Elements of a finite point group as a float64 tensor ``(G, 3, 3)`` (identity first).

    Parameters
    ----------
    group : str, PointGroup, array_like
        A Schoenflies name from the ``relaxed_e3nn.groups`` catalogue (standard frame), a
        ``PointGroup`` (any frame), the full list of elements as a
        ``(G, 3, 3)`` array, or a list of generators, closed with
        ``relaxed_e3nn.groups.point_group_from_generators``.

    Returns
    -------
    torch.Tensor
        ``(G, 3, 3)`` orthogonal matrices forming a group, float64.

    Raises
    ------
    ValueError
        Continuous or unknown groups, non-orthogonal matrices, duplicates, or generators that
        cannot be closed into a finite group.
    """
    if isinstance(group, str):
        group = point_group(group)
    if isinstance(group, PointGroup):
        if not group.is_finite:
            raise ValueError(f"group: point-group message passing needs a finite group, got {group.schoenflies}")
        mats = group.elements
    else:
        mats = group
    try:
        mats = torch.as_tensor(mats, dtype=torch.float64).detach().clone()
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(
            f"group: expected a group name, a PointGroup or a (G, 3, 3) array of matrices, got {type(group).__name__}"
        ) from err
    if mats.dim() == 2 and mats.shape == (3, 3):
        mats = mats[None]
    if mats.dim() != 3 or mats.shape[1:] != (3, 3) or mats.shape[0] == 0:
        raise ValueError(f"group: expected elements of shape (G, 3, 3), got {tuple(mats.shape)}")
    if not torch.isfinite(mats).all():
        raise ValueError("group: elements must be finite")
    eye = torch.eye(3, dtype=torch.float64)
    gram_error = (mats @ mats.transpose(1, 2) - eye).abs().amax()
    if gram_error > _TOLERANCE:
        raise ValueError(f"group: elements must be orthogonal matrices (max |g g^T - 1| = {gram_error:.2e})")
    flat = mats.reshape(-1, 9)
    pair_distance = (flat[:, None] - flat[None]).abs().amax(-1)
    pair_distance.fill_diagonal_(float("inf"))
    if bool((pair_distance < _TOLERANCE).any()):
        raise ValueError("group: elements contain duplicates")
    if not _is_closed(mats):
        closed = point_group_from_generators(mats)
        if not closed.is_finite:
            raise ValueError("group: the generators generate an infinite group")
        return group_elements(closed)
    identity = (mats - eye).abs().amax((1, 2)) < _TOLERANCE
    order = torch.cat([torch.nonzero(identity).reshape(-1), torch.nonzero(~identity).reshape(-1)])
    return mats[order]
