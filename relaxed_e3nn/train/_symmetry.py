r"""Validated symmetry breaking in training: the parent group, an imposed group, the decision.

A relaxed model breaks symmetry only through its relaxed weights :math:`\theta`; on finite data
(MD frames in one orientation, rattled structures) :math:`\theta` also fits noise. The trainer
therefore treats :math:`\theta` as a hypothesis (:func:`relaxed_e3nn.symmetry.validate_breaking`):

1. **Parent.** Resolved once per run (:func:`resolve_parent`): ``symmetry.within`` (a group name,
   a group with its frame, or an ideal structure file, whose group a symprec scan finds), else
   the structures' ``info["parent_group"]`` (written by the generators; they must agree), else
   O(3). A finite or axial parent is checked against the training structures
   (:func:`relaxed_e3nn.groups.check_parent`, RMS displacement after each element within
   ``symmetry.parent_tol``); O(3) is the symmetry of the model at :math:`\theta_\text{breaking}=0`
   and needs no check.
2. **Selection split.** ``symmetry.fraction`` of ``data.train`` is held out before training: never
   trained on, never used for early stopping (orbits kept whole).
3. **Decision.** After training (best or averaged weights loaded) every candidate group and the
   unconstrained model get the same fine-tune (``symmetry.finetune_steps`` steps over the training
   batches, the run's optimizer at a tenth of its final learning rate; by default 2% of the run's steps,
   :func:`finetune_budget`); per-structure selection losses use
   the run's own loss weights (:func:`~relaxed_e3nn.train._targets.structure_losses`).
4. **Blocks.** Held-out losses are averaged within blocks before the bootstrap
   (:func:`block_ids`): contiguous stretches of the file order of ``data.train``
   (:data:`NUM_FILE_BLOCKS` of them; separately per ``info["trajectory"]`` where given), an orbit
   (``info["orbit_id"]``) always within one block, since neighboring MD frames and the images of
   one sample are not independent evidence.
5. **Projection.** :meth:`~relaxed_e3nn.symmetry.BreakingDecision.apply` makes the model exactly
   equivariant under the validated group; the test metrics are computed afterwards.

``symmetry.impose`` instead holds :math:`\theta` in the invariant subspace of a given group from the
start (projected at initialisation and after every optimizer step).
"""
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import ase.io
import numpy as np
import torch

from relaxed_e3nn._atomic import atomic_write
from relaxed_e3nn.data import collate
from relaxed_e3nn.groups import PointGroup, check_parent, frame_from_axes, parent_group_of, point_group
from relaxed_e3nn.symmetry import BreakingDecision, breaking_beyond, project_thetas, validate_breaking
from relaxed_e3nn.train._targets import TargetSpec, structure_losses

__all__ = ["ParentRecord", "group_from_config", "resolve_parent", "block_ids", "structure_loss_fn",
           "validate_trained", "restricted_steps", "symmetry_record", "symmetry_text", "write_symmetry_files", "impose", "finetune_budget",
           "NUM_FILE_BLOCKS", "MAX_CHECKED", "MIN_FINETUNE_STEPS", "MAX_FINETUNE_STEPS", "FINETUNE_LR_FACTOR"]

#: contiguous file-order blocks of ``data.train`` when the structures carry no trajectory or orbit
NUM_FILE_BLOCKS = 20
#: at most this many training structures (evenly spaced) are checked against the parent
MAX_CHECKED = 32
#: bounds of the default fine-tune budget (:func:`finetune_budget`)
MIN_FINETUNE_STEPS, MAX_FINETUNE_STEPS = 10, 20
#: the fine-tune's learning rate relative to the run's final one: a fresh Adam moves every weight
#: by about its learning rate per step, which at the training rate throws a converged model off its
#: minimum and makes the comparison of candidates a lottery
FINETUNE_LR_FACTOR = 0.1


def group_from_config(value, key: str, *, allow_file: bool = False) -> Optional[PointGroup]:
    """A group of the config: ``None``, a name, ``{"group", "frame" | "axes"}``, or (``allow_file``) a
    structure file whose parent group :func:`~relaxed_e3nn.groups.parent_group_of` finds."""
    if value is None:
        return None
    if isinstance(value, dict):
        frame = value.get("frame")
        if "axes" in value:
            axes = value["axes"]
            if not isinstance(axes, (list, tuple)) or not 1 <= len(axes) <= 2:
                raise ValueError(f"config: {key}.axes must be [principal] or [principal, secondary], got {axes!r}")
            frame = frame_from_axes(*axes)
        return point_group(value["group"], frame=frame)
    try:
        return point_group(value)
    except (ValueError, KeyError) as err:
        if allow_file and Path(value).is_file():
            return None  # a structure file: read by resolve_parent
        files = " or an ideal structure file" if allow_file else ""
        raise ValueError(f"config: {key} must be a point-group name{files}, got {value!r} ({err})") from None


@dataclass
class ParentRecord:
    """The run's parent group and how it was found.

    Attributes
    ----------
    group : PointGroup
    source : str
        ``"symmetry.within"``, ``"symmetry.within file"``, ``"info['parent_group']"`` or ``"default"``.
    scan : str or None
        The symprec scan of a structure file (its summary and table).
    check : str or None
        The summary of :func:`~relaxed_e3nn.groups.check_parent` (``None``: not checked).
    check_rms : float or None
        The largest RMS displacement (Å) of the checked structures.
    """

    group: PointGroup
    source: str
    scan: Optional[str] = None
    check: Optional[str] = None
    check_rms: Optional[float] = None

    def to_dict(self) -> Dict[str, Any]:
        return {"group": self.group.schoenflies, "frame": self.group.frame.numpy().tolist(), "source": self.source,
                "scan": self.scan, "check": self.check, "check_rms": self.check_rms}

    def summary(self) -> str:
        line = f"parent group {self.group.schoenflies} (from {self.source})"
        if self.check is not None:
            line += f"; {self.check}"
        elif self.group.schoenflies == "O3":
            line += "; O(3) is the model's own symmetry at zero breaking, not checked"
        return line


def _parent_from_infos(infos: Sequence[dict]) -> Optional[str]:
    names = {str(info["parent_group"]) for info in infos if "parent_group" in info}
    if not names:
        return None
    if len(names) > 1 or any("parent_group" not in info for info in infos):
        raise ValueError(f"data.train: the structures' info['parent_group'] entries disagree ({sorted(names)}, "
                         f"or missing on some); give symmetry.within")
    return names.pop()


def resolve_parent(within, structures: Sequence, tol: float) -> ParentRecord:
    """The parent group of a run (see the module notes), checked against ``structures`` (ase Atoms).

    Raises ``ValueError`` when the parent does not hold within ``tol`` (naming the measured RMS),
    when a ``within`` file has no symmetry, or when the structures' parent groups disagree.
    """
    group = group_from_config(within, "symmetry.within", allow_file=True)
    scan = None
    if group is not None:
        source = "symmetry.within"
    elif within is not None:
        ideal = ase.io.read(str(within), index=0)
        found = parent_group_of(ideal)
        scan = str(found)
        if not found.has_symmetry:
            raise ValueError(f"symmetry.within: the structure in {str(within)!r} has no symmetry "
                             f"({found.summary()}); give a group name or an ideal structure")
        group, source = found.group, "symmetry.within file"
    else:
        name = _parent_from_infos([atoms.info for atoms in structures])
        group, source = (point_group(name), "info['parent_group']") if name else (point_group("O3"), "default")
    record = ParentRecord(group, source, scan=scan)
    if group.schoenflies == "O3" or not structures:
        return record
    picked = np.unique(np.linspace(0, len(structures) - 1, min(len(structures), MAX_CHECKED)).round().astype(int))
    result = check_parent(group, [structures[i] for i in picked], tol, raise_error=False)
    record.check, record.check_rms = result.summary(), float(np.max(result.rms))
    if not result.passed:
        raise ValueError(f"{source}: {result.summary()}; the parent must map every training structure onto "
                         f"itself (give symmetry.within, or raise symmetry.parent_tol if the structures are "
                         f"rattled more)")
    return record


def block_ids(infos: Sequence[dict], indices: Sequence[int], num_source: int) -> List[str]:
    """The evidence block of each held-out structure (``indices`` into ``data.train``, ``infos`` the
    ``info`` of every ``data.train`` structure).

    A block is a run of :data:`NUM_FILE_BLOCKS` contiguous stretches of the file order (within
    ``info["trajectory"]`` where given); the structures of one orbit (``info["orbit_id"]``) all
    count in the block of the orbit's first structure.
    """
    first: Dict[Any, int] = {}
    for i, info in enumerate(infos):
        if "orbit_id" in info:
            first.setdefault(info["orbit_id"], i)
    out = []
    for i in indices:
        info = infos[i]
        where = first.get(info["orbit_id"], i) if "orbit_id" in info else i
        label = f"frames block {int(where) * NUM_FILE_BLOCKS // max(num_source, 1)}"
        out.append(f"trajectory {info['trajectory']}, {label}" if "trajectory" in info else label)
    return out


def finetune_budget(steps: Optional[int], num_steps_trained: int) -> int:
    """``symmetry.finetune_steps``, or by default (``None``) 2% of the run's optimizer steps within
    [:data:`MIN_FINETUNE_STEPS`, :data:`MAX_FINETUNE_STEPS`]: with the usual 5-7 candidates the
    decision then costs at most about a fifth of the training time."""
    if steps is not None:
        return int(steps)
    return int(min(MAX_FINETUNE_STEPS, max(MIN_FINETUNE_STEPS, round(0.02 * num_steps_trained))))


def restricted_steps(num_steps: int, fraction: float, seed: int, epoch: int) -> np.ndarray:
    """Which steps of an epoch train the parent-symmetric restriction (``symmetry.restricted_fraction``).

    A boolean mask, a function of ``(seed, epoch)`` only, so a resumed run repeats it.
    """
    return np.random.default_rng([int(seed), int(epoch), 0x5E57]).random(num_steps) < fraction


def structure_loss_fn(spec: TargetSpec) -> Callable:
    """``loss_fn(model, batch)``: the run's loss of every structure of a batch (``[num_graphs]``)."""

    def loss_fn(model, batch):
        output = model(batch, compute_forces=spec.compute_forces, compute_stress=spec.compute_stress)
        return structure_losses(spec, output, batch)

    return loss_fn


def validate_trained(model, *, spec: TargetSpec, train_batches: Sequence[Sequence], heldout: Sequence,
                     blocks: Sequence, parent: PointGroup, margin: float, finetune_steps: int,
                     optimizer_factory: Callable, eval_batch_size: int, device, seed: int,
                     min_blocks: int) -> Tuple[BreakingDecision, List[str]]:
    """Run :func:`~relaxed_e3nn.symmetry.validate_breaking` on a trained model.

    ``train_batches`` are lists of training graphs (one optimizer step each, used cyclically by the
    fine-tune; all of them are collated once, since the demanded breaking sees every one),
    ``heldout`` the selection graphs with their ``blocks``. Returns the decision and the warnings
    it raised (e.g. too few blocks), for the run's log.
    """
    train = [collate(list(graphs)).to(device=device) for graphs in train_batches]
    held = [collate(list(heldout[i:i + eval_batch_size])).to(device=device)
            for i in range(0, len(heldout), eval_batch_size)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decision = validate_breaking(model, train, held, structure_loss_fn(spec), parent=parent, margin=margin,
                                     finetune_steps=finetune_steps, optimizer_factory=optimizer_factory,
                                     block_ids=list(blocks), seed=seed, min_blocks=min_blocks)
    return decision, [str(w.message) for w in caught]


def _jsonable(value):
    """``value`` with non-finite floats as ``None`` and tuples as lists (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def symmetry_record(parent: ParentRecord, *, model, decision: Optional[BreakingDecision] = None,
                    imposed: Optional[PointGroup] = None, test_before: Optional[Dict[str, float]] = None,
                    note: Optional[str] = None, time_s: Optional[float] = None) -> Dict[str, Any]:
    """The one record of a run's symmetry, written to ``symmetry.json``, ``metrics.json["symmetry"]``
    and the model file's ``metadata["symmetry"]``.

    Keys: ``parent`` (:meth:`ParentRecord.to_dict`), ``imposed`` (the group name and frame, or
    ``None``), ``decision`` (:meth:`~relaxed_e3nn.symmetry.BreakingDecision.to_dict`, or ``None``),
    ``chosen`` and ``validated`` (the decision's, at the top level as the symmetry report reads them),
    ``group`` (the group the saved model is exactly equivariant under: the validated one, else the
    imposed one, else ``None``), ``breaking_beyond`` (per relaxed weight, relative, for that group),
    ``test_before_projection`` (test metrics before the decision was applied), ``time_s`` (wall time
    of the decision) and ``note``.
    """
    held = decision.chosen if decision is not None else imposed
    return _jsonable({
        "parent": parent.to_dict(),
        "imposed": None if imposed is None else {"group": imposed.schoenflies, "frame": imposed.frame.numpy().tolist()},
        "decision": None if decision is None else decision.to_dict(),
        "chosen": None if decision is None else decision.to_dict()["chosen"],
        "validated": None if decision is None else decision.validated,
        "group": None if held is None else {"group": held.schoenflies, "frame": held.frame.numpy().tolist()},
        "breaking_beyond": None if held is None else breaking_beyond(model, held, relative=True),
        "test_before_projection": test_before,
        "time_s": time_s,
        "note": note,
    })


def symmetry_text(parent: ParentRecord, decision: Optional[BreakingDecision], imposed: Optional[PointGroup],
                  note: Optional[str] = None) -> str:
    """``symmetry.txt``: the parent (and its scan), the decision's summary and table."""
    lines = [parent.summary()]
    if parent.scan:
        lines += ["symprec scan of symmetry.within:", parent.scan]
    if imposed is not None:
        lines.append(f"imposed: {imposed.schoenflies} (θ held in its invariant subspace throughout training)")
    if decision is not None:
        lines += [decision.summary(), decision.table()]
    if note:
        lines.append(note)
    return "\n".join(lines) + "\n"


def write_symmetry_files(out: Path, record: Dict[str, Any], text: str) -> None:
    """``out/symmetry.json`` (the record) and ``out/symmetry.txt`` (the text), atomically."""
    with atomic_write(out / "symmetry.json", "w") as handle:
        json.dump(record, handle, indent=2, allow_nan=False)
    with atomic_write(out / "symmetry.txt", "w") as handle:
        handle.write(text)


def impose(model: torch.nn.Module, group: Optional[PointGroup]) -> None:
    r""":math:`\theta \leftarrow P_H\theta` for every relaxed weight (nothing when ``group`` is None)."""
    if group is not None:
        project_thetas(model, group)
