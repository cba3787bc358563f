"""Discrete point-group message passing for bounded physical systems (DEGNN-style).

A finite point group G about a centre (a box, a cavity) is a symmetry that a continuous
E(3)-equivariant network cannot exploit: ``PointGroupMessagePassing`` builds invariant edge
messages from the orbit of each edge's joint geometric tuple under G (pooling, attention or
per-channel ranking) and exactly G-equivariant vector updates by group averaging. ``DEGNN``
stacks them; ``EGNN`` is the E(3)-equivariant baseline with the same interface.
"""
from relaxed_e3nn.discrete._group_elements import group_elements
from relaxed_e3nn.discrete._message_passing import EdgeOutputs, PointGroupMessagePassing
from relaxed_e3nn.discrete._models import DEGNN, EGNN, EGNNLayer, fully_connected_batch

__all__ = [
    "DEGNN",
    "EGNN",
    "EGNNLayer",
    "EdgeOutputs",
    "PointGroupMessagePassing",
    "fully_connected_batch",
    "group_elements",
]
