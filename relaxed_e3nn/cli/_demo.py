"""``relaxed-e3nn demo`` (placeholder): build the graph of an embedded structure and describe it.

This placeholder is to be replaced by the symmetry-discovery demo.
"""
import argparse

__all__ = ["add_parser", "run"]

_HELP = "placeholder demo: build and describe the graph of a small built-in structure"
_DESCRIPTION = (
    "Placeholder, to be replaced by the symmetry-discovery demo. Builds the atomic graph of a "
    "built-in structure (bulk fcc Cu or a methane molecule) and prints its atoms, edges and cell."
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("demo", help=_HELP, description=_DESCRIPTION)
    parser.add_argument("--structure", choices=["Cu", "CH4"], default="Cu", help="built-in structure (default: Cu)")
    parser.add_argument("--cutoff", type=float, default=3.0, help="neighbour-list cutoff in Angstrom (default: 3.0)")
    parser.set_defaults(func=run)
    return parser


def run(args) -> int:
    from ase.build import bulk, molecule

    from relaxed_e3nn.data import from_ase

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) if args.structure == "Cu" else molecule("CH4")
    graph = from_ase(atoms, args.cutoff)
    lengths = graph.edge_vec().norm(dim=1)
    print(f"structure      : {args.structure} ({atoms.get_chemical_formula()})")
    print(f"atoms          : {graph.num_nodes}")
    print(f"edges          : {graph.num_edges} (cutoff {graph.cutoff} A)")
    if graph.num_edges:
        print(f"edge lengths   : {float(lengths.min()):.4f} .. {float(lengths.max()):.4f} A")
    print(f"pbc            : {graph.pbc[0].tolist()}")
    print("cell (rows, A) :")
    for row in graph.cell[0].tolist():
        print("    " + "  ".join(f"{x:8.4f}" for x in row))
    print("(placeholder demo: to be replaced by the symmetry-discovery demo)")
    return 0
