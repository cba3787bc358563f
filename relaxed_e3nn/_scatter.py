"""The package's one scatter helper, with the ``torch_scatter.scatter`` call shape.

Native ``Tensor.index_add_`` is as fast as the compiled torch_scatter kernel on CPU and
needs no extension build, so the whole package reduces over edges and atoms through here.
"""
from typing import Optional

import torch

__all__ = ["scatter"]


def scatter(
    src: torch.Tensor,
    index: torch.Tensor,
    dim: int = 0,
    dim_size: Optional[int] = None,
    reduce: str = "sum",
) -> torch.Tensor:
    r"""Reduce ``src`` into ``dim_size`` slots along ``dim`` according to ``index``.

    .. math::
        \mathrm{out}_i = \sum_{j : \mathrm{index}_j = i} \mathrm{src}_j
        \qquad\text{or}\qquad
        \mathrm{out}_i = \frac{1}{\max(1, n_i)} \sum_{j : \mathrm{index}_j = i} \mathrm{src}_j

    Parameters
    ----------
    src : torch.Tensor
        Values to reduce.
    index : torch.Tensor
        1-D integer tensor with ``src.shape[dim]`` entries, the target slot of each entry.
    dim : int
        Dimension of ``src`` that ``index`` runs along.
    dim_size : int, optional
        Number of output slots; ``index.max() + 1`` when omitted (0 for an empty index).
    reduce : {"sum", "mean"}
        ``"mean"`` divides by the number of entries per slot (empty slots stay 0).

    Returns
    -------
    torch.Tensor
        Same shape as ``src`` except ``dim_size`` along ``dim``.
    """
    if reduce not in ("sum", "add", "mean"):
        raise ValueError(f"scatter: reduce must be 'sum' or 'mean', got {reduce!r}")
    if index.dim() != 1:
        raise ValueError(f"scatter: index must be 1-D, got shape {tuple(index.shape)}")
    dim = dim % src.dim()
    if index.shape[0] != src.shape[dim]:
        raise ValueError(
            f"scatter: index has {index.shape[0]} entries but src has {src.shape[dim]} along dim {dim}"
        )
    if dim_size is None:
        dim_size = int(index.max()) + 1 if index.numel() > 0 else 0
    shape = list(src.shape)
    shape[dim] = dim_size
    out = src.new_zeros(shape).index_add_(dim, index, src)
    if reduce == "mean":
        count = torch.zeros(dim_size, dtype=src.dtype, device=src.device)
        count.index_add_(0, index, torch.ones_like(index, dtype=src.dtype))
        view = [1] * src.dim()
        view[dim] = dim_size
        out = out / count.clamp(min=1).view(view)
    return out
