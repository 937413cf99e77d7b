"""Where a client's privacy noise comes from."""

from __future__ import annotations

import torch

from ..config import ExperimentConfig
from ..seeds import derive_seed

STATISTICS_STREAM, DP_SGD_STREAM, LABEL_STREAM = 1, 2, 3


def noise_generator(cfg: ExperimentConfig, client_id: int, round_number: int, stream: int,
                    device: torch.device) -> torch.Generator:
    """OS entropy, unless ``privacy.reproducible_noise`` (then seeded by ``seed``, client, round and stream).

    Seed-derived noise could be regenerated and subtracted by anyone who knows the config
    seed (the server does): use it only for tests and comparisons.
    """
    generator = torch.Generator(device=device)
    if cfg.privacy.reproducible_noise:
        return generator.manual_seed(derive_seed(cfg.seed, client_id, round_number, stream))
    generator.seed()  # non-deterministic
    return generator
