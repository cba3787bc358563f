"""``relaxed-e3nn train [CONFIG.yaml] [--key value ...]``: train a model from a YAML config.

Every config key is also a flag; nested keys use dots (``--model.num_layers 2``,
``--optim.lr 0.005``) and flags override the file. ``--strict`` trains the strictly
equivariant twin, ``--resume`` continues from ``output_dir/checkpoint.pt``. A relaxed model's
symmetry breaking is validated on held-out data after training and the model is projected onto
the validated group (``--symmetry.validate false`` keeps θ as trained; ``--symmetry.within GROUP``
names the parent; output_dir/symmetry.txt holds the evidence). Data-parallel:
``torchrun --nproc_per_node N -m relaxed_e3nn train CONFIG.yaml``.
"""
import argparse
import dataclasses
import sys

__all__ = ["add_parser", "run"]

_DESCRIPTION = __doc__.split("\n\n", 1)[1]
# relaxed_e3nn.train (torch, e3nn) is imported inside the functions: every subcommand module is
# imported to build the parser, and ``relaxed-e3nn --version`` / ``--help`` must not pay for it


def _key_listing() -> str:
    # lazy: CLI startup time (the key listing needs TrainConfig, i.e. torch; built only for --help)
    from relaxed_e3nn.train._config import DataConfig, OptimConfig, SymmetryConfig, TrainConfig

    lines = ["config keys (each also a flag --KEY VALUE; values are parsed as YAML):"]
    top = [f.name for f in dataclasses.fields(TrainConfig)
           if f.name not in ("data", "model", "loss", "optim", "symmetry")]
    lines.append("  " + ", ".join(top))
    lines.append("  data.{" + ", ".join(f.name for f in dataclasses.fields(DataConfig)) + "}")
    lines.append("  optim.{" + ", ".join(f.name for f in dataclasses.fields(OptimConfig)) + "}")
    lines.append("  symmetry.{" + ", ".join(f.name for f in dataclasses.fields(SymmetryConfig)) + "}")
    lines.append("  loss.{energy, forces, stress, <target name>}")
    lines.append("  model.{...}: the fields of relaxed_e3nn.models.RelaxedNetworkConfig")
    lines.append("  task: box_dynamics hands the whole config to relaxed_e3nn.train.train_dynamics")
    lines.append("see docs/training.rst for every key")
    return "\n".join(lines)


def add_parser(subparsers) -> argparse.ArgumentParser:
    # '+' as the option prefix keeps argparse from rejecting the free-form --a.b flags; they are
    # collected verbatim and parsed by relaxed_e3nn.train._config.parse_overrides.
    parser = subparsers.add_parser(
        "train", help="train a model from a YAML config (every key also a --flag)",
        description=_DESCRIPTION, add_help=False, prefix_chars="+",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("arguments", nargs=argparse.REMAINDER, metavar="[CONFIG.yaml] [--key value ...]")
    parser.set_defaults(func=run, _parser=parser)
    return parser


def run(args) -> int:
    # lazy: CLI startup time (--version / --help must not import torch)
    from relaxed_e3nn.train._config import load_config, parse_overrides

    tokens = list(args.arguments)
    if any(t in ("-h", "--help") for t in tokens):
        args._parser.epilog = _key_listing()  # only here: building it imports the trainer
        args._parser.print_help()
        return 0
    path = None
    if tokens and not tokens[0].startswith("--"):
        path, tokens = tokens[0], tokens[1:]
    overrides = parse_overrides(tokens)
    config = load_config(path, overrides)
    from relaxed_e3nn.train import train  # lazy: CLI startup time

    try:
        result = train(config)
    except (TypeError, FloatingPointError) as err:  # wrong config types, a diverging loss
        print(f"relaxed-e3nn train: error: {err}", file=sys.stderr)
        return 1
    for line in result.summary_lines():  # the test metrics, printed once (in meV units)
        print(line)
    return 0
