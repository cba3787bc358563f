"""Generator of the committed model-format-1 fixtures (kept for reference; do not re-run).

This script was run once, with the package at model file ``format_version`` 1, to write

- ``model_format1.pt``: a small float64 relaxed ``RelaxedNetwork`` (non-default
  ``atomic_energies`` and ``scale``, a non-identity ``frame``, nonzero relaxed weights ``theta``),
  saved with ``relaxed_e3nn.save``;
- ``model_format1_expected.pt``: a plain ``torch.save`` of a dict of tensors with that model's
  energies, forces and stress on :func:`fixture_graph`;
- ``degnn_format1.pt`` and ``degnn_format1_expected.pt``: the same for a small float64 ``DEGNN``
  on :func:`degnn_inputs`.

tests/test_io.py and tests/test_io_discrete.py check that newer versions of the package still
load these files and reproduce the stored outputs. Re-running it with a newer package would write
files of the newer format and defeat that purpose.
"""
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
CUTOFF = 3.0
ANGLE = 0.7


def fixture_graph():
    """Two structures: a periodic cell (stress defined) and a small molecule, in float64."""
    from relaxed_e3nn.data import collate, from_arrays

    rng = np.random.default_rng(11)
    cell = np.diag([3.2, 3.4, 3.6])
    periodic = from_arrays(rng.uniform(0.0, 3.0, size=(4, 3)), [1, 8, 8, 1], CUTOFF, cell=cell,
                           dtype=torch.float64)
    molecule = from_arrays(rng.uniform(0.0, 2.5, size=(5, 3)), [8, 1, 1, 8, 1], CUTOFF, dtype=torch.float64)
    return collate([periodic, molecule])


def degnn_inputs():
    """Positions, velocities, node attributes and a fully connected graph of 5 nodes, in float64."""
    from relaxed_e3nn.discrete import fully_connected_batch

    gen = torch.Generator().manual_seed(5)
    pos = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    vel = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    attr = torch.randn(5, 2, generator=gen, dtype=torch.float64)
    edge_src, edge_dst, _ = fully_connected_batch(1, 5)
    return pos, vel, attr, edge_src, edge_dst


def _frame():
    c, s = np.cos(ANGLE), np.sin(ANGLE)
    return [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]


def _relaxed_network():
    import relaxed_e3nn
    from relaxed_e3nn.models import RelaxedNetwork

    config = dict(species=[1, 8], cutoff=CUTOFF, num_layers=1, irreps_hidden="4x0e+2x1o+2x1e", lmax=1,
                  num_radial_basis=4, radial_neurons=8, radial_layers=1, num_neighbors=3.0,
                  relaxed=True, irreps_relaxed=1, relax_at="both")
    if relaxed_e3nn.models.FORMAT_VERSION != 1:
        raise RuntimeError("this generator writes format-1 fixtures and must run with a format-1 package")
    torch.manual_seed(3)
    model = RelaxedNetwork(config, dtype=torch.float64)
    model.set_atomic_energies([-13.6, -2041.5])
    model.set_scale(0.75)
    model.set_frame(_frame())
    with torch.no_grad():
        gen = torch.Generator().manual_seed(7)
        for name, theta in model.named_parameters():
            if name.endswith("theta.theta"):
                theta.add_(0.3 * torch.randn(theta.shape, generator=gen, dtype=torch.float64))
    return model.eval()


def main():
    import relaxed_e3nn
    from relaxed_e3nn._dtype import default_dtype
    from relaxed_e3nn.discrete import DEGNN
    from relaxed_e3nn.groups import point_group

    model = _relaxed_network()
    out = model(fixture_graph(), compute_forces=True, compute_stress=True)
    relaxed_e3nn.save(model, HERE / "model_format1.pt")
    torch.save({k: v.detach().clone() for k, v in out.items()}, HERE / "model_format1_expected.pt")

    torch.manual_seed(4)
    with default_dtype(torch.float64):
        degnn = DEGNN(point_group("D3d"), node_attr_dim=2, hidden=6, layers=2, variant="ranking",
                      center=[0.1, -0.2, 0.3]).eval()
    relaxed_e3nn.save(degnn, HERE / "degnn_format1.pt")
    torch.save({"pos": degnn(*degnn_inputs()).detach().clone()}, HERE / "degnn_format1_expected.pt")


if __name__ == "__main__":
    main()
