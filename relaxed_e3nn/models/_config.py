"""The configuration of :class:`~relaxed_e3nn.models.RelaxedNetwork`: a plain, serialisable dataclass."""
import math
import warnings
from dataclasses import MISSING, InitVar, dataclass, field, fields
from typing import Any, Dict, List, Mapping, Optional, Union

from relaxed_e3nn._checks import RELAX_AT, is_int, is_number, parse_irreps
from relaxed_e3nn._settings import DictConfig, check_fields, check_keys, field_names, field_type

__all__ = ["RelaxedNetworkConfig"]

_WHERE = "RelaxedNetworkConfig"
_OUTPUTS = ("energy", "node", "graph")
_GRAPH_REDUCE = ("mean", "sum")
_IDENTITY = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
#: deprecated key names read from dicts and files, mapped to the current ones
_RENAMED = {"layers": "num_layers", "radial_layers": "num_radial_layers"}
#: fitted values that older configs carried; they now live only in the model's buffers
FITTED_KEYS = ("atomic_energies", "scale")
#: keys added after model files were first written, with the value that reproduces a file without them
_ABSENT_IN_OLDER_FILES = {"num_species_features": 0, "radial_basis": "smooth_finite"}
#: radial bases of the edge scalars (see RelaxedNetworkConfig.radial_basis)
RADIAL_BASES = ("bessel", "smooth_finite")


@dataclass
class RelaxedNetworkConfig(DictConfig):
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
        Radius (Å) of the neighbor list and of the radial basis; every edge term goes to zero
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
        Number :math:`n_b` of radial basis functions on ``[0, cutoff]``.
    radial_basis : {"bessel", "smooth_finite"}
        The radial basis :math:`B_k(r)`, ``k = 1..n_b``, of the edge scalars. ``"bessel"``:
        :math:`B_k = \frac{\sin(k\pi x)}{x}\,u(x)` with :math:`x = r/r_c` and the envelope
        :math:`u(x) = \exp(1 - 1/(1 - x^4))` (1 at :math:`x = 0`, vanishing with all its
        derivatives at the cutoff), every function spanning the whole range, as NequIP's and
        DimeNet's Bessel bases. ``"smooth_finite"``:
        :math:`\sqrt{n_b}` times e3nn's ``soft_one_hot_linspace`` bumps (each :math:`C^\infty`
        and nonzero over two of :math:`n_b + 1` intervals; a stored config without this key reads
        as ``"smooth_finite"``).
    radial_neurons : int
        Width of the hidden layers of the radial network that maps the basis to tensor-product weights.
    num_radial_layers : int
        Number of hidden layers of that radial network.
    num_neighbors : float
        Typical number of neighbors; messages are summed and divided by
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
    num_species_features : int
        Width of the learned species embedding: the one-hot species vector goes through a
        linear map to ``num_species_features`` scalars (``0e``), which start the node input
        (as NequIP's type embedding). With one channel per species the first convolution can
        only form as many radial descriptors as there are species (one, for a single element):
        every hidden scalar of the first layer is then a multiple of the same neighbor density.
        ``0``: the one-hot vector itself is the node input (models written before this key;
        a stored config without it reads as ``0``).
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
    atomic_energies, scale : optional, init-only and deprecated
        Older configs carried the fitted per-species energy shifts and the output scale. They
        are no longer fields: the values live only in the model's ``atomic_energies`` and
        ``scale`` buffers (set them with ``RelaxedNetwork.set_atomic_energies`` /
        ``set_scale``). Given here (or in a dict), they are checked, a ``DeprecationWarning`` is
        issued, and :class:`~relaxed_e3nn.models.RelaxedNetwork` built from this config starts
        with them in its buffers; they are not part of :meth:`to_dict` or of equality (as
        init-only dataclass entries, reading them on a config gives ``None``: read the model's
        buffers instead).

    Notes
    -----
    The energy of graph :math:`b` is

    .. math::
        E_b = \sum_{i \in b} \big( \text{scale}\; \varepsilon_i + E^{0}_{Z_i} \big),

    with :math:`\varepsilon_i` the scalar output of the last convolution at atom :math:`i`,
    ``scale`` and :math:`E^0` the model's buffers.

    :meth:`from_dict` still reads the former key names ``layers`` (now ``num_layers``) and
    ``radial_layers`` (now ``num_radial_layers``) with a ``DeprecationWarning``; model files
    written with them load without one.
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
    radial_basis: str = "bessel"
    radial_neurons: int = 32
    num_radial_layers: int = 1
    num_neighbors: float = 12.0
    relaxed: bool = True
    irreps_relaxed: Union[int, str] = 2
    relax_at: str = "both"
    num_species_features: int = 32
    node_features: Dict[str, str] = field(default_factory=dict)
    frame: List[List[float]] = field(default_factory=lambda: [row[:] for row in _IDENTITY])
    atomic_energies: InitVar[Optional[List[float]]] = None
    scale: InitVar[Optional[float]] = None

    RENAMES = _RENAMED

    def __post_init__(self, atomic_energies, scale):
        # types through the shared annotation checks (ValueError, as this config always raised)
        check_fields(type(self), {name: getattr(self, name) for name in field_names(type(self))}, _WHERE,
                     ValueError)
        self._check_contents()
        self.validate()
        #: initial buffer values from a deprecated config (``{}`` when none); read by RelaxedNetwork
        self.initial_buffers = self._check_fitted(atomic_energies, scale)

    # ------------------------------------------------------------------ validation
    def _check_contents(self) -> None:
        """Element types of the list and dict fields; numbers become plain Python ints and floats."""
        def need(key, ok, expected):
            if not ok:
                value = getattr(self, key)
                raise ValueError(f"{_WHERE}: {key} must be {expected}, got {value!r} ({type(value).__name__})")

        for name in field_names(type(self)):
            kind = field_type(type(self), name)
            if kind in (int, float):
                setattr(self, name, kind(getattr(self, name)))
        need("species", all(is_int(z) for z in self.species), "a list of atomic numbers (ints)")
        self.species = [int(z) for z in self.species]
        need("node_features", all(isinstance(k, str) and isinstance(v, str) for k, v in self.node_features.items()),
             "a dict of feature name (str) to irreps (str)")
        self.node_features = dict(self.node_features)
        need("frame", len(self.frame) == 3 and all(
            isinstance(r, (list, tuple)) and len(r) == 3 and all(is_number(x) for x in r) for r in self.frame),
             "a 3x3 nested list of numbers")
        self.frame = [[float(x) for x in row] for row in self.frame]

    def validate(self) -> None:
        """Check values that types alone do not constrain; raise ``ValueError`` naming the key."""
        def fail(key, expected):
            raise ValueError(f"{_WHERE}: {key} must be {expected}, got {getattr(self, key)!r}")

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
            if parse_irreps("irreps_out", self.irreps_out, _WHERE).dim == 0:
                fail("irreps_out", "non-empty irreps")
        if self.graph_reduce not in _GRAPH_REDUCE:
            fail("graph_reduce", f"one of {_GRAPH_REDUCE}")
        if parse_irreps("irreps_hidden", self.irreps_hidden, _WHERE).dim == 0:
            fail("irreps_hidden", "non-empty irreps")
        for key, minimum in (("num_layers", 1), ("lmax", 0), ("num_radial_basis", 1), ("radial_neurons", 1),
                             ("num_radial_layers", 0), ("num_species_features", 0)):
            if getattr(self, key) < minimum:
                fail(key, "a non-negative int" if minimum == 0 else f"at least {minimum}")
        if self.radial_basis not in RADIAL_BASES:
            fail("radial_basis", f"one of {RADIAL_BASES}")
        if not (math.isfinite(self.num_neighbors) and self.num_neighbors > 0):
            fail("num_neighbors", "a positive number")
        if is_int(self.irreps_relaxed):
            if self.irreps_relaxed < 0:
                fail("irreps_relaxed", "a non-negative int L or an irreps string")
        else:
            parse_irreps("irreps_relaxed", self.irreps_relaxed, _WHERE)
        if self.relax_at not in RELAX_AT:
            fail("relax_at", f"one of {RELAX_AT}")
        for name, irreps in self.node_features.items():
            if not name:
                raise ValueError(f"{_WHERE}: node_features names must be non-empty strings")
            if parse_irreps(f"node_features[{name!r}]", irreps, _WHERE).dim == 0:
                raise ValueError(f"{_WHERE}: node_features[{name!r}] must be non-empty irreps")
        frame = self.frame
        for i in range(3):
            for j in range(3):
                dot = sum(frame[i][k] * frame[j][k] for k in range(3))
                if not math.isfinite(dot) or abs(dot - (1.0 if i == j else 0.0)) > 1e-6:
                    fail("frame", "an orthogonal 3x3 matrix (rows orthonormal to 1e-6)")

    def _check_fitted(self, atomic_energies, scale) -> dict:
        """The deprecated init-only ``atomic_energies`` / ``scale``, checked, as initial buffer values."""
        fitted = {}
        if atomic_energies is not None:
            if not isinstance(atomic_energies, (list, tuple)) or not all(is_number(e) for e in atomic_energies):
                raise ValueError(f"{_WHERE}: atomic_energies must be a list of numbers or None, "
                                 f"got {atomic_energies!r}")
            if len(atomic_energies) != len(self.species):
                raise ValueError(f"{_WHERE}: atomic_energies must have one entry per species "
                                 f"({len(self.species)}), got {len(atomic_energies)}")
            fitted["atomic_energies"] = [float(e) for e in atomic_energies]
        if scale is not None:
            if not is_number(scale):
                raise ValueError(f"{_WHERE}: scale must be a number, got {scale!r} ({type(scale).__name__})")
            fitted["scale"] = float(scale)
        for key, value in fitted.items():
            if not all(math.isfinite(v) for v in (value if isinstance(value, list) else [value])):
                raise ValueError(f"{_WHERE}: {key} must be finite, got {value!r}")
        if fitted:
            warnings.warn(
                f"{_WHERE}: {sorted(fitted)} are no longer config fields; the model keeps them in its buffers "
                f"(set them with RelaxedNetwork.set_atomic_energies / set_scale)", DeprecationWarning, stacklevel=4,
            )
        return fitted

    # ------------------------------------------------------------------ (de)serialisation
    @property
    def frame_is_identity(self) -> bool:
        return self.frame == _IDENTITY

    @classmethod
    def known_keys(cls) -> List[str]:
        """Every key :meth:`from_dict` reads: the fields, the former fitted fields and the deprecated names."""
        return field_names(cls) + list(FITTED_KEYS) + list(cls.RENAMES)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "RelaxedNetworkConfig":
        """Build a config from a dict; unknown keys or wrong types raise ``ValueError`` naming the key.

        Missing keys take their defaults (``species`` is required). Deprecated names (``layers``
        for ``num_layers``, ``radial_layers`` for ``num_radial_layers``) are read with a
        ``DeprecationWarning``, as are the former fields ``atomic_energies`` and ``scale`` (see the
        class notes).
        """
        if not isinstance(d, dict):
            raise ValueError(f"{_WHERE}.from_dict: expected a dict, got {type(d).__name__}")
        d = cls._prepared(d)
        check_keys(d, field_names(cls) + list(FITTED_KEYS), f"{_WHERE}.from_dict")
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"{_WHERE}.from_dict: missing required key(s) {missing}")
        return cls(**d)  # __post_init__ checks types and values


def current_keys(stored: Mapping[str, Any]) -> Dict[str, Any]:
    """A stored config (a model file's) with former names replaced and former fitted fields dropped.

    Files keep the names they were written with; reading them is not a use of a deprecated name,
    so nothing is warned. The fitted values are in the file's ``state_dict`` as buffers. Keys
    added since (:data:`_ABSENT_IN_OLDER_FILES`) take the value the file's model was built with.
    """
    out = {k: v for k, v in stored.items() if k not in FITTED_KEYS}
    for key, value in _ABSENT_IN_OLDER_FILES.items():
        out.setdefault(key, value)
    for old, new in _RENAMED.items():
        if old in out and new not in out:
            out[new] = out.pop(old)
    return out
