"""Release policies: how a student's statistics leave its client (one interface, one file per policy).

* :class:`~.base.NoRelease` -- strategies ``none`` and ``self`` share nothing;
* :class:`~.plain.PlainRelease` -- the raw statistics in the wire dtype (no privacy);
* :class:`~.gaussian.GaussianRelease` -- ``privacy.mechanism: gaussian``: clipped, noised,
  projected back to distributions and recorded in the client's ledger, within ``max_epsilon``;
* :class:`~.dp_sgd.DPSGDRelease` -- ``privacy.dp_sgd`` alone: the raw statistics of a
  DP-SGD-trained model on a public graph (DP by post-processing), reported with the
  DP-SGD ledger's epsilon;
* :class:`~.secure.SecureShareRelease` -- ``privacy.secure_aggregation``: a share of a
  distributed Gaussian release (the server learns only the sum of the shares);
* :class:`~.labels.LabelDPRelease` -- ``privacy.unit: labels``: the raw statistics of a model
  trained on randomised labels (post-processing), reported with the per-label epsilon.

:func:`build_release_policy` builds the one an experiment config asks for.
"""

from __future__ import annotations

from ...alignment import shares_statistics
from ...config import ExperimentConfig
from ...privacy import PrivacyLedger
from ...wire import ReleaseLayout, release_clip_norm
from .after_dp_sgd import DPSGDRelease
from .after_label_dp import LabelDPRelease
from .base import NoRelease, ReleasePolicy
from .gaussian import GaussianRelease
from .plain import PlainRelease
from .secure import SecureShareRelease


def build_release_policy(
    cfg: ExperimentConfig, client_id: int, num_arrays: int, layout: ReleaseLayout, dp_sgd_ledger: PrivacyLedger | None
) -> ReleasePolicy:
    """The policy of client ``client_id`` releasing ``num_arrays`` arrays laid out as ``layout``.

    Args:
        cfg: the experiment config (``align`` and ``privacy`` sections).
        client_id: the client's index.
        num_arrays: how many arrays one release holds (:func:`~fedalign.alignment.released_arrays`).
        layout: the release layout (edges or query nodes of the alignment graph).
        dp_sgd_ledger: the ledger of the client's DP-SGD steps, when it trains with DP-SGD, else None.
    """
    if not shares_statistics(cfg.align.strategy):
        return NoRelease()
    if cfg.privacy.unit == "labels":
        return LabelDPRelease(cfg, client_id)
    clip_norm = release_clip_norm(cfg.privacy.clip_norm, layout)  # votes: a vote vector's norm
    if cfg.privacy.secure_aggregation:
        return SecureShareRelease.from_config(cfg, client_id, num_arrays, layout, clip_norm)
    if cfg.privacy.mechanism == "gaussian":
        return GaussianRelease.from_config(cfg, client_id, num_arrays, layout, clip_norm)
    if dp_sgd_ledger is not None:
        return DPSGDRelease(cfg, client_id, dp_sgd_ledger)
    return PlainRelease(cfg.align.statistics_dtype)


__all__ = [
    "DPSGDRelease",
    "GaussianRelease",
    "LabelDPRelease",
    "NoRelease",
    "PlainRelease",
    "ReleasePolicy",
    "SecureShareRelease",
    "build_release_policy",
]
