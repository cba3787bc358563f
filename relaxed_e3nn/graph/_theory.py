r"""The projector onto cluster-equivariant linear maps, and the bias–variance gap it implies."""
from typing import Optional

import numpy as np
import torch

from relaxed_e3nn._settings import renamed_arguments
from relaxed_e3nn.graph._clusters import cluster_labels, equivariant_dimension

__all__ = ["project", "projector", "bias_variance_gap"]

_DENSE_LIMIT = 2**25  # entries of the dense [n^2, n^2] projector


def project(weight: torch.Tensor, clusters) -> torch.Tensor:
    r"""Orthogonal (Frobenius) projection of ``n x n`` matrices onto the G-equivariant ones.

    For :math:`G = S_{c_1} \times \dots \times S_{c_k}` acting by permutation matrices this is
    the group average (Reynolds operator) :math:`P_G W = \frac{1}{|G|} \sum_{g} P_g W P_g^\top`,
    computed in closed form: every off-diagonal block :math:`(c, d)` is replaced by its mean,
    and inside a diagonal block the diagonal and the off-diagonal entries are each replaced by
    their mean.

    Parameters
    ----------
    weight : torch.Tensor
        ``[..., n, n]`` matrices (acting as :math:`y = W x` on node signals).
    clusters : sequence
        One label per node.

    Returns
    -------
    torch.Tensor
        ``[..., n, n]``, the equivariant part :math:`P_G W`.
    """
    labels, k = cluster_labels(clusters)
    n = labels.shape[0]
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"project: weight must be a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() < 2 or weight.shape[-2:] != (n, n):
        raise ValueError(
            f"project: weight must have shape [..., {n}, {n}] for {n} cluster labels, got {tuple(weight.shape)}"
        )
    dtype, device = weight.dtype, weight.device
    one_hot = torch.zeros(n, k, dtype=dtype, device=device)
    one_hot[torch.arange(n), torch.as_tensor(labels)] = 1.0
    sizes = one_hot.sum(0)
    block_sum = one_hot.T @ weight @ one_hot  # [..., k, k]
    diagonal = torch.diagonal(weight, dim1=-2, dim2=-1)  # [..., n]
    diag_sum = diagonal @ one_hot  # [..., k]
    # off-diagonal entries of block (c, d): |c||d| of them, minus the |c| diagonal ones when c == d
    counts = sizes[:, None] * sizes[None, :] - torch.diag(sizes)
    off_sum = block_sum - torch.diag_embed(diag_sum)
    off_mean = off_sum / counts.clamp(min=1)
    diag_mean = diag_sum / sizes
    out = one_hot @ off_mean @ one_hot.T
    eye = torch.eye(n, dtype=dtype, device=device)
    return out * (1 - eye) + torch.diag_embed(diag_mean @ one_hot.T)


def projector(clusters, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    r"""The projector :math:`P_G` onto G-equivariant maps as an ``[n^2, n^2]`` matrix on ``vec(W)``.

    ``vec`` is the row-major flattening ``W.reshape(-1)``. :math:`P_G = B B^\top` for the
    orthonormal basis :math:`B` of :math:`\mathrm{Hom}_G` made of the normalised block
    indicators :math:`E_{cd}/\sqrt{|c||d|}` (:math:`c \ne d`), diagonal indicators
    :math:`I_c/\sqrt{|c|}` and within-cluster off-diagonal indicators
    :math:`(E_{cc} - I_c)/\sqrt{|c|(|c|-1)}` (:math:`|c| > 1`). It is symmetric, idempotent,
    of rank :func:`equivariant_dimension`, and equals :func:`project` applied to ``vec(W)``.

    Parameters
    ----------
    clusters : sequence
        One label per node (``n**4`` entries are allocated: small graphs only).
    dtype : torch.dtype, optional
        Default ``torch.get_default_dtype()``.

    Returns
    -------
    torch.Tensor
        ``[n*n, n*n]``.
    """
    labels, k = cluster_labels(clusters)
    n = labels.shape[0]
    if n**4 > _DENSE_LIMIT:
        raise ValueError(f"projector: {n} nodes need a dense {n * n}x{n * n} matrix; use project(W, clusters) instead")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    basis = []
    members = [np.flatnonzero(labels == c) for c in range(k)]
    for c in range(k):
        for d in range(k):
            block = np.zeros((n, n))
            if c != d:
                block[np.ix_(members[c], members[d])] = 1.0
                basis.append(block / np.sqrt(block.sum()))
                continue
            diag = np.zeros((n, n))
            diag[members[c], members[c]] = 1.0
            basis.append(diag / np.sqrt(diag.sum()))
            if len(members[c]) > 1:
                block[np.ix_(members[c], members[c])] = 1.0
                block -= diag
                basis.append(block / np.sqrt(block.sum()))
    b = torch.as_tensor(np.stack([m.reshape(-1) for m in basis], axis=1), dtype=dtype)
    assert b.shape[1] == equivariant_dimension(labels)
    return b @ b.T


@renamed_arguments(n_samples="num_samples")
def bias_variance_gap(weight: torch.Tensor, clusters, num_samples: int, noise_std: float) -> float:
    r"""Expected gain in squared error of the G-equivariant least-squares estimator.

    Model: ``num_samples`` pairs :math:`y = W x + \varepsilon` with :math:`x \sim N(0, I_N)`,
    :math:`\varepsilon \sim N(0, \sigma^2 I_N)`, :math:`W \in \mathbb{R}^{N\times N}` acting on
    the ``N`` nodes. The unconstrained estimator is least squares
    :math:`\hat W = Y X^\top (X X^\top)^{-1}`, the equivariant one its projection
    :math:`P_G \hat W` (:func:`project`). Both errors are
    :math:`\lVert \hat W - W \rVert_F^2`, the excess test risk for isotropic inputs. Since
    :math:`\mathbb{E}[(X X^\top)^{-1}] = I / (n - N - 1)` (inverse Wishart), the error of
    :math:`\hat W`, averaged over the inputs, has the isotropic covariance
    :math:`\sigma^2 I_{N^2} / (n - N - 1)` in ``vec(W)``, so projecting onto a subspace keeps
    the fraction :math:`\dim\mathrm{Hom}_G / N^2` of it, and

    .. math::
        \mathbb{E}\lVert \hat W - W\rVert_F^2 - \mathbb{E}\lVert P_G \hat W - W\rVert_F^2
        = \frac{\sigma^2 (N^2 - \dim \mathrm{Hom}_G)}{n - N - 1} - \lVert P_G^\perp W \rVert_F^2 ,

    a variance saving on the :math:`N^2 - \dim\mathrm{Hom}_G` discarded directions minus the
    squared bias of the non-equivariant part of :math:`W`. Positive: the constraint helps.

    The identity is exact for the projected estimator with Gaussian isotropic inputs and
    ``n > N + 1``. Least squares fitted *within* the equivariant subspace is the projection
    of :math:`\hat W` in the metric :math:`\lVert (W - \hat W) X \rVert_F`; it coincides with
    :math:`P_G \hat W` when :math:`X X^\top` commutes with every permutation of G (e.g. an
    orthogonal design :math:`X X^\top = n I`), and otherwise has the same bias and the same
    variance to leading order in :math:`N/n`, so for it the formula holds for
    :math:`n \gg N` (simulated: within 2% at :math:`n = 10 N`; at :math:`n = 2N` its gain
    is about 9% larger than the formula).

    Parameters
    ----------
    weight : torch.Tensor
        ``[N, N]`` true map :math:`W`.
    clusters : sequence
        ``N`` cluster labels.
    num_samples : int
        Training pairs ``n``, more than ``N + 1``.
    noise_std : float
        :math:`\sigma \ge 0`.

    Returns
    -------
    float
    """
    labels, _ = cluster_labels(clusters)
    size = labels.shape[0]
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples <= size + 1:
        raise ValueError(f"bias_variance_gap: num_samples must be an integer > N + 1 = {size + 1}, got {num_samples!r}")
    if not np.isfinite(noise_std) or noise_std < 0:
        raise ValueError(f"bias_variance_gap: noise_std must be finite and >= 0, got {noise_std!r}")
    weight = torch.as_tensor(weight)
    residual = weight - project(weight, labels)
    variance = noise_std**2 * (size * size - equivariant_dimension(labels)) / (num_samples - size - 1)
    return float(variance - residual.pow(2).sum())
