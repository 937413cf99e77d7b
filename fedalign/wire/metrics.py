"""The scalars a reply may carry (:data:`REPLY_METRICS`), which of them may travel with privacy on, and
:func:`check_metrics`, the server's check of them."""

from __future__ import annotations

import math

# Every scalar a client may report: training/evaluation metrics and the privacy spent.
REPLY_METRICS = frozenset(
    {
        "task_loss",
        "align_loss",
        "val_metric",
        "test_metric",
        "val_loss",  # Student.train / evaluate
        "task_grad_norm",
        "align_grad_norm",  # Student.train, when the alignment term is on
        "epsilon",
        "withheld",
        "dp_sgd_epsilon",  # privacy (the release policy / DP-SGD)
        "ledger_lost",  # a client that lost its privacy ledger releases nothing and says so (fedalign.ledgers)
        "answered_queries",
        "labelled_queries",  # strategy votes: queries answered by the last histogram, and kept
    }
)
# Metrics a client may send with privacy on: accounted, or computed from public information only.
ACCOUNTED_METRICS = frozenset({"epsilon", "withheld", "dp_sgd_epsilon", "ledger_lost"})
# What a reply says about itself: which client answered, and (without privacy) how long it worked.
REPLY_METADATA = ("partition-id", "client-seconds")
REQUIRED_METADATA = ("partition-id",)


def private_releases(cfg) -> bool:
    """True when a client's releases are protected (statistics mechanism, DP-SGD or label DP): then
    nothing else computed from its private data may leave it (:func:`split_metrics`).

    Args:
        cfg: the experiment config (its ``privacy`` section).
    """
    return cfg.privacy.mechanism != "none" or cfg.privacy.dp_sgd.enabled or cfg.privacy.unit == "labels"


def split_metrics(metrics: dict[str, float], private: bool) -> tuple[dict[str, float], dict[str, float]]:
    """``(sent, kept)``: what a reply carries and what stays on the client.

    Without privacy everything is sent. With privacy only :data:`ACCOUNTED_METRICS` are: losses,
    validation and test scores and gradient norms are computed from the client's private data
    without noise, so they stay in the client's own evaluation log.

    Args:
        metrics: every metric the client computed.
        private: whether its releases are protected (:func:`private_releases`).
    """
    if not private:
        return dict(metrics), {}
    sent = {k: v for k, v in metrics.items() if k in ACCOUNTED_METRICS}
    return sent, {k: v for k, v in metrics.items() if k not in ACCOUNTED_METRICS}


# What an honest value of each metric can be: (lowest, highest, +inf allowed).
METRIC_RANGES = {
    "val_metric": (0.0, 1.0, False),
    "test_metric": (0.0, 1.0, False),
    "task_loss": (0.0, math.inf, False),
    "align_loss": (0.0, math.inf, False),
    "val_loss": (0.0, math.inf, False),
    "task_grad_norm": (0.0, math.inf, False),
    "align_grad_norm": (0.0, math.inf, False),
    "epsilon": (0.0, math.inf, True),
    "dp_sgd_epsilon": (0.0, math.inf, True),
    "withheld": (0.0, 1.0, False),
    "ledger_lost": (0.0, 1.0, False),
    "answered_queries": (0.0, math.inf, False),
    "labelled_queries": (0.0, math.inf, False),
}


class MetricsRejected(ValueError):
    """Reply metrics no honest client sends (unknown name, NaN, out of range); the message says which."""


def check_metrics(metrics: dict[str, float], sender: str = "client") -> dict[str, float]:
    """``metrics`` if every value is what an honest client can report (:data:`METRIC_RANGES`), else raise.

    A client leaves out a metric it has nothing for (e.g. no validation nodes); it never sends NaN.

    Args:
        metrics: the metrics as received.
        sender: who sent them, for the error message.
    """
    for name, value in metrics.items():
        if name not in METRIC_RANGES:
            raise MetricsRejected(f"metrics from {sender} rejected: unknown metric {name!r}")
        low, high, inf_ok = METRIC_RANGES[name]
        try:
            value = float(value)
        except (TypeError, ValueError):  # None, a string: not a number
            raise MetricsRejected(f"metrics from {sender} rejected: {name} = {value!r} is not a number") from None
        if math.isnan(value) or (math.isinf(value) and not (inf_ok and value > 0)) or not low <= value <= high:
            raise MetricsRejected(
                f"metrics from {sender} rejected: {name} = {value} is outside what an honest client "
                f"reports ([{low:g}, {high:g}]{', or +inf' if inf_ok else ''})"
            )
    return metrics
