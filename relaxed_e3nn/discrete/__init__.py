"""Discrete point-group message passing for bounded physical systems (DEGNN-style).

A finite point group G about a centre (a box, a cavity) is a symmetry that a continuous
E(3)-equivariant network cannot exploit: ``PointGroupMessagePassing`` builds invariant edge
messages from the orbit of each edge's joint geometric tuple under G (pooling, attention or
per-channel ranking) and exactly G-equivariant vector updates by group averaging. ``DEGNN``
stacks them; ``EGNN`` is the E(3)-equivariant baseline with the same interface.
"""
from relaxed_e3nn.discrete._group_elements import group_elements
from relaxed_e3nn.discrete._message_passing import EdgeOutputs, PointGroupMessagePassing
from relaxed_e3nn.discrete._models import DEGNN, EGNN, EGNNLayer
from relaxed_e3nn.discrete._training import DYNAMICS_DEFAULTS, fully_connected_batch, train_dynamics

__all__ = [
    "DEGNN",
    "DYNAMICS_DEFAULTS",
    "EGNN",
    "EGNNLayer",
    "EdgeOutputs",
    "PointGroupMessagePassing",
    "fully_connected_batch",
    "group_elements",
    "train_dynamics",
]
