r"""Equivariance error of a function under O(3) or a point group, per output irrep block."""
import math
from dataclasses import dataclass, field, replace
from typing import Callable, List, Optional

import torch
from ase import Atoms
from e3nn import o3

from relaxed_e3nn._checks import parse_irreps
from relaxed_e3nn._settings import renamed_arguments
from relaxed_e3nn.data import collate, from_ase
from relaxed_e3nn.groups import D_from_matrix, as_point_group


__all__ = ["equivariance_error", "EquivarianceError", "BlockError", "model_equivariance_error"]

CARTESIAN = "cartesian_points"


@dataclass
class BlockError:
    r"""Error of one output irrep block.

    Attributes
    ----------
    output : int
        Index of the output (0 for a single tensor).
    irreps : str
        The block, e.g. ``"4x1o"``.
    abs_error : float
        :math:`\max_g \max |f(g\cdot x) - D_{out}(g) f(x)|` over the block's entries.
    rel_error : float
        :math:`\max_g \lVert f(g\cdot x) - D_{out}(g) f(x)\rVert / \lVert D_{out}(g) f(x)\rVert` over the block
        (``inf`` if the expected block is zero but the error is not, 0 if both are zero).
    """

    output: int
    irreps: str
    abs_error: float
    rel_error: float


@dataclass
class EquivarianceError:
    """Result of :func:`equivariance_error`: one :class:`BlockError` per output irrep block."""

    blocks: List[BlockError] = field(default_factory=list)
    num_elements: int = 0
    group: str = "O3"

    @property
    def max_abs(self) -> float:
        """Largest absolute error over the blocks (NaN if any block's is NaN)."""
        return _nan_max(b.abs_error for b in self.blocks)

    @property
    def max_rel(self) -> float:
        """Largest relative error over the blocks (NaN if any block's is NaN)."""
        return _nan_max(b.rel_error for b in self.blocks)

    def to_dict(self) -> dict:
        return {
            "group": self.group,
            "num_elements": self.num_elements,
            "max_abs": self.max_abs,
            "max_rel": self.max_rel,
            "blocks": [vars(b).copy() for b in self.blocks],
        }

    def __str__(self) -> str:
        lines = [f"equivariance error over {self.num_elements} elements of {self.group}:"]
        for b in self.blocks:
            lines.append(f"  out[{b.output}] {b.irreps:>8}: abs {b.abs_error:.3e}  rel {b.rel_error:.3e}")
        return "\n".join(lines)


def _nan_max(values, start: float = 0.0) -> float:
    """``max`` that propagates NaN (Python's ``max(0.0, nan)`` is 0.0: a broken function would pass)."""
    out = start
    for v in values:
        if math.isnan(v) or math.isnan(out):
            return math.nan
        out = max(out, v)
    return out


def _parse_spec(spec, name: str):
    if spec is None or spec == CARTESIAN:
        return spec
    if isinstance(spec, o3.Irreps):
        return spec
    if isinstance(spec, str):
        try:
            return parse_irreps(name, spec)
        except ValueError as err:
            raise ValueError(f"{name}: {spec!r} is neither irreps nor 'cartesian_points' ({err})") from err
    raise TypeError(f"{name} must be irreps, 'cartesian_points' or None, got {type(spec).__name__}")


def _specs(specs, count: int, name: str) -> list:
    if isinstance(specs, (list, tuple)) and not isinstance(specs, o3.Irreps):
        specs = list(specs)
    else:
        specs = [specs]
    if len(specs) != count:
        raise ValueError(f"{name} has {len(specs)} entries but there are {count} tensors")
    return [_parse_spec(s, f"{name}[{i}]") for i, s in enumerate(specs)]


def _act(spec, g: torch.Tensor, x: torch.Tensor, name: str) -> torch.Tensor:
    if spec is None:
        return x
    if spec == CARTESIAN:
        if x.shape[-1] != 3:
            raise ValueError(f"{name} is 'cartesian_points' but its last dimension is {x.shape[-1]}, expected 3")
        return x @ g.to(x.dtype).T
    if x.shape[-1] != spec.dim:
        raise ValueError(f"{name} has last dimension {x.shape[-1]} but its irreps {spec} have dimension {spec.dim}")
    D = D_from_matrix(spec, g.detach().to("cpu", torch.float64)).to(dtype=x.dtype, device=x.device)
    return x @ D.T


def _elements(group, num_elements: int, generator: torch.Generator) -> tuple:
    """Matrices (float64) and a label."""
    if group is None:
        R = o3.rand_matrix(num_elements, dtype=torch.float64)
        # alternate proper and improper elements so that parity is always exercised
        sign = torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(num_elements)], dtype=torch.float64)
        return R * sign[:, None, None], "O3 (Haar)"
    group = as_point_group(group, "group", default="O3")
    if group.is_finite and group.order <= num_elements:
        return group.elements, group.schoenflies
    return group.sample(num_elements, generator=generator), group.schoenflies


def _outputs(fn: Callable, args) -> list:
    """``fn(*args)`` as a list of detached tensors (a function may use autograd inside, e.g. forces)."""
    with torch.no_grad():
        out = fn(*args)
    outs = [out] if isinstance(out, torch.Tensor) else list(out)
    for k, y in enumerate(outs):
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"fn must return tensors, output[{k}] is {type(y).__name__}")
    return [y.detach() for y in outs]


@renamed_arguments(n="num_elements")
def equivariance_error(
    fn: Callable,
    args,
    irreps_in,
    irreps_out,
    group=None,
    num_elements: int = 8,
    seed: Optional[int] = 0,
) -> EquivarianceError:
    r"""Measure :math:`f(g\cdot x) - D_\mathrm{out}(g) f(x)` per output irrep block.

    Parameters
    ----------
    fn : callable
        ``fn(*args)`` returns a tensor or a tuple of tensors.
    args : tensor or sequence of tensors
        The inputs (their dtype sets the precision of the test).
    irreps_in : irreps, ``"cartesian_points"``, None, or a list of those (one per argument)
        How each argument transforms: by ``D(g)`` on its last axis, by the 3x3 matrix ``g``
        (positions; as in e3nn), or not at all (``None``: invariant inputs such as indices).
    irreps_out : same, one per output
    group : None, PointGroup or str
        ``None``: ``num_elements`` Haar-random O(3) elements, every other one improper (parity
        included). A finite group: all its elements when ``order <= num_elements``, else
        ``num_elements`` random elements; a continuous group: ``num_elements`` Haar-random elements of it.
    num_elements : int
        Number of elements (``n``: deprecated name).
    seed : int or None
        Seeds the random elements.

    Returns
    -------
    EquivarianceError
        Absolute and relative errors per output irrep block (max over elements). NaN in an
        output propagates: the block's errors are NaN, never 0.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if not isinstance(num_elements, int) or isinstance(num_elements, bool) or num_elements < 1:
        raise ValueError(f"num_elements must be a positive int, got {num_elements!r}")
    args = [args] if isinstance(args, torch.Tensor) else list(args)
    for i, a in enumerate(args):
        if not isinstance(a, torch.Tensor):
            raise TypeError(f"args[{i}] must be a torch.Tensor, got {type(a).__name__}")
    specs_in = _specs(irreps_in, len(args), "irreps_in")
    generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
    if seed is not None:
        state = torch.random.get_rng_state()
        torch.manual_seed(int(seed))
    try:
        mats, label = _elements(group, num_elements, generator)
    finally:
        if seed is not None:
            torch.random.set_rng_state(state)
    outs = _outputs(fn, args)
    specs_out = _specs(irreps_out, len(outs), "irreps_out")
    abs_err = [[0.0] * (len(s) if isinstance(s, o3.Irreps) else 1) for s in specs_out]
    rel_err = [[0.0] * (len(s) if isinstance(s, o3.Irreps) else 1) for s in specs_out]
    for g in mats:
        moved = _outputs(fn, [_act(s, g, a, f"args[{i}]") for i, (s, a) in enumerate(zip(specs_in, args))])
        for k, (spec, y, y_g) in enumerate(zip(specs_out, outs, moved)):
            expected = _act(spec, g, y, f"output[{k}]")
            if y_g.shape != expected.shape:
                raise ValueError(f"output[{k}] changed shape under the group action: {tuple(y_g.shape)} vs {tuple(expected.shape)}")
            slices = spec.slices() if isinstance(spec, o3.Irreps) else [slice(None)]
            for j, sl in enumerate(slices):
                diff = (y_g[..., sl] - expected[..., sl]).to(torch.float64)
                ref = expected[..., sl].to(torch.float64)
                a = float(diff.abs().max()) if diff.numel() else 0.0
                dn, rn = float(diff.norm()), float(ref.norm())
                r = dn / rn if rn > 0 else (0.0 if dn == 0 else math.inf)
                if math.isnan(rn):
                    r = math.nan
                abs_err[k][j] = _nan_max([a], abs_err[k][j])
                rel_err[k][j] = _nan_max([r], rel_err[k][j])
    blocks = []
    for k, spec in enumerate(specs_out):
        names = [str(o3.Irreps([mul_ir])) for mul_ir in spec] if isinstance(spec, o3.Irreps) else [str(spec)]
        for j, name in enumerate(names):
            blocks.append(BlockError(k, name, abs_err[k][j], rel_err[k][j]))
    return EquivarianceError(blocks=blocks, num_elements=len(mats), group=label)


@renamed_arguments(n="num_elements")
def model_equivariance_error(model: torch.nn.Module, structures, group, num_elements: int = 8,
                             seed: Optional[int] = 0) -> EquivarianceError:
    r"""Equivariance error of a trained model under ``group`` on given structures (e.g. held-out inputs).

    Positions and cells are acted on by :math:`g` (cells as rows of Cartesian vectors); the
    outputs are compared with :math:`D_\mathrm{out}(g)` of the unmoved outputs: energy
    (``0e``) and forces (Cartesian vectors) for ``output="energy"``, ``config.irreps_out``
    otherwise. Zero to round-off when the model is equivariant under ``group``.

    Parameters
    ----------
    model : torch.nn.Module
        A network with a ``config`` holding ``cutoff``, ``output`` and ``node_features``
        (e.g. :class:`~relaxed_e3nn.models.RelaxedNetwork`).
    structures : ase.Atoms or sequence of them
        The inputs, batched together.
    group : PointGroup or str
        In the structures' coordinates; see :func:`equivariance_error`.
    num_elements, seed
        As in :func:`equivariance_error` (``n``: deprecated name of ``num_elements``).
    """
    config = getattr(model, "config", None)
    if config is None or not all(hasattr(config, key) for key in ("cutoff", "output")):
        raise TypeError(f"model must be a network with config.cutoff and config.output, got {type(model).__name__}")
    structures = [structures] if isinstance(structures, Atoms) else list(structures)
    if not structures or not all(isinstance(a, Atoms) for a in structures):
        raise TypeError("structures must be an ase.Atoms or a non-empty sequence of them")
    dtype = next(model.parameters()).dtype
    graph = collate([from_ase(a, config.cutoff, node_features=getattr(config, "node_features", ()), dtype=dtype)
                     for a in structures])
    was_training = model.training
    model.eval()

    def fn(pos, cell):
        out = model(replace(graph, pos=pos, cell=cell), compute_forces=config.output == "energy")
        if config.output == "energy":
            return out["energy"][:, None], out["forces"]
        return out["node_output" if config.output == "node" else "graph_output"]

    try:
        if config.output == "energy":
            specs_out = ["0e", CARTESIAN]
        else:
            specs_out = str(model.irreps_out)
        return equivariance_error(fn, [graph.pos, graph.cell], [CARTESIAN, CARTESIAN], specs_out,
                                  group=group, num_elements=num_elements, seed=seed)
    finally:
        model.train(was_training)
