"""``relaxed-e3nn analyze MODEL``: the symmetry a trained relaxed model kept and the breaking it learned."""
import argparse
import os

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "analyze",
        help="report the residual symmetry group and the symmetry breaking learned by a relaxed model",
        description="Find the largest point group that leaves every relaxed weight of MODEL invariant "
                    "(optionally within the input's symmetry), the per-layer breaking spectrum and its "
                    "significance, and print them as text.",
    )
    parser.add_argument("model", help="model file (relaxed_e3nn.save)")
    parser.add_argument("--within", default=None, metavar="GROUP|STRUCTURE",
                        help="the input's symmetry: a point group name (Oh, D4h, Cinfv, ...) or a structure "
                             "file read with ase whose point group is used")
    parser.add_argument("--symprec", type=float, default=0.01,
                        help="symmetry tolerance in Å for --within STRUCTURE (default 0.01)")
    parser.add_argument("--tol", type=float, default=1e-3,
                        help="relative tolerance of the residual group (default 1e-3)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the report as JSON to FILE")
    parser.add_argument("--plot", default=None, metavar="FILE.png",
                        help="write the breaking spectrum to FILE.png and the weights as spherical "
                             "functions to FILE_signal.png")
    parser.set_defaults(func=run)
    return parser


def _within(spec, symprec):
    if spec is None:
        return None
    from relaxed_e3nn.groups import point_group

    try:
        return point_group(spec)
    except ValueError as name_error:
        if not os.path.exists(spec):
            raise ValueError(f"--within: {spec!r} is neither a point group name nor an existing structure file "
                             f"({name_error})") from None
    import ase.io

    from relaxed_e3nn.groups import point_group_of

    try:
        atoms = ase.io.read(spec)
    except Exception as err:  # ase raises many types for unreadable files
        raise ValueError(f"--within: cannot read structure file {spec!r}: {err}") from err
    return point_group_of(atoms, symprec=symprec)


def run(args) -> int:
    import relaxed_e3nn
    from relaxed_e3nn.symmetry import SymmetryReport

    if args.plot and os.path.splitext(args.plot)[1].lower() != ".png":
        raise ValueError(f"--plot must name a .png file, got {args.plot!r}")
    within = _within(args.within, args.symprec)
    model = relaxed_e3nn.load(args.model)
    report = SymmetryReport(model, within=within, tol=args.tol)
    print(report.text())
    if args.json:
        report.to_json(args.json)
        print(f"\nwrote {args.json}")
    if args.plot:
        from relaxed_e3nn.symmetry import plot_signal, plot_spectrum

        root = os.path.splitext(args.plot)[0]
        significant = {(r.layer, r.irrep) for r in report.significance if r.significant}
        beyond = report.within.schoenflies if report.within is not None else "O3"
        plot_spectrum(report.spectrum, args.plot, title=f"breaking beyond {beyond}", significant=significant)
        signal = root + "_signal.png"
        plot_signal(model, signal, group=report.residual.group)
        print(f"wrote {args.plot} and {signal}")
    return 0
