"""``data.synthetic``: the options of the synthetic generators (:mod:`fedalign.data.synthetic`), typed.

Every option is optional: left out (null), the generator's default applies (the defaults below are
:data:`fedalign.data.synthetic.CSBM_DEFAULTS` and :data:`~fedalign.data.synthetic.PPI_LIKE_DEFAULTS`;
a test keeps them equal). Which options a generator takes is :data:`GENERATOR_OPTIONS`; the others are
refused by :func:`fedalign.config.check_config` naming the key.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from .base import Section

Number = int | float  # kept as written (8 stays 8): configs, caches and fingerprints record it as given


def _option(generators: str, meaning: str) -> Any:
    return Field(default=None, description=f"{meaning} ({generators})")


class SyntheticConfig(Section):
    """Options of the synthetic generators (``data.name`` ``synthetic-csbm`` or ``synthetic-ppi``).

    Give only the options to change; each applies to the generator(s) named in its meaning, and
    null (left out) takes that generator's default.
    """

    num_nodes: int | None = _option("synthetic-csbm; default 400", "number of nodes")
    num_classes: int | None = _option("synthetic-csbm; default 4", "number of classes")
    num_features: int | None = _option("synthetic-csbm: default 32; synthetic-ppi: default 16", "feature dimension")
    avg_degree: Number | None = _option(
        "synthetic-csbm: default 8.0; synthetic-ppi: default 6.0", "expected number of neighbours of a node"
    )
    homophily: Number | None = _option(
        "synthetic-csbm: default 0.8, within its class; synthetic-ppi: default 0.9, within its community",
        "expected fraction of a node's edges that stay within its block",
    )
    signal: Number | None = _option(
        "synthetic-csbm; default 1.0", "distance between any two class means, in units of the (unit) noise std"
    )
    num_graphs: int | None = _option("synthetic-ppi; default 24", "number of graphs")
    num_val_graphs: int | None = _option("synthetic-ppi; default 2", "validation graphs")
    num_test_graphs: int | None = _option("synthetic-ppi; default 2", "test graphs (the rest are training graphs)")
    min_nodes: int | None = _option("synthetic-ppi; default 60", "fewest nodes of a graph")
    max_nodes: int | None = _option(
        "synthetic-ppi; default 100", "most nodes of a graph (drawn uniformly from [min_nodes, max_nodes])"
    )
    num_labels: int | None = _option("synthetic-ppi; default 12", "number of (multi-label) targets")
    num_communities: int | None = _option("synthetic-ppi; default 4", "planted communities per graph")
    noise: Number | None = _option("synthetic-ppi; default 1.0", "std of the Gaussian noise added to the features")

    def options(self) -> dict[str, Any]:
        """The options given (not null), as the generators take them: ``{"num_nodes": 150}``."""
        return self.model_dump(exclude_none=True)

    def __bool__(self) -> bool:
        """True when any option is given."""
        return bool(self.options())


GENERATOR_OPTIONS: dict[str, tuple[str, ...]] = {
    "synthetic-csbm": ("num_nodes", "num_classes", "num_features", "avg_degree", "homophily", "signal"),
    "synthetic-ppi": (
        "num_graphs",
        "num_val_graphs",
        "num_test_graphs",
        "min_nodes",
        "max_nodes",
        "num_features",
        "num_labels",
        "num_communities",
        "avg_degree",
        "homophily",
        "noise",
    ),
}
