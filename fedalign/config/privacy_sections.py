"""The ``privacy`` section and its ``dp_sgd`` subsection (:mod:`fedalign.privacy`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Section


class DPSGDConfig(Section):
    """Per-graph DP-SGD for local training (multi-graph datasets with partition scheme ``graphs`` only).

    Each local epoch takes ``round(1 / sample_rate)`` steps; each step Poisson-samples the
    client's training graphs with probability ``sample_rate``, clips every graph's gradient
    of the task loss to ``max_grad_norm`` and adds ``N(0, (noise_multiplier * max_grad_norm)^2)``
    noise (:class:`fedalign.privacy.DPSGDTrainer`). Unit of privacy: one training graph.
    """

    enabled: bool = Field(
        default=False, description="train with per-graph DP-SGD (multi-graph data, partition scheme `graphs`)"
    )
    noise_multiplier: float = Field(
        default=1.0, description="sigma of DP-SGD; 0 = clipped SGD without noise (epsilon = inf)"
    )
    max_grad_norm: float = Field(default=1.0, description="per-graph L2 clip bound, in gradient units")
    sample_rate: float = Field(
        default=0.5, description="q in (0, 1]: Poisson inclusion probability of a graph per step"
    )


class PrivacyConfig(Section):
    """Differential privacy of what a client releases (:mod:`fedalign.privacy`).

    ``mechanism: gaussian`` clips each release of structure statistics (all layers) to L2 norm
    ``clip_norm`` and adds Gaussian noise of std ``noise_multiplier * clip_norm`` per coordinate;
    unit of privacy: the client's whole local dataset. Give exactly one of ``noise_multiplier``
    (sigma) and ``target_epsilon`` (sigma is then solved so that the client's planned releases,
    :func:`planned_releases`, spend exactly that epsilon at ``delta``; ``.inf`` = clip only, no
    noise, no privacy). ``max_epsilon`` is a hard budget: a release that would exceed it is
    withheld (the client still trains; peers keep its last statistics).
    """

    unit: Literal["client", "labels"] = Field(
        default="client",
        description="client: the statistics mechanism / DP-SGD protect a client's data; labels: "
        "randomised response on each training label before training (privacy.label_epsilon per label; "
        "fedalign.privacy.labels)",
    )
    label_epsilon: float | None = Field(
        default=None, description="ε per training label of randomised response (`unit: labels`)"
    )
    mechanism: Literal["none", "gaussian"] = Field(
        default="none", description="`gaussian`: clip and noise every release of statistics; `none`: exact releases"
    )
    noise_multiplier: float | None = Field(
        default=None, description="sigma; noise std sigma * clip_norm per coordinate (0 = clip only)"
    )
    target_epsilon: float | None = Field(
        default=None, description="alternative to sigma: the epsilon of all planned releases"
    )
    clip_norm: float = Field(
        default=1.0, description="C: L2 bound of one release (scope release) or of each layer (scope layer)"
    )
    clip_scope: Literal["release", "layer"] = Field(
        default="release", description="clip the whole release to C (`release`) or each layer to C (`layer`)"
    )
    delta: float = Field(default=1e-5, description="δ of the reported (ε, δ)")
    accountant: Literal["rdp", "prv"] = Field(
        default="prv", description="Opacus; = fedalign.privacy.accounting.DEFAULT_ACCOUNTANT (tested)"
    )
    max_epsilon: float | None = Field(default=None, description="budget of the statistics mechanism; None = unlimited")
    subtract_baseline: bool = Field(
        default=False,
        description="subtract the public uniform baseline 1/in-degree(v) before clipping (signed: "
        "sensitivity 2C instead of sqrt(2) C, but the clipped norm carries only how the distributions differ from "
        "uniform)",
    )
    release_every: int = Field(
        default=1, description="release after every k-th turn only (fewer releases, less noise each)"
    )
    final_release: bool = Field(
        default=True,
        description="false: no charged release in the final round (nobody trains after it), so "
        "target_epsilon is spread over one release fewer; true (the default so far) releases there too",
    )
    free_initial_release: bool = Field(
        default=True,
        description="round 0's release (before any training, on a public alignment graph) reads no private "
        "data: send it exact and uncharged. Under partition.scheme replicate the alignment graph is private: "
        "always charged.",
    )
    reproducible_noise: bool = Field(
        default=False,
        description="noise from the experiment seed (reproducible, for tests and comparisons) or, by "
        "default, from the OS CSPRNG (fedalign.noise): a seed the server knows lets it regenerate and "
        "subtract the noise, so a reproducible run reports epsilon = inf, and with target/max/label epsilon needs "
        "insecure_ok: true.",
    )
    insecure_ok: bool = Field(
        default=False, description="accept reproducible_noise together with an epsilon target (tests, comparisons)"
    )
    noise_control: bool = Field(
        default=False,
        description="the noise control of a DP arm: every charged release is made from zeros instead of "
        "the client's statistics (same mechanism, same sigma: pure noise); it reads no private data and spends "
        "no epsilon.",
    )
    secure_aggregation: bool = Field(
        default=False,
        description="secure aggregation with distributed noise (schedule simultaneous, mechanism "
        "gaussian): the server learns only the sum of the clients' shares (Flower's SecAgg+ in the Flower "
        "engines), each client adds noise of std sigma C / sqrt(n), n = K - floor(max_dropout_share K) - "
        "colluders (fedalign.aggregation).",
    )
    max_dropout_share: float = Field(
        default=0.1, description="clients that may drop out of a round while the sum keeps noise sigma C"
    )
    colluders: int = Field(
        default=1, description="clients whose noise shares the adversary may know (>= 1: any trainer knows its own)"
    )
    dp_sgd: DPSGDConfig = Field(default_factory=DPSGDConfig, description="per-graph DP-SGD of local training")
