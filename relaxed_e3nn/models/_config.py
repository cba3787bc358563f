"""The configuration of :class:`~relaxed_e3nn.models.RelaxedNetwork`: a plain, serialisable dataclass."""
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Dict, List, Optional, Union

from e3nn import o3

__all__ = ["RelaxedNetworkConfig"]

_OUTPUTS = ("energy", "node", "graph")
_RELAX_AT = ("edge", "node", "both")
_GRAPH_REDUCE = ("mean", "sum")
_IDENTITY = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parse_irreps(key: str, value) -> o3.Irreps:
    try:
        return o3.Irreps(value)
    except (ValueError, TypeError, AssertionError) as err:
        raise ValueError(
            f"RelaxedNetworkConfig: {key} must be an irreps string such as '16x0e+8x1o', got {value!r}"
        ) from err


@dataclass
class RelaxedNetworkConfig:
    r"""Every choice that defines a :class:`~relaxed_e3nn.models.RelaxedNetwork`.

    The config is the model's identity: together with a ``state_dict`` it rebuilds the model
    exactly (see :func:`~relaxed_e3nn.models.model_to_dict`). All fields are plain Python values
    so that the config round-trips through JSON, YAML and ``torch.load(weights_only=True)``.

    Attributes
    ----------
    species : list of int
        Atomic numbers the model knows, in the order of the one-hot species embedding and of
        ``atomic_energies``. Atoms of any other species are rejected with a ``ValueError``.
    cutoff : float
        Radius (Å) of the neighbour list and of the radial basis; every edge term goes to zero
        smoothly (:math:`C^\infty`) at the cutoff.
    output : {"energy", "node", "graph"}
        ``"energy"``: per-atom scalars summed per graph (forces and stress by autograd);
        ``"node"``: per-atom irreps ``irreps_out``; ``"graph"``: per-graph irreps ``irreps_out``
        reduced over the atoms with ``graph_reduce``.
    irreps_out : str or None
        Output irreps for ``output="node"`` / ``"graph"`` (e.g. ``"1o"`` for displacements, or a
        spherical signal ``"0e+1o+2e+3o+4e"``). Must be ``None`` or ``"0e"`` for ``"energy"``.
    graph_reduce : {"mean", "sum"}
        How ``output="graph"`` combines the atoms of a graph.
    num_layers : int
        Number of gated message-passing layers (convolution followed by an ``e3nn.nn.Gate``), at
        least 1. A final (ungated) convolution maps the last hidden features to the output, as in
        ``e3nn.nn.models.gate_points_2101.Network``.
    irreps_hidden : str
        Hidden features of the gated layers. Include both parities (``1o`` and ``1e``, ``2e`` and
        ``2o``) so that the couplings a relaxed layer opens can be carried forward. Irreps that
        cannot be reached from the layer's input are dropped, exactly as in ``gate_points_2101``.
    lmax : int
        Maximum degree of the edge spherical harmonics :math:`Y^{l}(\hat r)`, ``l = 0..lmax``
        (``normalize=True``, ``normalization="component"``).
    num_radial_basis : int
        Number of ``smooth_finite`` radial basis functions on ``[0, cutoff]``.
    radial_neurons : int
        Width of the hidden layers of the radial network that maps the basis to tensor-product weights.
    radial_layers : int
        Number of hidden layers of that radial network.
    num_neighbors : float
        Typical number of neighbours; messages are summed and divided by
        :math:`\sqrt{\text{num\_neighbors}}`.
    relaxed : bool
        ``True``: every convolution is a ``relaxed_e3nn.nn.RelaxedConvolution`` with its own
        learnable :math:`\theta`. ``False``: the strictly equivariant twin with the same
        architecture (plain ``gate_points_2101.Convolution`` layers).
    irreps_relaxed : int or str
        Irreps of each layer's :math:`\theta`: an int ``L`` (every irrep up to ``l = L`` in both
        parities) or an irreps string. Ignored when ``relaxed`` is ``False``.
    relax_at : {"both", "edge", "node"}
        Where :math:`\theta` enters each convolution (see ``relaxed_e3nn.nn.RelaxedConvolution``).
    node_features : dict of str to str
        Extra per-atom inputs: names of entries of ``AtomicGraph.node_features`` mapped to their
        irreps (e.g. ``{"velocities": "1o", "charges": "0e"}``); concatenated, in this order, after
        the one-hot species embedding to form the node input.
    frame : list of list of float
        3x3 orthogonal matrix :math:`F` whose rows are the model's Cartesian axes written in the
        coordinates of the structures it is given. The model evaluates
        :math:`\mathbf{r}_\text{model} = F\,\mathbf{r}` and maps outputs back with
        :math:`D_\text{out}(F)^{-1}`. Identity by default (the model works in the coordinates it
        was trained in). Meaningful only for relaxed models: a strict model gives the same result
        for every frame.
    scale : float
        Multiplies the network output (per-atom energies, node or graph outputs).
    atomic_energies : list of float or None
        Per-species energy shift (aligned with ``species``) added to each atom's energy; ``None``
        means zeros. Set by the trainer's least-squares fit.

    Notes
    -----
    The energy of graph :math:`b` is

    .. math::
        E_b = \sum_{i \in b} \big( \text{scale}\; \varepsilon_i + E^{0}_{Z_i} \big),

    with :math:`\varepsilon_i` the scalar output of the last convolution at atom :math:`i`.
    """

    species: List[int]
    cutoff: float = 5.0
    output: str = "energy"
    irreps_out: Optional[str] = None
    graph_reduce: str = "mean"
    num_layers: int = 2
    irreps_hidden: str = "32x0e+16x1o+16x1e+8x2e+8x2o"
    lmax: int = 2
    num_radial_basis: int = 8
    radial_neurons: int = 32
    radial_layers: int = 1
    num_neighbors: float = 12.0
    relaxed: bool = True
    irreps_relaxed: Union[int, str] = 2
    relax_at: str = "both"
    node_features: Dict[str, str] = field(default_factory=dict)
    frame: List[List[float]] = field(default_factory=lambda: [row[:] for row in _IDENTITY])
    scale: float = 1.0
    atomic_energies: Optional[List[float]] = None

    def __post_init__(self):
        self._check_types()
        self._check_values()

    # ------------------------------------------------------------------ validation
    def _check_types(self):
        def need(key, ok, expected):
            if not ok:
                value = getattr(self, key)
                raise ValueError(
                    f"RelaxedNetworkConfig: {key} must be {expected}, got {value!r} ({type(value).__name__})"
                )

        need("species", isinstance(self.species, (list, tuple)) and all(_is_int(z) for z in self.species),
             "a list of atomic numbers (ints)")
        self.species = [int(z) for z in self.species]
        for key in ("cutoff", "num_neighbors", "scale"):
            need(key, _is_number(getattr(self, key)), "a number")
            setattr(self, key, float(getattr(self, key)))
        for key in ("num_layers", "lmax", "num_radial_basis", "radial_neurons", "radial_layers"):
            need(key, _is_int(getattr(self, key)), "an int")
        for key in ("output", "graph_reduce", "irreps_hidden", "relax_at"):
            need(key, isinstance(getattr(self, key), str), "a string")
        need("irreps_out", self.irreps_out is None or isinstance(self.irreps_out, str), "an irreps string or None")
        need("relaxed", isinstance(self.relaxed, bool), "a bool")
        need("irreps_relaxed", _is_int(self.irreps_relaxed) or isinstance(self.irreps_relaxed, str),
             "an int L or an irreps string")
        need("node_features", isinstance(self.node_features, dict)
             and all(isinstance(k, str) and isinstance(v, str) for k, v in self.node_features.items()),
             "a dict of feature name (str) to irreps (str)")
        self.node_features = dict(self.node_features)
        need("frame", isinstance(self.frame, (list, tuple)) and len(self.frame) == 3
             and all(isinstance(r, (list, tuple)) and len(r) == 3 and all(_is_number(x) for x in r)
                     for r in self.frame),
             "a 3x3 nested list of numbers")
        self.frame = [[float(x) for x in row] for row in self.frame]
        need("atomic_energies", self.atomic_energies is None or (
            isinstance(self.atomic_energies, (list, tuple)) and all(_is_number(e) for e in self.atomic_energies)),
             "a list of numbers or None")
        if self.atomic_energies is not None:
            self.atomic_energies = [float(e) for e in self.atomic_energies]

    def _check_values(self):
        def fail(key, expected):
            raise ValueError(f"RelaxedNetworkConfig: {key} must be {expected}, got {getattr(self, key)!r}")

        if not self.species or len(set(self.species)) != len(self.species) or min(self.species) < 1 \
                or max(self.species) > 118:
            fail("species", "a non-empty list of distinct atomic numbers in 1..118")
        if not (math.isfinite(self.cutoff) and self.cutoff > 0):
            fail("cutoff", "a positive finite number (Å)")
        if self.output not in _OUTPUTS:
            fail("output", f"one of {_OUTPUTS}")
        if self.output == "energy":
            if self.irreps_out not in (None, "0e", "1x0e"):
                fail("irreps_out", "None or '0e' for output='energy'")
        else:
            if self.irreps_out is None:
                fail("irreps_out", f"an irreps string for output={self.output!r}")
            if _parse_irreps("irreps_out", self.irreps_out).dim == 0:
                fail("irreps_out", "non-empty irreps")
        if self.graph_reduce not in _GRAPH_REDUCE:
            fail("graph_reduce", f"one of {_GRAPH_REDUCE}")
        if self.num_layers < 1:
            fail("num_layers", "at least 1")
        if _parse_irreps("irreps_hidden", self.irreps_hidden).dim == 0:
            fail("irreps_hidden", "non-empty irreps")
        if self.lmax < 0:
            fail("lmax", "a non-negative int")
        if self.num_radial_basis < 1:
            fail("num_radial_basis", "at least 1")
        if self.radial_neurons < 1:
            fail("radial_neurons", "at least 1")
        if self.radial_layers < 0:
            fail("radial_layers", "a non-negative int")
        if not (math.isfinite(self.num_neighbors) and self.num_neighbors > 0):
            fail("num_neighbors", "a positive number")
        if _is_int(self.irreps_relaxed):
            if self.irreps_relaxed < 0:
                fail("irreps_relaxed", "a non-negative int L or an irreps string")
        else:
            _parse_irreps("irreps_relaxed", self.irreps_relaxed)
        if self.relax_at not in _RELAX_AT:
            fail("relax_at", f"one of {_RELAX_AT}")
        for name, irreps in self.node_features.items():
            if not name:
                raise ValueError("RelaxedNetworkConfig: node_features names must be non-empty strings")
            if _parse_irreps(f"node_features[{name!r}]", irreps).dim == 0:
                raise ValueError(f"RelaxedNetworkConfig: node_features[{name!r}] must be non-empty irreps")
        frame = self.frame
        for i in range(3):
            for j in range(3):
                dot = sum(frame[i][k] * frame[j][k] for k in range(3))
                if not math.isfinite(dot) or abs(dot - (1.0 if i == j else 0.0)) > 1e-6:
                    fail("frame", "an orthogonal 3x3 matrix (rows orthonormal to 1e-6)")
        if not math.isfinite(self.scale):
            fail("scale", "a finite number")
        if self.atomic_energies is not None:
            if len(self.atomic_energies) != len(self.species):
                raise ValueError(
                    f"RelaxedNetworkConfig: atomic_energies must have one entry per species "
                    f"({len(self.species)}), got {len(self.atomic_energies)}"
                )
            if not all(math.isfinite(e) for e in self.atomic_energies):
                fail("atomic_energies", "finite numbers")

    # ------------------------------------------------------------------ (de)serialisation
    @property
    def frame_is_identity(self) -> bool:
        return self.frame == _IDENTITY

    def to_dict(self) -> dict:
        """A plain dict (JSON/YAML/``weights_only``-safe) that :meth:`from_dict` turns back into this config."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RelaxedNetworkConfig":
        """Build a config from a dict; unknown keys or wrong types raise ``ValueError`` naming the key.

        Missing keys take their defaults (``species`` is required).
        """
        if not isinstance(d, dict):
            raise ValueError(f"RelaxedNetworkConfig.from_dict: expected a dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise ValueError(
                f"RelaxedNetworkConfig.from_dict: unknown key(s) {unknown}; known keys are {sorted(known)}"
            )
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"RelaxedNetworkConfig.from_dict: missing required key(s) {missing}")
        return cls(**d)
