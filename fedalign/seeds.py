"""Seeds derived from the experiment seed, so every engine draws the same randomness."""

from __future__ import annotations

import numpy as np


def derive_seed(*parts: int) -> int:
    """A 31-bit seed determined by integer ``parts`` (e.g. seed, client, round).

    Args:
        *parts: integers that determine the seed, in order.
    """
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)
