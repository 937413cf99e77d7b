"""fedalign: federated online cross-layer knowledge distillation on GNNs (Alignahead).

Modules, one idea each:

* :mod:`fedalign.statistics` - local-structure distributions and their KL;
* :mod:`fedalign.alignment` - which student layer learns from which peer layer;
* :mod:`fedalign.models` - GCN / GAT / GraphSAGE students;
* :mod:`fedalign.data` - datasets (real and synthetic) and partitions;
* :mod:`fedalign.student` - one client's training, evaluation and release;
* :mod:`fedalign.federation` - schedules, statistics cache, rounds;
* :mod:`fedalign.privacy` - differential privacy mechanisms and accounting;
* :mod:`fedalign.config`, :mod:`fedalign.outputs`, :mod:`fedalign.runner`, :mod:`fedalign.cli`.

The library never imports Flower; the apps in ``clients/`` and ``server/`` do.
"""

__version__ = "0.1.0"
