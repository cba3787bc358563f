"""relaxed_e3nn: relaxed E(3)-equivariant graph neural networks on top of e3nn.

Subpackages (lowest layer first): ``groups`` (point groups), ``nn`` (relaxed layers),
``symmetry`` (measuring learned symmetry breaking), ``discrete`` (point-group message
passing), ``graph`` (approximate permutation symmetry on a fixed graph), ``data`` (atomic
graphs, neighbor lists, generators), ``models`` (ready networks, save/load), ``train``
(training loop, checkpoints), ``calculators`` (ASE calculator) and ``cli``.

``relaxed_e3nn.save`` and ``relaxed_e3nn.load`` are the one model file format; they are
loaded lazily so that ``import relaxed_e3nn.groups`` stays light.
"""
__version__ = "0.1.0"

__all__ = ["save", "load", "__version__"]


def __getattr__(name):
    if name in ("save", "load"):
        # lazy: ``import relaxed_e3nn`` (and the CLI's --help) must not import torch
        from relaxed_e3nn.models import _io

        return getattr(_io, name)
    raise AttributeError(f"module 'relaxed_e3nn' has no attribute {name!r}")
