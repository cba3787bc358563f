"""Helpers shared by the relaxed-layer tests (group elements, graphs, cached layers); no tests here."""
import torch
from e3nn import o3
from e3nn.math import soft_one_hot_linspace

from relaxed_e3nn._dtype import default_dtype
from relaxed_e3nn.nn import RelaxedConvolution
from _geometry import close_group, random_orthogonal, rotation_about  # noqa: F401 (re-exported to the nn tests)
from _geometry import reflection as mirror  # noqa: F401
from _tolerance import tolerance

NUMBER_OF_BASIS = 5
MAX_RADIUS = 10.0
_CACHE = {}


def relative_tolerance(dtype):
    return tolerance(dtype, "rel")


def perpendicular(n):
    helper = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    if abs(float(n @ helper)) > 0.9:
        helper = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    m = torch.linalg.cross(n, helper)
    return m / m.norm()


def oh_group(frame):
    """The 48 elements of O_h with its axes along the columns of ``frame``."""
    c4z = rotation_about([0, 0, 1], torch.pi / 2)
    c3 = rotation_about([1, 1, 1], 2 * torch.pi / 3)
    elements = close_group([c4z, c3, -torch.eye(3, dtype=torch.float64)])
    assert len(elements) == 48
    return [frame @ g @ frame.T for g in elements]


def d4h_group(frame):
    """The 16 elements of D_4h, principal axis along frame[:, 2], C2' along frame[:, 0]."""
    elements = close_group([
        rotation_about([0, 0, 1], torch.pi / 2), rotation_about([1, 0, 0], torch.pi), -torch.eye(3, dtype=torch.float64)
    ])
    assert len(elements) == 16
    return [frame @ g @ frame.T for g in elements]


def reynolds(irreps, elements):
    """Projector mean_h D(h) onto the H-invariant subspace of ``irreps``."""
    irreps = o3.Irreps(irreps)
    return torch.stack([irreps.D_from_matrix(g) for g in elements]).mean(0)


def complete_graph(num_nodes):
    src, dst = torch.meshgrid(torch.arange(num_nodes), torch.arange(num_nodes), indexing="ij")
    keep = src != dst
    return src[keep], dst[keep]


def edge_inputs(irreps_edge_attr, pos, edge_src, edge_dst):
    vec = pos[edge_src] - pos[edge_dst]
    edge_attr = o3.spherical_harmonics(irreps_edge_attr, vec, normalize=True, normalization="component")
    embedded = soft_one_hot_linspace(vec.norm(dim=1), 0.0, MAX_RADIUS, NUMBER_OF_BASIS, basis="smooth_finite",
                                     cutoff=True).mul(NUMBER_OF_BASIS**0.5)
    return edge_attr, embedded


def conv_config(name):
    return {
        "small": ("4x0e+2x1o+1x2e", "0e", "0e+1o+2e", "3x0e+2x1o+1x2e", 2),
        "parity": ("2x0e+1x0o+2x1o+1x1e", "0e", "0e+1o+2e", "2x0e+1x0o+2x1o+2x1e+1x2e", 1),
        "cubic": ("2x0e+1x1o+1x2e", "0e", "0e+1o+2e", "2x0e+1x1o+1x2e", "0e+4e"),
        "attr": ("3x0e+1x1o", "0e+1o", "0e+1o+2e", "2x0e+1x1o+1x1e+1x2e", 1),
    }[name]


def cached_conv(name, dtype, relax_at="both", mixing="angle"):
    """One RelaxedConvolution per (config, dtype, relax_at, mixing) per session; theta reset to init."""
    key = (name, dtype, relax_at, mixing)
    if key not in _CACHE:
        irreps_in, irreps_attr, irreps_edge, irreps_out, irreps_relaxed = conv_config(name)
        torch.manual_seed(len(_CACHE))
        # built in its own dtype: e3nn's modules keep the rounding of the dtype they were built in
        with default_dtype(dtype):
            conv = RelaxedConvolution(irreps_in, irreps_attr, irreps_edge, irreps_out, NUMBER_OF_BASIS, 1, 8, 3.0,
                                      irreps_relaxed=irreps_relaxed, relax_at=relax_at, mixing=mixing)
        if mixing == "alpha":
            with torch.no_grad():
                conv.alpha.weight.normal_()  # e3nn starts alpha at 0, which would hide the convolution
        _CACHE[key] = conv
    conv = _CACHE[key]
    set_theta(conv, None)
    return conv


def set_theta(conv, value):
    """Set conv's theta (None: back to the equivariant initialisation)."""
    with torch.no_grad():
        theta = conv.theta.theta
        if value is None:
            theta.copy_(conv.theta.scalar_mask.to(theta.dtype))
        else:
            theta.copy_(torch.as_tensor(value, dtype=theta.dtype))


def theta_from_parts(irreps, parts):
    """Flat theta for ``irreps`` with the first copy of each irrep named in ``parts`` set; 0e defaults to 1."""
    irreps = o3.Irreps(irreps)
    theta = torch.zeros(irreps.dim, dtype=torch.float64)
    for (mul, ir), sl in zip(irreps, irreps.slices()):
        if str(ir) in parts:
            theta[sl.start:sl.start + ir.dim] = torch.as_tensor(parts[str(ir)], dtype=torch.float64)
        elif ir == o3.Irrep("0e"):
            theta[sl] = 1.0
    return theta


def conv_inputs(conv, num_nodes=7, dtype=None):
    dtype = dtype or torch.get_default_dtype()
    x = torch.randn(num_nodes, conv.irreps_node_input.dim, dtype=dtype)
    attr = torch.randn(num_nodes, conv.irreps_node_attr.dim, dtype=dtype)
    if conv.irreps_node_attr == o3.Irreps("0e"):
        attr = torch.ones_like(attr)
    pos = 2.0 * torch.randn(num_nodes, 3, dtype=dtype)
    return x, attr, pos


def run_conv(conv, x, attr, pos):
    edge_src, edge_dst = complete_graph(pos.shape[0])
    edge_attr, embedded = edge_inputs(conv.irreps_edge_attr, pos, edge_src, edge_dst)
    return conv(x, attr, edge_src, edge_dst, edge_attr, embedded)


def conv_equivariance_error(conv, R, x, attr, pos, theta_rotated=None):
    """max |f(D x, R pos) - D f(x, pos)| / max |f|; with ``theta_rotated`` the layer uses it on the rotated side."""
    dtype = x.dtype
    D_in = conv.irreps_node_input.D_from_matrix(R).to(dtype)
    D_attr = conv.irreps_node_attr.D_from_matrix(R).to(dtype)
    D_out = conv.irreps_node_output.D_from_matrix(R).to(dtype)
    out = run_conv(conv, x, attr, pos)
    saved = conv.theta.theta.detach().clone()
    if theta_rotated is not None:
        set_theta(conv, theta_rotated)
    try:
        out_rotated = run_conv(conv, x @ D_in.T, attr @ D_attr.T, pos @ R.to(dtype).T)
    finally:
        set_theta(conv, saved)
    return float(((out_rotated - out @ D_out.T).abs().max() / out.abs().max()).detach())

