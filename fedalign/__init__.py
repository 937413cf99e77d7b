"""fedalign: federated online cross-layer knowledge distillation on GNNs (Alignahead).

The library never imports Flower (the Flower edge is :mod:`fedalign_flower` and the
project's ``clients/`` and ``server/`` apps). It is layered:

* shared vocabulary, imported by both sides: :mod:`fedalign.config`,
  :mod:`fedalign.statistics` (structure distributions, kernels, KL),
  :mod:`fedalign.alignment` (strategies, layer maps), :mod:`fedalign.wire` (what a
  release is, what a reply may carry, the checks), :mod:`fedalign.schedules`,
  :mod:`fedalign.data` (datasets, partitions), :mod:`fedalign.seeds`;
* the client side, :mod:`fedalign.client` (student, training, release policies,
  checkpoint) over :mod:`fedalign.models` and :mod:`fedalign.privacy`;
* the server side, :mod:`fedalign.server` (coordinator, cache, saved state, summary);
* the engines that wire both in one process: :mod:`fedalign.inprocess`,
  :mod:`fedalign.runner`, :mod:`fedalign.outputs`, :mod:`fedalign.sweep`.
"""

__version__ = "0.1.0"
