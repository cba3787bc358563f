"""``relaxed-e3nn predict MODEL DATA --out FILE``: write a model's predictions to extended XYZ."""
import argparse

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict", help="write a trained model's predictions for some structures to extxyz",
        description="Energies and forces (and, with --stress, stresses of periodic structures) of an energy "
                    "model become the frames' energy=/forces fields; a node model's output is stored as the "
                    "per-atom column node_output, a graph model's as the frame key graph_output. The output "
                    "file is written atomically.",
    )
    parser.add_argument("model", help="model file written by training (relaxed_e3nn.save): a RelaxedNetwork "
                        "or a relaxed NequIP / MACE model (model.kind)")
    parser.add_argument("data", help="structures: extxyz, CIF, pymatgen .json, anything ase reads")
    parser.add_argument("--out", required=True, help="output extxyz file")
    parser.add_argument("--format", default=None, help="ase format of DATA (guessed from the suffix)")
    parser.add_argument("--index", default=":", help="ase index of the frames to read (default all)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--no-forces", action="store_true", help="skip the forces of an energy model")
    parser.add_argument("--stress", action="store_true", help="also predict the stress of periodic structures")
    parser.set_defaults(func=run)
    return parser


def run(args) -> int:
    # lazy: CLI startup time (--version / --help must not import torch, ase)
    import ase.io

    from relaxed_e3nn._atomic import atomic_write
    from relaxed_e3nn.models import load_graph_model
    from relaxed_e3nn.train import predict, read_atoms

    model = load_graph_model(args.model, where="MODEL")
    items = read_atoms({"path": args.data, "format": args.format, "index": args.index}, where="DATA")
    frames = predict(model, [a for a, _ in items], batch_size=args.batch_size,
                     compute_forces=not args.no_forces, compute_stress=args.stress)
    with atomic_write(args.out, "w") as handle:
        ase.io.write(handle, frames, format="extxyz")
    print(f"wrote predictions for {len(frames)} structures to {args.out}")
    return 0
