"""Where privacy noise comes from: the operating system's CSPRNG.

Every random draw of a privacy mechanism -- the Gaussian noise on released statistics and on
secure-aggregation shares, DP-SGD's gradient noise and Poisson sampling, randomised response on
labels (all on the clients), and dp-fedavg's noise on the summed updates (on the server,
:class:`fedalign.privacy.fedavg.WeightPrivacy`) -- comes from a :class:`NoiseSource`. Its bits come
from ``os.urandom`` (Linux' ``getrandom(2)``: a ChaCha20 CSPRNG with a 256-bit key, reseeded from the
kernel's entropy pool), read afresh for every draw: there is no user-space state to recover, and no
seed. A 32-bit
``torch.Generator`` (what ``torch.Generator().seed()`` keeps on the CPU) would let an attacker
search all 2^32 noise streams and re-make a release exactly; nothing here is seeded that way.

Gaussians are drawn in float64 by the Box-Muller transform from 53-bit uniforms and, as Opacus'
``secure_mode`` does (Holohan & Braghin 2021, section 5.1), every output is the sum of four
N(0, std^2) draws halved, so that recovering the uniforms behind one output (the floating-point
attack on Opacus, arXiv 2112.05307) means inverting a sum of four samples. What this does not
cover: Mironov's attack on the *release* (CCS 2012): a float64 x + noise, rounded to float32 for
the wire, has gaps whose pattern depends on x. The standard fixes (the snapping mechanism, a
discrete Gaussian on a fixed grid) are not implemented; the guarantee is the real-number one.

``privacy.reproducible_noise`` (tests and comparisons only) replaces the OS bits by a stream
seeded from the config: anyone holding the config (the server does) can regenerate the noise,
so such a run reports epsilon = infinity with every release (:func:`reported_epsilon`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .config import ExperimentConfig
from .seeds import derive_seed

log = logging.getLogger(__name__)

STATISTICS_STREAM, DP_SGD_STREAM, LABEL_STREAM = 1, 2, 3
_SUMMANDS = 4  # Gaussians summed per output (Opacus' secure_mode: 2n with n = 2)


def _os_random_bytes(count: int) -> bytes:
    return os.urandom(count)


class NoiseSource:
    """Random draws for privacy mechanisms, from a byte source.

    Args:
        random_bytes: ``n -> n`` random bytes. The default, ``os.urandom``, is the only
            source that gives privacy (read at every draw); any other (a seeded stream) is for tests.
    """

    def __init__(self, random_bytes: Callable[[int], bytes] | None = None) -> None:
        self.random_bytes = random_bytes or _os_random_bytes

    def _words(self, count: int) -> np.ndarray:
        """``count`` independent uniform 64-bit words (uint64)."""
        return np.frombuffer(self.random_bytes(8 * count), dtype=np.uint64, count=count)

    def uniform(self, shape: tuple[int, ...] | torch.Size) -> Tensor:
        """Uniform on [0, 1): float64 tensor of ``shape``, 53 random bits each, on the CPU.

        Args:
            shape: the shape of the result.
        """
        count = math.prod(shape)
        values = (self._words(count) >> np.uint64(11)).astype(np.float64) * 2.0**-53
        return torch.from_numpy(values).view(tuple(shape))

    def standard_normal(self, count: int) -> Tensor:
        """``count`` N(0, 1) draws, float64, each the halved sum of four Box-Muller Gaussians.

        Args:
            count: how many draws.
        """
        pairs = (_SUMMANDS * count + 1) // 2
        u = self.uniform((2, pairs))
        radius = torch.sqrt(-2.0 * torch.log1p(-u[0]))  # 1 - u in (0, 1]: log is finite
        angle = 2.0 * math.pi * u[1]
        gaussians = torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)])[: _SUMMANDS * count]
        return gaussians.view(_SUMMANDS, count).sum(0) / math.sqrt(_SUMMANDS)

    def normal(
        self,
        shape: tuple[int, ...] | torch.Size,
        std: float,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> Tensor:
        """N(0, std^2) of ``shape``: drawn in float64 on the CPU, then cast to ``dtype`` on ``device``.

        Args:
            shape: the shape of the result.
            std: the standard deviation, finite and >= 0 (0 gives zeros).
            dtype: the result's dtype.
            device: the result's device.
        """
        if not (0 <= std < math.inf):
            raise ValueError(f"std must be a finite number >= 0, got {std}")
        if std == 0:
            return torch.zeros(tuple(shape), dtype=dtype, device=device)
        noise = self.standard_normal(math.prod(shape)).view(tuple(shape)) * std
        return noise.to(device=device, dtype=dtype)

    def bernoulli(self, shape: tuple[int, ...] | torch.Size, probability: float) -> Tensor:
        """Bool tensor of ``shape``, each entry True with ``probability`` (up to 2^-53).

        Args:
            shape: the shape of the result.
            probability: the probability of True, in [0, 1].
        """
        return self.uniform(shape) < probability

    def randint(self, low: int, high: int, shape: tuple[int, ...] | torch.Size) -> Tensor:
        """Uniform integers in [low, high), long tensor of ``shape``: exactly uniform (rejection sampling).

        Args:
            low: the smallest value (inclusive).
            high: the bound (exclusive), > ``low``.
            shape: the shape of the result.
        """
        span = high - low
        if not 0 < span < 2**63:
            raise ValueError(f"need low < high, got [{low}, {high})")
        count = math.prod(shape)
        limit = (2**64 // span) * span  # accept words below the largest multiple of span: no modulo bias
        out = np.empty(0, dtype=np.uint64)
        while len(out) < count:
            words = self._words(max(16, 2 * (count - len(out))))
            out = np.concatenate([out, words[words < np.uint64(limit)] if limit < 2**64 else words])
        values = (out[:count] % np.uint64(span)).astype(np.int64) + low
        return torch.from_numpy(values).view(tuple(shape))


def seeded_noise(seed: int) -> NoiseSource:
    """A reproducible :class:`NoiseSource` from ``seed`` (numpy's PCG64): for tests and comparisons
    only -- anyone who knows the seed can regenerate every draw.

    Args:
        seed: the PCG64 seed.
    """
    return NoiseSource(np.random.Generator(np.random.PCG64(seed)).bytes)


def noise_source(cfg: ExperimentConfig, client_id: int, round_number: int, stream: int) -> NoiseSource:
    """The OS CSPRNG, unless ``privacy.reproducible_noise`` (then a stream seeded by ``seed``, client,
    round and stream: reproducible, and regenerable by anyone who knows the config).

    Args:
        cfg: the experiment config (``seed`` and ``privacy.reproducible_noise``).
        client_id: the client's index.
        round_number: the round the draws are for.
        stream: which of the client's noise streams (e.g. ``STATISTICS_STREAM``, ``LABEL_STREAM``).
    """
    if cfg.privacy.reproducible_noise:
        return seeded_noise(derive_seed(cfg.seed, client_id, round_number, stream))
    return NoiseSource()


def reported_epsilon(cfg: ExperimentConfig, client_id: int, epsilon: float) -> float:
    """The epsilon a client reports: the accountant's ``epsilon``, or infinity -- with a warning,
    every time -- where ``privacy.reproducible_noise`` makes the noise regenerable from the config
    (the accountant's figure assumes noise nobody else can compute). Nothing spent yet (0: only
    data-free releases so far) stays 0.

    Args:
        cfg: the experiment config (``privacy.reproducible_noise``).
        client_id: the client's index (named in the warning).
        epsilon: the accountant's epsilon spent so far.
    """
    if not cfg.privacy.reproducible_noise or epsilon == 0:
        return epsilon
    log.warning(
        "client %d: privacy.reproducible_noise is on: the noise can be regenerated from the config (the "
        "server holds it), so this release reports epsilon = inf (%.4g holds only for secret noise); "
        "for tests only",
        client_id,
        epsilon,
    )
    return math.inf
