"""Secure aggregation with distributed DP: every client adds a share of the noise, the sum carries all of it.

Setting (``privacy.secure_aggregation``, schedule ``simultaneous``). In every round each of the K
clients clips its statistics x_k to L2 norm <= C, exactly as :class:`~fedalign.privacy.StatisticsMechanism`
does, and contributes the *share* ``y_k = x_k + z_k`` with ``z_k ~ N(0, (sigma C)^2 / n)`` per
coordinate. Secure aggregation gives the server only ``S = sum_{k in A} y_k`` over the round's
contributors A; the server sends S to every trainer, which subtracts its own share (when it is in
A) and projects what is left back to distributions (post-processing).

**Trust assumptions.** The server is honest but curious: it follows the protocol and learns nothing
beyond S (Flower's SecAgg+ in the Flower engines: pairwise masks from X25519 key agreement, Shamir
shares of the mask seeds; the server learns an individual share only by colluding with at least the
reconstruction threshold of clients). At most ``t = privacy.colluders`` clients pool what they know
with the adversary -- a client receiving S knows its own share, so t = 1 covers any single client,
and a server colluding with t - 1 more. At most ``D = floor(privacy.max_dropout_share * K)``
clients drop out of a round; a round with fewer than K - D contributors is discarded by the server,
and in the Flower engines every client refuses to help unmask it.

**Guarantee.** Fix client i and round r. From S the adversary can remove the t colluders' shares;
what stays is ``x_i + sum_{k in A \\ T} x_k + sum_{k in A \\ T} z_k``, and A \\ T holds at least
``n = K - D - t`` honest clients (:func:`honest_noise_shares`), whose noise has std >= sigma C per
coordinate. Changing client i's data moves x_i by at most the mechanism's sensitivity (sqrt(2) C for
non-negative clipped statistics), so each round is at least as private as a Gaussian mechanism with
noise sigma C -- more honest shares only add independent noise, which is post-processing -- and is
recorded in the client's ledger with the same multiplier as a release made alone.

**What it buys.** Without it, each of the K - 1 peers' releases carries noise sigma C, so their
mean carries sigma C / sqrt(K - 1). With it, the peers' mean carries about sigma C sqrt(|A| / n) /
(K - 1): for the same epsilon per client, about sqrt(K - 1) less noise on what a student aligns with.

**Not covered.** SecAgg+ maps every share into [-R, R] and quantises it to 2^22 levels (stochastic
rounding) before masking; the analysis above is of the real-valued sum, and neither quantisation nor
the range clipping is in it. R is :func:`share_range`: a coordinate of an honest share leaves
[-R, R] with probability below 1e-20. The in-process engine sums the shares directly, without
cryptography (all clients share one process there): the same shares, noise and ledgers.
"""

from __future__ import annotations

import math

# A standard normal exceeds this many standard deviations with probability < 1e-20 (two-sided).
SHARE_RANGE_STDS = 9.5


def minimum_contributors(num_clients: int, max_dropout_share: float) -> int:
    """K - floor(rho K): the fewest contributors a round's sum may have and still be used.

    Args:
        num_clients: K, the number of clients in the federation.
        max_dropout_share: rho in [0, 1), the largest share of clients that may drop out of a round.
    """
    return num_clients - math.floor(max_dropout_share * num_clients)


def honest_noise_shares(num_clients: int, max_dropout_share: float, colluders: int) -> int:
    """n = K - floor(rho K) - t: the honest shares every used sum holds beyond the adversary's knowledge.
    Each client's noise std is sigma C / sqrt(n), so those n shares alone carry sigma C.

    Args:
        num_clients: K, the number of clients in the federation.
        max_dropout_share: rho in [0, 1), the largest share of clients that may drop out of a round.
        colluders: t, how many clients may pool what they know with the adversary.
    """
    return minimum_contributors(num_clients, max_dropout_share) - colluders


def share_range(clip_norm: float, share_noise_std: float) -> float:
    """R: a bound on every coordinate of an honest share, for secure aggregation's fixed-point encoding.

    A clipped coordinate lies in [-C, C] (and a round-0 probability in [0, 1]); the noise adds
    :data:`SHARE_RANGE_STDS` standard deviations.

    Args:
        clip_norm: C, the L2 clipping norm of a client's statistics.
        share_noise_std: the standard deviation of one client's noise share, per coordinate.
    """
    return max(1.0, clip_norm) + SHARE_RANGE_STDS * share_noise_std
