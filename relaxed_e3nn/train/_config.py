"""Training configurations (:class:`TrainConfig`, :class:`DynamicsConfig`): dataclasses checked by
the package's one config machinery (:mod:`relaxed_e3nn._settings`), YAML files, ``--a.b value``
overrides."""
import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import yaml

from relaxed_e3nn._checks import DTYPES, ORDINARY_OPTIMIZERS, THETA_OPTIMIZERS, check_choice, is_int
from relaxed_e3nn._settings import (DictConfig, check_fields, check_keys, check_known, check_type, field_names,
                                    field_type)
from relaxed_e3nn.models import RelaxedNetworkConfig
from relaxed_e3nn.train._targets import DEFAULT_LOSS_WEIGHTS, ENERGY_TARGETS

__all__ = ["TrainConfig", "DataConfig", "OptimConfig", "SymmetryConfig", "DynamicsConfig", "load_config",
           "apply_overrides", "parse_overrides", "TASKS", "SCHEDULERS", "DEFAULT_LOSS_WEIGHTS", "config_defaults"]

#: values of a config's ``task`` (absent: a RelaxedNetwork on structures)
TASKS = ("box_dynamics",)
#: learning-rate schedules
SCHEDULERS = ("plateau", "cosine", "none")


@dataclass
class DataConfig:
    """Where the structures come from and which of their properties are targets.

    Attributes
    ----------
    train : str, dict or list
        A file (extxyz, CIF, anything ase reads, or a pymatgen ``.json``), a generator
        ``{"generator": NAME, **kwargs}``, a file with options ``{"path": ..., "format": ...,
        "index": ...}``, or a list of these (concatenated).
    val, test : same as ``train``, optional
        Given sets; when absent they are split off ``train`` by ``seed``.
    val_fraction, test_fraction : float
        Fractions of ``train`` held out when ``val`` / ``test`` are not given.
    format : str, optional
        ase format name for every file (guessed from the suffix otherwise).
    index : str
        ase index of the frames to read from each file (``":"`` = all).
    energy_key, forces_key, stress_key : str, optional
        Names of the reference values in ``atoms.info`` / ``atoms.arrays`` (e.g. ``REF_energy``);
        by default the values stored by the file's calculator.
    node_targets, graph_targets : list of str
        Per-atom / per-graph targets of a ``node`` / ``graph`` model, in the order their
        components are concatenated into the model output.
    symmetrize : str or dict, optional
        A point group (a name in the standard frame, or ``{"group": NAME, "frame": 3x3}`` /
        ``{"group": NAME, "axes": [principal, secondary]}``): every structure of ``train`` is
        followed by its images under the group (:func:`relaxed_e3nn.data.symmetrize`, targets
        transformed with them, ``info["orbit_id"]`` set), so that the training set is exactly
        invariant under it.
    """

    train: Any = None
    val: Any = None
    test: Any = None
    val_fraction: float = 0.1
    test_fraction: float = 0.0
    format: Optional[str] = None
    index: str = ":"
    energy_key: Optional[str] = None
    forces_key: Optional[str] = None
    stress_key: Optional[str] = None
    node_targets: List[str] = field(default_factory=list)
    graph_targets: List[str] = field(default_factory=list)
    symmetrize: Union[str, Dict[str, Any], None] = None


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule.

    Ordinary weights use Adam, AdamW or SGD (``name``); the relaxed weights θ get the equivariant treatment of
    :func:`relaxed_e3nn.nn.make_optimizer` (per-irrep-block second moments or plain SGD, and
    the proximal group-lasso step of weight ``theta_penalty``). Before every step the whole
    gradient is scaled down to norm ``grad_clip`` when it is longer (a scalar factor: θ's
    updates stay equivariant); ``None``: no clipping. The default 1.0 keeps the outlier
    gradients of an untrained model's first steps from derailing the run (docs/training.rst,
    "Model size and CPU time").
    """

    name: str = "adam"
    lr: float = 1e-2
    weight_decay: float = 0.0
    theta_lr: Optional[float] = None
    theta_optimizer: str = "irrep_adam"
    theta_penalty: float = 0.0
    scheduler: str = "plateau"
    lr_factor: float = 0.5
    lr_patience: int = 10
    min_lr: float = 0.0
    grad_clip: Optional[float] = 1.0


@dataclass
class SymmetryConfig:
    """Validated symmetry breaking of a relaxed model (:mod:`relaxed_e3nn.train._symmetry`).

    Attributes
    ----------
    validate : bool
        After training, decide from held-out data which symmetry breaking is real
        (:func:`relaxed_e3nn.symmetry.validate_breaking`) and project the model onto the validated
        group before it is saved. Ignored for strict models (nothing to validate).
    within : str or dict, optional
        The parent group: a group name (standard frame), ``{"group": NAME, "frame": 3x3}`` or
        ``{"group": NAME, "axes": [principal, secondary]}``, or the path of an ideal structure
        file (its group from a symprec scan, :func:`relaxed_e3nn.groups.parent_group_of`).
        Default: the structures' ``info["parent_group"]``, else O(3).
    margin : float
        :math:`\\delta`: a symmetry is given up only when the held-out data show (95% lower
        bound) that it costs more than this relative loss excess.
    impose : str or dict, optional
        A group (as ``within``) imposed from the start: every θ is projected onto its invariant
        subspace at initialisation and after every optimizer step.
    finetune_steps : int, optional
        Equal fine-tune budget (optimizer steps) of every candidate and of the free model, at a
        tenth of the run's final learning rate; default 2% of the run's steps, within 10..20.
    fraction : float
        Share of ``data.train`` held out as the selection split of the decision (never trained on,
        never used for early stopping).
    parent_tol : float
        RMS displacement (Å) within which the parent must map each training structure onto itself
        (:func:`relaxed_e3nn.groups.check_parent`).
    min_blocks : int
        Fewer evidence blocks than this in the selection split support no breaking: the parent is kept.
    restricted_fraction : float
        Share of training steps that train the parent-symmetric restriction (θ projected for the
        step: :meth:`relaxed_e3nn.symmetry.ThetaProjector.restricted`); 0: off. Used when
        ``validate`` is on and no group is imposed.
    """

    validate: bool = True
    within: Union[str, Dict[str, Any], None] = None
    margin: float = 0.05
    impose: Union[str, Dict[str, Any], None] = None
    finetune_steps: Optional[int] = None
    fraction: float = 0.1
    parent_tol: float = 0.3
    min_blocks: int = 10
    restricted_fraction: float = 0.5


@dataclass
class TrainConfig(DictConfig):
    """Everything a training run needs; ``TrainConfig.from_dict(yaml.safe_load(file))``.

    Attributes
    ----------
    output_dir : str
        Directory for the checkpoint, metrics (CSV, JSON), loss curve and final model.
    seed : int
        Seeds the model initialisation, the data split and the per-epoch shuffles
        (shuffle of epoch e is a function of ``(seed, e)`` only, so resumed runs repeat it).
    dtype : {"float32", "float64"}
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:K"``.
    epochs : int
        Maximum number of epochs.
    batch_size : int
        Structures per optimisation step (the *global* batch under data parallelism).
    eval_batch_size : int, optional
        Structures per evaluation batch (``batch_size`` by default).
    patience : int, optional
        Early stopping: stop after this many epochs without a better validation loss.
    ema_decay : float, optional
        Exponential moving average of the weights (e.g. 0.99); evaluation and the final
        model use the averaged weights.
    fit_atomic_energies : bool
        Fit per-species energy shifts by per-atom least squares on the training set, before
        training and again after every epoch for the current network, and store them in the
        model's ``atomic_energies`` (when the model predicts energies and neither ``E0s`` nor
        ``model.atomic_energies`` is given).
    E0s : dict, optional
        Isolated-atom reference energies (eV), keyed by element symbol or atomic number
        (``{Cu: -0.007, 29: ...}``), one for every species of the model: the model's
        ``atomic_energies``, fixed (no shift fit), as MACE's ``E0s``.
    fit_scale : bool
        Set the model's output ``scale`` from the training set when ``model.scale`` is not
        given, so that the untrained model's forces (or node / graph outputs, or per-atom
        energy spread) are as large in RMS as the targets (the network's own size clamped to [0.1, 10]).
    strict : bool
        Train the strictly equivariant twin (``model.relaxed = False``) of the same model.
    resume : bool
        Continue from ``output_dir/checkpoint.pt``.
    max_time : float, optional
        Wall-clock limit of the run in seconds. Checked after every epoch: once exceeded, the
        run stops cleanly after that epoch, writing the checkpoint, ``model.pt`` and the test
        metrics as at the end; ``resume`` continues it (with a new limit for that run).
    progress : {"auto", True, False}
        tqdm progress bars (``auto``: only when stderr is a terminal).
    task : str, optional
        ``"box_dynamics"`` hands the whole config to
        :func:`relaxed_e3nn.train.train_dynamics`.
    data : DataConfig
    model : dict
        Keyword arguments of :class:`relaxed_e3nn.models.RelaxedNetworkConfig`;
        ``species`` and ``cutoff`` default to the data's species and 5 Å.
    loss : dict of str to float
        Loss weights: ``energy`` (per-atom energy), ``forces``, ``stress`` and one per
        entry of ``data.node_targets`` / ``data.graph_targets`` (1.0 when absent).
    optim : OptimConfig
    symmetry : SymmetryConfig
    """

    output_dir: str = "runs/train"
    seed: int = 0
    dtype: str = "float32"
    device: str = "auto"
    epochs: int = 100
    batch_size: int = 8
    eval_batch_size: Optional[int] = None
    patience: Optional[int] = None
    ema_decay: Optional[float] = None
    fit_atomic_energies: bool = True
    E0s: Optional[Dict[Any, float]] = None
    fit_scale: bool = True
    strict: bool = False
    resume: bool = False
    max_time: Optional[float] = None
    progress: Union[bool, str] = "auto"
    task: Optional[str] = None
    data: DataConfig = field(default_factory=DataConfig)
    model: Dict[str, Any] = field(default_factory=dict)
    loss: Dict[str, float] = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=OptimConfig)
    symmetry: SymmetryConfig = field(default_factory=SymmetryConfig)

    RENAMES = {"out_dir": "output_dir"}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, config: Dict[str, Any]) -> "TrainConfig":
        """Build and validate a config from a nested dict (unknown keys raise with a suggestion)."""
        if isinstance(config, TrainConfig):
            return copy.deepcopy(config)
        config = cls._prepared(config)
        sections = {"data": DataConfig, "optim": OptimConfig, "symmetry": SymmetryConfig}
        kwargs = {}
        for key, value in config.items():
            check_known(key, field_names(cls), "config")
            if key in sections:
                if value is None:
                    value = {}
                if not isinstance(value, dict):
                    raise TypeError(f"config: '{key}' must be a mapping, got {type(value).__name__}")
                for sub_key, sub_value in value.items():
                    check_known(sub_key, field_names(sections[key]), f"config section '{key}'")
                    check_type(f"{key}.{sub_key}", sub_value, field_type(sections[key], sub_key))
                kwargs[key] = sections[key](**value)
            else:
                check_type(key, value, field_type(cls, key))
                kwargs[key] = value
        return cls._built(kwargs)

    def validate(self) -> None:
        """Check values that types alone do not constrain; raise ``ValueError`` naming the key."""
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"config: task must be 'box_dynamics' or absent, got {self.task!r}")
        check_choice("dtype", self.dtype, DTYPES, "config")
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")
        ):
            raise ValueError(f"config: device must be 'auto', 'cpu', 'cuda' or 'cuda:K', got {self.device!r}")
        for key in ("epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"config: {key} must be >= 1, got {getattr(self, key)}")
        if self.eval_batch_size is not None and self.eval_batch_size < 1:
            raise ValueError(f"config: eval_batch_size must be >= 1, got {self.eval_batch_size}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"config: patience must be >= 1, got {self.patience}")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"config: ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.max_time is not None and not self.max_time > 0:
            raise ValueError(f"config: max_time must be > 0 seconds, got {self.max_time}")
        if self.E0s is not None:
            for key, value in self.E0s.items():
                check_type(f"E0s[{key!r}]", value, float)
        if self.progress not in ("auto", True, False):
            raise ValueError(f"config: progress must be 'auto', true or false, got {self.progress!r}")
        d = self.data
        for key in ("val_fraction", "test_fraction"):
            if not 0.0 <= getattr(d, key) < 1.0:
                raise ValueError(f"config: data.{key} must be in [0, 1), got {getattr(d, key)}")
        if d.val_fraction + d.test_fraction >= 1.0:
            raise ValueError("config: data.val_fraction + data.test_fraction must be < 1")
        for key in ("node_targets", "graph_targets"):
            names = getattr(d, key)
            if any(not isinstance(n, str) for n in names):
                raise TypeError(f"config: data.{key} must be a list of strings, got {names!r}")
            if len(set(names)) != len(names):
                raise ValueError(f"config: data.{key} has repeated names: {names!r}")
        self._validate_optim()
        self._validate_symmetry()
        if self.task is None and self.data.train is None:
            raise ValueError("config: data.train is required (a file, a generator or a list of them)")
        allowed_loss = set(ENERGY_TARGETS) | set(d.node_targets) | set(d.graph_targets)
        for key, weight in self.loss.items():
            check_known(key, sorted(allowed_loss), "config section 'loss' (energy, forces, stress, "
                        "or a name in data.node_targets / data.graph_targets)")
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
                raise ValueError(f"config: loss.{key} must be a number >= 0, got {weight!r}")

    def _validate_optim(self) -> None:
        o = self.optim
        check_choice("optim.name", o.name, ORDINARY_OPTIMIZERS, "config")
        check_choice("optim.theta_optimizer", o.theta_optimizer, THETA_OPTIMIZERS, "config")
        check_choice("optim.scheduler", o.scheduler, SCHEDULERS, "config")
        if o.lr <= 0:
            raise ValueError(f"config: optim.lr must be > 0, got {o.lr}")
        if o.theta_lr is not None and o.theta_lr <= 0:
            raise ValueError(f"config: optim.theta_lr must be > 0, got {o.theta_lr}")
        for key in ("weight_decay", "theta_penalty", "min_lr"):
            if getattr(o, key) < 0:
                raise ValueError(f"config: optim.{key} must be >= 0, got {getattr(o, key)}")
        if not 0.0 < o.lr_factor < 1.0:
            raise ValueError(f"config: optim.lr_factor must be in (0, 1), got {o.lr_factor}")
        if o.lr_patience < 0:
            raise ValueError(f"config: optim.lr_patience must be >= 0, got {o.lr_patience}")
        if o.grad_clip is not None and o.grad_clip <= 0:
            raise ValueError(f"config: optim.grad_clip must be > 0, got {o.grad_clip}")

    def _validate_symmetry(self) -> None:
        s = self.symmetry
        if not s.margin > 0:
            raise ValueError(f"config: symmetry.margin must be > 0, got {s.margin}")
        if s.finetune_steps is not None and s.finetune_steps < 0:
            raise ValueError(f"config: symmetry.finetune_steps must be >= 0, got {s.finetune_steps}")
        if not 0.0 <= s.fraction < 1.0:
            raise ValueError(f"config: symmetry.fraction must be in [0, 1), got {s.fraction}")
        if s.validate and not self.strict and s.fraction == 0.0:
            raise ValueError("config: symmetry.fraction must be > 0 when symmetry.validate is true (the "
                             "decision needs held-out structures); or set symmetry.validate: false")
        if not s.parent_tol > 0:
            raise ValueError(f"config: symmetry.parent_tol must be > 0, got {s.parent_tol}")
        if not (is_int(s.min_blocks) and s.min_blocks >= 1):
            raise ValueError(f"config: symmetry.min_blocks must be an int >= 1, got {s.min_blocks!r}")
        if not 0.0 <= s.restricted_fraction < 1.0:
            raise ValueError(f"config: symmetry.restricted_fraction must be in [0, 1), got {s.restricted_fraction}")
        for key in ("within", "impose"):
            _check_group_spec(f"symmetry.{key}", getattr(s, key))
        _check_group_spec("data.symmetrize", self.data.symmetrize)

    def loss_weight(self, name: str) -> float:
        """Weight of one loss term (defaults: energy 1, forces 10, stress 0, other targets 1)."""
        return float(self.loss.get(name, DEFAULT_LOSS_WEIGHTS.get(name, 1.0)))


def _check_group_spec(key: str, value) -> None:
    """A group given in a config: ``None``, a string, or ``{"group": NAME, "frame" | "axes": ...}``."""
    if value is None or isinstance(value, str):
        return
    known = ("group", "frame", "axes")
    for sub in value:
        check_known(sub, known, f"config: {key}")
    if not isinstance(value.get("group"), str):
        raise ValueError(f"config: {key} must name its group as {{group: NAME, frame: 3x3}} or "
                         f"{{group: NAME, axes: [principal, secondary]}}, got {value!r}")
    if "frame" in value and "axes" in value:
        raise ValueError(f"config: {key} takes 'frame' or 'axes', not both")


_DYNAMICS_MODELS = ("degnn", "egnn")


@dataclass
class DynamicsConfig(DictConfig):
    """A box-dynamics run (``task: box_dynamics``): :func:`relaxed_e3nn.train.train_dynamics`.

    The data are ``box_nbody(num_train + num_val + num_test, ...)`` split in that order (the
    simulator keys below, or a named ``preset``), or outside data: ``data: {train: a.npz, val:
    b.npz, test: c.npz}`` (the keys of ``BoxDynamicsData.from_npz``; the simulator keys and the
    split sizes are then not used).
    Deprecated names still accepted (with a ``DeprecationWarning``): ``out_dir``, ``layers``,
    ``n_bodies``, ``n_train``, ``n_val``, ``n_test``.

    Attributes
    ----------
    task : str
        ``"box_dynamics"``.
    model : {"degnn", "egnn"}
    group : str, optional
        ``"auto"`` (or the box's own group name): the box's group in the box frame; any other
        catalogue name (such as ``"C1"``) in the catalogue's standard frame.
    variant, reduce : str
        DEGNN's orbit embedding and its reduction.
    hidden, num_layers : int
        Width and depth of the network.
    half_widths, planar, interaction, num_bodies, speed, input_frame, target_frame, data_seed
        Options of :func:`relaxed_e3nn.data.generators.box_nbody`.
    num_train, num_val, num_test : int
        Sizes of the three splits.
    epochs, lr, weight_decay, batch_size : training (Adam on the mean squared error)
    seed : int
        Initialisation and shuffling.
    dtype : {"float32", "float64"}
    output_dir : str, optional
        Where ``model.pt`` and then ``metrics.json`` are written (nothing is written without it);
        ``checkpoint.pt`` is written there after every epoch and removed when the run ends.
    data : dict, optional
        ``{"train": PATH, "val": PATH, "test": PATH}`` of ``.npz`` files.
    preset : str, optional
        A named simulator setting of ``BOX_NBODY_PRESETS`` (``"clustered"``); it replaces the
        simulator keys (``data_seed`` still seeds it).
    baseline : {"auto", "none", "free_flight", "reflected"}
        What the network's residual is added to; ``"auto"``: ``"reflected"`` for DEGNN (its group
        must map the box onto itself), ``"free_flight"`` for EGNN. Both need the data's ``dt``.
    normalize : bool
        Scalar normalisation of inputs and residual from training statistics (model buffers).
    coefficient_bound : float, optional
        Bound of the invariant coefficient networks (None: unbounded).
    patience : int, optional
        Stop after this many epochs without a better selection score (None: never).
    grad_clip : float, optional
        Clip the gradient norm (of the loss in units of the residual scale) to this value.
    selection : {"trimmed", "mse"}
        The epoch kept: lowest validation MSE after dropping the ``trim_fraction`` largest
        per-sample errors (at least one sample), or lowest plain validation MSE.
    trim_fraction : float
        Fraction of the validation samples the trimmed score drops.
    resume : bool
        Continue the run whose ``checkpoint.pt`` is in ``output_dir``.
    """

    task: str = "box_dynamics"
    model: str = "degnn"
    group: Optional[str] = "auto"
    variant: str = "pooling"
    reduce: str = "mean"
    hidden: int = 64
    num_layers: int = 4
    half_widths: List[float] = field(default_factory=lambda: [5.0, 4.0, 3.0])
    planar: bool = False
    interaction: str = "coulomb"
    num_bodies: int = 5
    speed: float = 0.5
    input_frame: int = 20
    target_frame: int = 40
    num_train: int = 200
    num_val: int = 200
    num_test: int = 200
    data_seed: int = 0
    epochs: int = 300
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 100
    seed: int = 0
    dtype: str = "float32"
    output_dir: Optional[str] = None
    data: Optional[Dict[str, str]] = None
    preset: Optional[str] = None
    baseline: str = "auto"
    normalize: bool = True
    coefficient_bound: Optional[float] = 1.0
    patience: Optional[int] = None
    grad_clip: Optional[float] = 10.0
    selection: str = "trimmed"
    trim_fraction: float = 0.02
    resume: bool = False

    RENAMES = {"out_dir": "output_dir", "layers": "num_layers", "n_bodies": "num_bodies",
               "n_train": "num_train", "n_val": "num_val", "n_test": "num_test"}

    @classmethod
    def from_dict(cls, config: Dict[str, Any]) -> "DynamicsConfig":
        """Build and validate from a flat mapping (unknown keys raise, listing all of them)."""
        if isinstance(config, DynamicsConfig):
            return copy.deepcopy(config)
        config = cls._prepared(config)
        check_keys(config, field_names(cls), "config")
        check_fields(cls, config)
        return cls._built(config)

    def validate(self) -> None:
        """Check values that types alone do not constrain; raise ``ValueError`` naming the key."""
        check_choice("task", self.task, TASKS, "config")
        check_choice("model", self.model, _DYNAMICS_MODELS, "config")
        check_choice("dtype", self.dtype, DTYPES, "config")
        for key in ("hidden", "num_layers", "num_train", "num_val", "num_test", "epochs", "batch_size",
                    "num_bodies"):
            if getattr(self, key) < 1:
                raise ValueError(f"config: {key} must be a positive integer, got {getattr(self, key)!r}")
        if not self.lr > 0:
            raise ValueError(f"config: lr must be > 0, got {self.lr!r}")
        if self.weight_decay < 0:
            raise ValueError(f"config: weight_decay must be >= 0, got {self.weight_decay!r}")
        check_choice("baseline", self.baseline, ("auto", "none", "free_flight", "reflected"), "config")
        check_choice("selection", self.selection, ("trimmed", "mse"), "config")
        for key in ("patience", "grad_clip", "coefficient_bound"):
            if getattr(self, key) is not None and not getattr(self, key) > 0:
                raise ValueError(f"config: {key} must be positive or null, got {getattr(self, key)!r}")
        if not 0 <= self.trim_fraction < 0.5:
            raise ValueError(f"config: trim_fraction must be in [0, 0.5), got {self.trim_fraction!r}")
        if self.data is not None and sorted(self.data) != ["test", "train", "val"]:
            raise ValueError(f"config: data must map exactly train, val and test to .npz files, got {sorted(self.data)}")


# ---------------------------------------------------------------------- files and flags
def load_config(path: Union[str, Path, None], overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Read a YAML config (or start from ``{}``) and apply dotted-key overrides.

    Returns the raw nested dict; :meth:`TrainConfig.from_dict` validates it (it is not
    validated here because ``task: box_dynamics`` configs belong to another trainer).
    """
    config: Dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} does not exist")
        try:
            config = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"config file {str(path)!r} is not valid YAML: {err}") from None
        if not isinstance(config, dict):
            raise ValueError(f"config file {str(path)!r} must hold a mapping, got {type(config).__name__}")
    return apply_overrides(config, overrides or {})


def apply_overrides(config: Dict[str, Any], overrides: Dict[str, Any]) -> Dict[str, Any]:
    """Return a copy of ``config`` with ``{"model.num_layers": 2, ...}`` set (nested by dots)."""
    config = copy.deepcopy(config)
    for dotted, value in overrides.items():
        keys = dotted.split(".")
        if any(not k for k in keys):
            raise ValueError(f"config override: malformed key {dotted!r}")
        node = config
        for k in keys[:-1]:
            if node.get(k) is None:
                node[k] = {}
            if not isinstance(node[k], dict):
                raise ValueError(f"config override: {dotted!r} sets a key inside {k!r}, which is not a mapping")
            node = node[k]
        node[keys[-1]] = value
    return config


def parse_overrides(tokens: List[str]) -> Dict[str, Any]:
    """Turn ``["--model.num_layers", "2", "--strict", "--lr=0.1"]`` into a dict of dotted keys.

    Values are parsed as YAML (``2`` -> int, ``[a, b]`` -> list, ``null`` -> None); a flag
    without a value is ``True``.
    """
    overrides: Dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or len(token) <= 2:
            raise ValueError(f"unexpected argument {token!r}: config flags look like --key value or --a.b=value")
        key = token[2:]
        if "=" in key:
            key, raw = key.split("=", 1)
            i += 1
        elif i + 1 < len(tokens) and not _looks_like_flag(tokens[i + 1]):
            raw = tokens[i + 1]
            i += 2
        else:
            raw = "true"
            i += 1
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        overrides[key.replace("-", "_")] = value
    return overrides


def _looks_like_flag(token: str) -> bool:
    return token.startswith("--")


def config_defaults() -> Dict[str, Any]:
    """Every training-config key with its default, flattened with dots (``optim.lr``: 0.01).

    The ``model`` section lists ``kind`` (``RelaxedNetwork``; ``NequIP`` / ``MACE`` take a section of
    their own, :func:`~relaxed_e3nn.models.host_model_section`) and the fields of
    :class:`~relaxed_e3nn.models.RelaxedNetworkConfig`
    (a key the trainer completes from the data, ``species`` and ``num_neighbors``, is ``None``:
    taken from the data; ``cutoff`` is the trainer's 5 Å) and the fitted values ``scale`` and
    ``atomic_energies`` (``None``: fitted); ``loss`` the default weights. docs/training.rst's
    "every key" block is generated from this (``scripts/config_defaults.py``) and a test
    compares them.
    """
    out: Dict[str, Any] = {}
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("data", "optim", "symmetry"):
            section = getattr(TrainConfig(), f.name)
            out.update({f"{f.name}.{g.name}": getattr(section, g.name) for g in dataclasses.fields(section)})
        elif f.name not in ("model", "loss"):
            out[f.name] = getattr(TrainConfig(), f.name)
    out["model.kind"] = "RelaxedNetwork"
    for g in dataclasses.fields(RelaxedNetworkConfig):
        default = g.default if g.default is not dataclasses.MISSING else (
            g.default_factory() if g.default_factory is not dataclasses.MISSING else None)
        out[f"model.{g.name}"] = default
    out.update({"model.species": None, "model.cutoff": 5.0, "model.num_neighbors": None,
                "model.scale": None, "model.atomic_energies": None})
    out.update({f"loss.{k}": v for k, v in DEFAULT_LOSS_WEIGHTS.items()})
    return out
