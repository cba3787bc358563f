"""``relaxed-e3nn evaluate MODEL DATA``: errors of a trained model on labelled structures."""
import argparse
import json
import sys

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate", help="print the errors (MAE, RMSE) of a trained model on labelled structures",
        description="Print energy (per atom and per structure), force and stress errors of an energy model, "
                    "or the errors of the per-atom / per-structure targets of a node / graph model.",
    )
    parser.add_argument("model", help="model file written by training (relaxed_e3nn.save): a RelaxedNetwork "
                        "or a relaxed NequIP / MACE model (model.kind)")
    parser.add_argument("data", help="structures with reference values: extxyz, CIF with --targets, pymatgen .json")
    parser.add_argument("--format", default=None, help="ase format of DATA (guessed from the suffix)")
    parser.add_argument("--index", default=":", help="ase index of the frames to read (default all)")
    parser.add_argument("--energy-key", default=None, help="atoms.info key of the reference energy (e.g. "
                        "REF_energy; default: the key the model was trained with)")
    parser.add_argument("--forces-key", default=None, help="atoms.arrays key of the reference forces (default: "
                        "the training key)")
    parser.add_argument("--stress-key", default=None, help="atoms.info key of the reference stress (default: "
                        "the training key)")
    parser.add_argument("--node-targets", nargs="*", default=[], help="per-atom targets of a node model, in order "
                        "(default: the training targets)")
    parser.add_argument("--graph-targets", nargs="*", default=[], help="per-structure targets of a graph model "
                        "(default: the training targets)")
    parser.add_argument("--targets", default=None, help="JSON list of per-structure target dicts (for CIF data)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the metrics to FILE as JSON")
    parser.set_defaults(func=run)
    return parser


def run(args) -> int:
    # lazy: CLI startup time (--version / --help must not import torch, ase)
    from relaxed_e3nn._atomic import atomic_write
    from relaxed_e3nn.models import load_graph_model
    from relaxed_e3nn.train import evaluate, graphs_for_model, read_atoms, stored_data_keys

    model = load_graph_model(args.model, where="MODEL")
    stored = stored_data_keys(model)  # the keys of the training data unless given here
    args.node_targets = args.node_targets or list(stored.get("node_targets") or [])
    args.graph_targets = args.graph_targets or list(stored.get("graph_targets") or [])
    source = {"path": args.data, "format": args.format, "index": args.index, "targets": args.targets}
    items = read_atoms(source, where="DATA")
    graphs = graphs_for_model(model, [a for a, _ in items], origins=[o for _, o in items],
                              node_targets=args.node_targets, graph_targets=args.graph_targets,
                              energy_key=args.energy_key, forces_key=args.forces_key, stress_key=args.stress_key)
    metrics = evaluate(model, graphs, batch_size=args.batch_size, node_targets=args.node_targets,
                       graph_targets=args.graph_targets)
    width = max(len(k) for k in metrics)
    print(f"{len(graphs)} structures, {sum(g.num_nodes for g in graphs)} atoms")
    for key, value in metrics.items():
        print(f"{key:<{width}}  {value:.6g}")
    if args.json:
        with atomic_write(args.json, "w") as handle:
            json.dump(metrics, handle, indent=2)
    sys.stdout.flush()
    return 0
