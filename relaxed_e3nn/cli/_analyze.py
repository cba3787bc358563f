"""``relaxed-e3nn analyze MODEL``: the symmetry a trained relaxed model kept and the breaking it learned.

The parent (the input's symmetry, breaking is measured beyond it) is, in order: ``--within``, else
the parent stored in the model file by training (``model.metadata["symmetry"]``), else none (O(3)).
A ``--within`` that disagrees with the stored parent or with the ``--inputs`` structures (e.g. a group
name, which means the standard frame, for structures in a rotated frame) gives a warning saying how
to pass the frame.
"""
import argparse
import os
import sys

__all__ = ["add_parser", "run"]

# relaxed_e3nn (torch, e3nn, ase) is imported inside the functions: every subcommand module is
# imported to build the parser, and ``relaxed-e3nn --version`` / ``--help`` must not pay for it

_SAME_GROUP_TOL = 0.05  # entrywise, for groups of rattled structures (their elements move with symprec)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "analyze",
        help="report the residual symmetry group and the symmetry breaking learned by a relaxed model",
        description="Find the largest point group that leaves every significant relaxed weight of MODEL "
                    "invariant (within the input's symmetry: --within, else the parent stored in the model "
                    "file), the tolerance scan, the per-layer breaking spectrum and its significance, the "
                    "stored validated decision, and print them as text.",
    )
    parser.add_argument("model", help="model file (relaxed_e3nn.save)")
    parser.add_argument("--within", default=None, metavar="GROUP|STRUCTURE",
                        help="the input's symmetry: a point group name in the standard frame (Oh, D4h, "
                             "Cinfv, ...) or a structure file read with ase whose (ideal parent) point "
                             "group is used, in the structure's own frame. Default: the parent stored in "
                             "the model file")
    parser.add_argument("--symprec", type=float, default=None,
                        help="symmetry tolerance in Å for --within STRUCTURE (default: a symprec scan that "
                             "finds the ideal parent of a rattled structure)")
    parser.add_argument("--inputs", default=None, metavar="FILE",
                        help="structures (ase-readable, all frames) the model is applied to, e.g. held-out "
                             "data: checked against --within and used for the model's equivariance error "
                             "under the named group")
    parser.add_argument("--tol", type=float, default=1e-3,
                        help="relative tolerance of the residual group and of the noise floor, relative to "
                             "|theta| (default 1e-3)")
    parser.add_argument("--atol", type=float, default=0.0,
                        help="absolute floor of the residual-group bound, in the units of theta (default 0)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the report as JSON to FILE")
    parser.add_argument("--plot", default=None, metavar="FILE.png",
                        help="write the breaking spectrum to FILE.png and the weights as spherical "
                             "functions to FILE_signal.png")
    parser.set_defaults(func=run)
    return parser


def _warn(message: str) -> None:
    print(f"relaxed-e3nn analyze: warning: {message}", file=sys.stderr)


def _read_structures(path: str, option: str) -> list:
    """Every structure in ``path`` (the reader of ``train`` / ``evaluate`` / ``predict``)."""
    # lazy: CLI startup time (--version / --help must not import torch, ase)
    from relaxed_e3nn.train import read_atoms

    return [atoms for atoms, _ in read_atoms(path, where=option)]


def _parent_of(atoms, symprec):
    """The ideal parent of a (possibly rattled) structure: a symprec scan unless ``symprec`` is given."""
    # lazy: CLI startup time (--version / --help must not import torch, ase)
    from relaxed_e3nn.groups import parent_group_of

    found = parent_group_of(atoms, symprec=symprec)
    if symprec is None:
        print(f"parent of the structure (symprec scan): {found.summary()}")
        if not found.has_symmetry:
            _warn("the --within structure has no symmetry (no group above C1 is stable over the symprec scan): "
                  "breaking is measured beyond C1, i.e. not at all; pass the ideal structure or a group name")
    return found.group


def _within(spec, symprec):
    """The ``--within`` group (None when not given): a group name, else a structure file."""
    if spec is None:
        return None
    # lazy: CLI startup time (--version / --help must not import torch, ase)
    from relaxed_e3nn.groups import point_group

    try:
        return point_group(spec)
    except ValueError as name_error:
        if not os.path.exists(spec):
            raise ValueError(f"--within: {spec!r} is neither a point group name nor an existing structure file "
                             f"({name_error})") from None
    return _parent_of(_read_structures(spec, "--within")[0], symprec)


def _contains(outer, inner) -> bool:
    try:
        return bool(inner.is_subgroup_of(outer, tol=_SAME_GROUP_TOL))
    except (ValueError, NotImplementedError):
        return False


def _check_within(within, spec, stored, structures) -> None:
    """Warn when ``--within`` disagrees with the stored parent or with the input structures."""
    # lazy: CLI startup time (--version / --help must not import torch, ase)
    from relaxed_e3nn.symmetry import group_label

    how = ("pass the ideal structure in the data frame as --within FILE (its group is taken in the file's "
           "own frame), or omit --within to use the parent stored in the model file")
    if stored is not None and not (_contains(stored, within) and _contains(within, stored)):
        _warn(f"--within {spec} ({group_label(within)}) disagrees with the parent stored in the model file "
              f"({group_label(stored)}); {how}")
    if structures:
        # lazy: CLI startup time (--version / --help must not import torch, ase)
        from relaxed_e3nn.groups import parent_group_of

        found = parent_group_of(structures[0])
        if not _contains(found.group, within):
            frame_hint = " (a group name means the standard frame)" if not os.path.exists(spec) else ""
            _warn(f"--within {spec} ({group_label(within)}){frame_hint} is not a symmetry of the --inputs "
                  f"structures, whose parent is {group_label(found.group)} ({found.summary()}); {how}")


def _equivariance(model, structures, group):
    # lazy: CLI startup time (--version / --help must not import torch, ase)
    from relaxed_e3nn.symmetry import model_equivariance_error

    try:
        return model_equivariance_error(model, structures, group)
    except TypeError as err:
        _warn(f"no equivariance error for this model: {err}")
        return None


def run(args) -> int:
    # lazy: CLI startup time (--version / --help must not import torch, ase)
    import relaxed_e3nn
    from relaxed_e3nn.symmetry import SymmetryReport

    if args.plot and os.path.splitext(args.plot)[1].lower() != ".png":
        raise ValueError(f"--plot must name a .png file, got {args.plot!r}")
    if not (0 < args.tol < 1):
        raise ValueError(f"--tol must be in (0, 1), got {args.tol}")
    if not args.atol >= 0:
        raise ValueError(f"--atol must be >= 0, got {args.atol}")
    within = _within(args.within, args.symprec)
    structures = _read_structures(args.inputs, "--inputs") if args.inputs else []
    model = relaxed_e3nn.load(args.model)
    report = SymmetryReport(model, within=within, tol=args.tol, atol=args.atol)
    if within is not None:
        _check_within(within, args.within, report.stored_parent, structures)
    if structures:
        report.equivariance = _equivariance(model, structures, report.residual.group)
    print(report.text())
    if args.json:
        report.to_json(args.json)
        print(f"\nwrote {args.json}")
    if args.plot:
        # lazy: CLI startup time (--version / --help must not import torch, ase)
        from relaxed_e3nn.symmetry import plot_signal

        root = os.path.splitext(args.plot)[0]
        report.plot_spectrum(args.plot)
        signal = root + "_signal.png"
        plot_signal(model, signal, group=report.residual.group)
        print(f"wrote {args.plot} and {signal}")
    return 0
