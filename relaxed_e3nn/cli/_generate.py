"""``relaxed-e3nn generate NAME --out FILE``: write a generated dataset as extxyz (atomically)."""
import argparse
import inspect
import sys

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "generate",
        help="write a seeded dataset with known symmetry breaking (extxyz)",
        description="Write a generated dataset as extended XYZ. Generator options are given as "
                    "--option KEY=VALUE (values parsed as YAML, e.g. phase=R3m, E=[0,0,1]); "
                    "--list shows the generators and their options.",
    )
    parser.add_argument("name", nargs="?", help="generator name (see --list)")
    parser.add_argument("--out", help="output file (.xyz / .extxyz)")
    parser.add_argument("--num-samples", "--n", dest="num_samples", type=int, default=None,
                        help="number of samples (generator default; --n is its deprecated spelling)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                        help="a generator option (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the generators and their options")
    parser.set_defaults(func=run)
    return parser


def _options_of(function):
    """Keyword options of a generator other than num_samples and seed, with their defaults."""
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if name not in ("num_samples", "seed") and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def _parse_options(tokens, function, name):
    # lazy: CLI startup time (--version / --help must not import torch, ase)
    import yaml

    known = _options_of(function)
    options = {}
    for token in tokens:
        if "=" not in token:
            raise ValueError(f"--option must look like KEY=VALUE, got {token!r}")
        key, raw = token.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in known:
            raise ValueError(f"generator {name!r} has no option {key!r}; options: {', '.join(known)}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        options[key] = value
    return options


def run(args) -> int:
    # lazy: CLI startup time (--version / --help must not import torch, ase)
    from relaxed_e3nn.data.generators import GENERATORS

    if args.list:
        for name, function in GENERATORS.items():
            doc = inspect.getdoc(function) or ""
            print(f"{name}: {doc.splitlines()[0] if doc else ''}")
            for key, default in _options_of(function).items():
                print(f"    {key} = {default!r}")
        return 0
    if args.name is None:
        raise ValueError(f"NAME is required; one of {', '.join(GENERATORS)}")
    if args.name not in GENERATORS:
        raise ValueError(f"unknown generator {args.name!r}; known: {', '.join(GENERATORS)}")
    if not args.out:
        raise ValueError("--out FILE is required")
    function = GENERATORS[args.name]
    kwargs = _parse_options(args.option, function, args.name)
    if args.num_samples is not None:
        kwargs["num_samples"] = args.num_samples
    try:
        structures = function(seed=args.seed, **kwargs)
    except TypeError as err:  # a wrongly typed option: report it like any other bad value
        raise ValueError(f"generator {args.name!r}: {err}") from None
    if not isinstance(structures, list):
        raise ValueError(f"generator {args.name!r} does not produce a list of ase.Atoms; "
                         "it cannot be written as extxyz")

    # lazy: CLI startup time (--version / --help must not import torch, ase)
    import ase.io

    from relaxed_e3nn._atomic import atomic_write

    with atomic_write(args.out, mode="w") as handle:
        ase.io.write(handle, structures, format="extxyz")
    print(f"wrote {len(structures)} structures from {args.name!r} (seed {args.seed}) to {args.out}",
          file=sys.stderr)
    return 0
