"""Student networks (GNNs). :func:`build_network` makes one from a :class:`fedalign.config.ModelConfig`."""

from __future__ import annotations

from typing import Any

from .base import ACTIVATIONS, REPRESENTATIONS, StudentNetwork
from .gat import GATStudent
from .gcn import GCNStudent, SparseFeatures, sparse_input
from .sage import SAGEStudent

ARCHITECTURES: dict[str, type[StudentNetwork]] = {"gcn": GCNStudent, "gat": GATStudent, "sage": SAGEStudent}


def build_network(
    arch: str,
    in_channels: int,
    num_classes: int,
    *,
    hidden_layers: int,
    hidden_dim: int,
    dropout: float,
    residual: bool,
    heads: int = 4,
    activation: str = "elu",
    representation: str = "pre-activation",
) -> StudentNetwork:
    """A student of family ``arch`` (one of :data:`ARCHITECTURES`).

    Args:
        arch: the family, one of :data:`ARCHITECTURES` (``gcn``, ``sage``, ``gat``).
        in_channels: number of input features F.
        num_classes: number of output logits C.
        hidden_layers: L >= 2, the number of hidden (aligned) layers.
        hidden_dim: width of every hidden layer.
        dropout: dropout probability on features between layers, in [0, 1).
        residual: skip connections around hidden layers (:class:`StudentNetwork`).
        heads: attention heads (``gat`` only; ``hidden_dim`` must be a multiple of it).
        activation: ``"elu"`` or ``"relu"``.
        representation: which hidden outputs are aligned, one of :data:`~fedalign.models.base.REPRESENTATIONS`.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    kwargs: dict[str, Any] = dict(
        hidden_layers=hidden_layers,
        hidden_dim=hidden_dim,
        dropout=dropout,
        residual=residual,
        activation=activation,
        representation=representation,
    )
    if arch == "gat":
        kwargs["heads"] = heads
    return ARCHITECTURES[arch](in_channels, num_classes, **kwargs)


__all__ = [
    "ACTIVATIONS",
    "ARCHITECTURES",
    "REPRESENTATIONS",
    "GATStudent",
    "GCNStudent",
    "SAGEStudent",
    "StudentNetwork",
    "build_network",
    "SparseFeatures",
    "sparse_input",
]
