"""The sections of an experiment config: typed pydantic models, their defaults and the meaning of every key.

This module is the one source of truth for the keys: the configuration reference of the documentation
is generated from the models below (``docs/gen_config_reference.py``: section docstrings, field types,
defaults and ``description`` texts). Unknown keys and values of the wrong type are refused by the
models (``extra="forbid"``, strict types); checks across keys are in :mod:`fedalign.config.checks`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_serializer, model_validator

from .base import ConfigError, Section
from .privacy_sections import DPSGDConfig, PrivacyConfig
from .synthetic import SyntheticConfig

Arch = Literal["gcn", "gat", "sage"]
Activation = Literal["elu", "relu"]
# The activation a student of each architecture uses when model.activation is left out: the original
# Alignahead code's (ReLU in its GCN students, ELU in its GAT students; GraphSAGE keeps fedalign's ELU).
DEFAULT_ACTIVATION: dict[str, Activation] = {"gcn": "relu", "gat": "elu", "sage": "elu"}


class DataConfig(Section):
    """Which graph data the students learn from (:mod:`fedalign.data`)."""

    name: str = Field(default="synthetic-csbm", description="the dataset (see Datasets on the running page)")
    root: str | None = Field(default=None, description="data root (else $FEDALIGN_DATA_ROOT)")
    cache_dir: str | None = Field(
        default=None, description="where raw files are linked and processed (else $FEDALIGN_CACHE_DIR)"
    )
    split: list[float] = Field(default=[0.6, 0.2, 0.2], description="train/val/test fractions")
    synthetic: SyntheticConfig = Field(
        default_factory=SyntheticConfig, description="options of the synthetic generators (synthetic-* datasets only)"
    )

    @field_serializer("synthetic")
    def _given_options(self, synthetic: SyntheticConfig) -> dict[str, Any]:
        return synthetic.options()


class PartitionConfig(Section):
    """Who holds what: how the nodes (or graphs) are shared out among the clients (:mod:`fedalign.data.partition`)."""

    scheme: Literal["replicate", "iid", "dirichlet", "community", "graphs"] = Field(
        default="replicate",
        description="who holds what: `replicate` (the paper: every client the whole training set), "
        "`iid`, `dirichlet` (label skew `alpha`), `community` (Louvain), `graphs` (multi-graph data)",
    )
    alpha: float = Field(default=0.5, description="Dirichlet concentration (label skew)")
    public_fraction: float = Field(
        default=0.2, description="share of nodes (or training graphs) forming the alignment graph"
    )
    label_rate: float = Field(
        default=1.0,
        description="share of each client's training nodes whose labels it uses (seeded, per class where "
        "possible); the other training nodes stay in its graph unlabelled. 1.0 = every training label.",
    )


class FederationConfig(Section):
    """The federation: how many clients, how many rounds, who trains when."""

    num_clients: int = Field(default=2, description="K, the number of clients (students)")
    rounds: int = Field(
        default=40, description="training rounds after round 0 (which collects every client's initial release)"
    )
    schedule: Literal["alternating", "simultaneous"] = Field(
        default="alternating",
        description="`alternating` (the paper's: one trainer per round, client (r−1) mod K) or "
        "`simultaneous` (every client trains every round)",
    )
    timeout: float = Field(default=600.0, description="seconds the server waits for a round's replies")
    public_layout: str | None = Field(
        default=None,
        description="a public layout artefact (`fedalign layout <experiment> --out <file>`, made where the "
        "data is): the server checks releases against it and never opens the data root. None: the server derives "
        "it from the data, and without the data checks shape, dtype and range only.",
    )
    public_layout_sha256: str | None = Field(
        default=None,
        description="SHA-256 fingerprint of the public layout; every client checks its own data gives it. "
        "None: filled by the server from public_layout when given (set it to pin a layout).",
    )


class ModelConfig(Section):
    """The students' networks (:mod:`fedalign.models`).

    Every key but ``init`` may be a per-client list of length ``federation.num_clients``
    (e.g. ``hidden_layers: [2, 4]``).
    """

    arch: Arch | list[Arch] = Field(default="gcn", description="the student network: GCN, GAT or GraphSAGE")
    hidden_layers: int | list[int] = Field(default=4, description="L, the number of hidden (aligned) layers, ≥ 2")
    hidden_dim: int | list[int] = Field(default=64, description="width of every hidden layer (per head for GAT)")
    heads: int | list[int] = Field(default=4, description="attention heads (GAT only)")
    dropout: float | list[float] = Field(
        default=0.0, description="dropout of features and attention; the original uses none"
    )
    residual: bool | list[bool] = Field(
        default=False, description="skips inside hidden layers 2..L and the output layer"
    )
    activation: Activation | list[Activation] | None = Field(
        default=None,
        description="the hidden layers' activation. Left out (null): by architecture, as in the original "
        "Alignahead code: `relu` for `gcn`, `elu` for `gat` (and `sage`), resolved when the config is read "
        "(config.yaml records the value used); an explicit value wins",
    )
    init: Literal["shared", "independent"] = Field(
        default="shared",
        description="shared: every student starts from the same weights (one seed, as the original's "
        "deep copies); independent: each student from its own seed",
    )

    @model_validator(mode="after")
    def _activation_by_architecture(self) -> ModelConfig:
        if self.activation is None:
            if isinstance(self.arch, list):
                chosen: list[Activation] = [DEFAULT_ACTIVATION[a] for a in self.arch]
                self.activation = chosen[0] if len(set(chosen)) == 1 else chosen
            else:
                self.activation = DEFAULT_ACTIVATION[self.arch]
        return self

    def for_client(self, client_id: int) -> dict[str, Any]:
        """This student's model keys, with per-client lists resolved.

        Args:
            client_id: the client's index, 0..K-1 (into every per-client list).
        """
        return {
            name: (value[client_id] if isinstance(value, list) else value)
            for name in type(self).model_fields
            for value in [getattr(self, name)]
        }


class AlignConfig(Section):
    """How students align (:mod:`fedalign.alignment`, :mod:`fedalign.statistics`).

    The defaults are the original Alignahead code: ``lsp`` kernel (softmax over a node's in-edges of
    ``exp(-||h_u - h_v||_1 / tau)``), tau 100, pre-activation representations, the KL summed over
    in-edges and divided by all N nodes, weight a = 1.
    """

    strategy: Literal["alignahead", "one-to-one", "self", "logits", "votes", "none", "fedavg", "dp-fedavg"] = Field(
        default="alignahead",
        description="alignahead / one-to-one / self / logits / votes / none share statistics (or "
        "nothing); fedavg and dp-fedavg are the weight-averaging reference arms: they send weights, so they must "
        "be named here explicitly",
    )
    weight: float = Field(default=1.0, description="a: weight of the alignment loss")
    tau: float = Field(default=100.0, description="temperature of the structure kernel")
    kernel: Literal["lsp", "l1-softmax", "l2sq", "cosine"] = Field(
        default="lsp",
        description="structure kernel: `lsp` (the original's softmax of exp(−d/τ)); the others a softmax of "
        "a similarity / τ (`l1-softmax`: −‖h_u − h_v‖₁, `l2sq`: −‖h_u − h_v‖₂², `cosine`)",
    )
    representation: Literal["pre-activation", "post-activation"] = Field(
        default="pre-activation",
        description="align each layer's output before (`pre-activation`, the original) or after its activation",
    )
    node_mean: Literal["all", "with-in-edges"] = Field(
        default="all", description="divide the per-node KL sum by N, or by nodes with in-edges"
    )
    logit_temperature: float = Field(
        default=1.0, description="T of strategy logits: KL of softmax(z / T) between students"
    )
    statistics_dtype: Literal["float32", "float16"] = Field(
        default="float32",
        description="wire precision of released statistics: float16 halves the bytes sent and "
        "received; receivers compute in float32 (probabilities below ~6e-8 round to 0 and then add nothing to the KL)",
    )
    queries: int | None = Field(
        default=None,
        description="Q: strategies logits and votes release only on a public sample of Q nodes of the "
        "alignment graph (the query set: fixed for the whole run, drawn from the experiment seed, the same on every "
        "client and the server); None = every node of the alignment graph",
    )
    vote_threshold: float = Field(
        default=0.0,
        description="T of strategy votes: a query is answered only where the peers' noisy top vote count is "
        ">= T (Confident-GNMax's consensus check, on the same noisy histogram: post-processing); 0 answers every query",
    )


class TrainConfig(Section):
    """Local training of each student (Adam)."""

    local_epochs: int = Field(default=1, description="epochs a student trains each time it is scheduled")
    lr: float = Field(default=0.005, description="Adam's learning rate")
    weight_decay: float = Field(default=0.0, description="Adam's weight decay")
    batch_size: int | None = Field(
        default=None,
        description="mini-batch students (fedalign.client.minibatch_training): None = full batch. Else each "
        "step takes batch_size labelled training nodes (PyG NeighborLoader) and batch_size target nodes of the "
        "alignment graph with all their in-edges (the alignment term's unbiased estimate: fedalign.client.minibatch)",
    )
    num_neighbors: list[int] | None = Field(
        default=None,
        description="fan-out per message-passing layer (model.hidden_layers + 1 entries, PyG's order: the hop "
        "next to the seeds, i.e. the output layer, first; -1 = every neighbour); None = all neighbours (exact "
        "representations)",
    )
    sparse_features: bool = Field(
        default=False,
        description="full-batch GCN students multiply their first layer by a sparse (CSR) copy of the node "
        "features, made once per graph: the same product, summed in another order (outputs agree to ~1e-5), "
        "several times faster where features are mostly zeros (bag-of-words: Coauthor CS is 0.9 % nonzero)",
    )


class SimulationConfig(Section):
    """How Flower's Simulation Runtime places the virtual clients (``fedalign run`` / ``sweep`` with the Flower engine).

    Each client asks Ray for ``cpus_per_client`` CPUs and ``gpus_per_client`` GPUs (a fraction shares a
    GPU among clients; ``device: auto`` then trains on the GPU Ray assigns). ``ray_address`` attaches to
    a running Ray cluster (``ray start --head`` on one machine, ``ray start --address`` on the others)
    instead of starting a local Ray instance.
    """

    cpus_per_client: float = Field(default=1.0, description="CPUs Ray reserves for each virtual client")
    gpus_per_client: float = Field(
        default=0.0, description="GPUs Ray reserves for each virtual client (a fraction shares a GPU)"
    )
    ray_address: str | None = Field(
        default=None, description="attach to this running Ray cluster instead of starting a local Ray"
    )


class OutputConfig(Section):
    """What a run writes, and where."""

    dir: str = Field(default="outputs", description="run folders are created below this")
    progress: bool = Field(default=True, description="one line per round on stderr")
    plot: bool = Field(default=True, description="write curves.png at the end")


class ExperimentConfig(Section):
    """The top level of an experiment file: its name, seed and device, and one key per section."""

    name: str = Field(
        default="experiment", description="the experiment's name: run folders are `<output.dir>/<name>-<UTC time>/`"
    )
    seed: int = Field(
        default=0,
        description="the experiment seed: split, partition, initialisation and query set are "
        "drawn from it (privacy noise is not, unless `privacy.reproducible_noise`)",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="where students train: `auto` (CUDA when available, else CPU; under Flower the GPU Ray "
        "assigns), `cpu`, `cuda` (refused by `fedalign check` and `run` where torch finds no GPU)",
    )
    data: DataConfig = Field(default_factory=DataConfig, description="the dataset")
    partition: PartitionConfig = Field(default_factory=PartitionConfig, description="who holds what")
    federation: FederationConfig = Field(default_factory=FederationConfig, description="clients and rounds")
    model: ModelConfig = Field(default_factory=ModelConfig, description="the students' networks")
    align: AlignConfig = Field(default_factory=AlignConfig, description="how students align")
    train: TrainConfig = Field(default_factory=TrainConfig, description="local training")
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig, description="differential privacy")
    simulation: SimulationConfig = Field(default_factory=SimulationConfig, description="placement on Ray")
    output: OutputConfig = Field(default_factory=OutputConfig, description="what a run writes")

    def to_dict(self) -> dict[str, Any]:
        """The config as plain nested dicts, as ``config.yaml`` records it (``data.synthetic``: the options given)."""
        return self.model_dump()


__all__ = [
    "DEFAULT_ACTIVATION",
    "AlignConfig",
    "ConfigError",
    "DataConfig",
    "DPSGDConfig",
    "ExperimentConfig",
    "FederationConfig",
    "ModelConfig",
    "OutputConfig",
    "PartitionConfig",
    "PrivacyConfig",
    "Section",
    "SimulationConfig",
    "SyntheticConfig",
    "TrainConfig",
]
