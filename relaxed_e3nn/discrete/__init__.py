"""Discrete point-group message passing for bounded physical systems (DEGNN-style).

A finite point group G about a centre (a box, a cavity) is a symmetry that a continuous
E(3)-equivariant network cannot exploit: ``PointGroupMessagePassing`` builds invariant edge
messages from the orbit of each edge's joint geometric tuple under G (pooling, attention or
per-channel ranking) and exactly G-equivariant vector updates by group averaging. ``DEGNN``
stacks them; ``EGNN`` is the E(3)-equivariant baseline with the same interface.

How it relates to the rest of the package: the groups are the finite point groups of
``relaxed_e3nn.groups`` (a catalogue name, a ``PointGroup`` in any frame, or explicit 3x3
matrices), and they act on Cartesian vectors (positions about a centre, velocities) directly,
as 3x3 matrices, not through irreps. So this subpackage never imports e3nn: where ``relaxed_e3nn.nn``
relaxes an O(3)-equivariant e3nn network from the top down, ``discrete`` builds exactly a finite
group in from the bottom up. Models are saved with ``relaxed_e3nn.save`` like every other model.
"""
from relaxed_e3nn.discrete._group_elements import group_elements
from relaxed_e3nn.discrete._message_passing import EdgeOutputs, PointGroupMessagePassing
from relaxed_e3nn.discrete._models import STATISTICS_BUFFERS, DEGNN, EGNN, EGNNLayer, fully_connected_batch
from relaxed_e3nn.discrete._wellposed import BASELINES, reflect_into_box

__all__ = [
    "BASELINES",
    "STATISTICS_BUFFERS",
    "reflect_into_box",
    "DEGNN",
    "EGNN",
    "EGNNLayer",
    "EdgeOutputs",
    "PointGroupMessagePassing",
    "fully_connected_batch",
    "group_elements",
]
