"""Layer alignment maps: which peer layer each student layer learns from.

Layers are numbered 1..L as in the paper. A map is a list of pairs
``(student_layer, peer_layer)``; the alignment loss of a student sums the
structure KL over these pairs (see :func:`fedalign.statistics.structure_kl`).

* ``alignahead``: student layer l+1 <- peer layer l for l = 1..L-1, and
  student layer 1 <- peer layer L (cyclic: the student's first layer is
  pulled towards the peer's deepest structure).
* ``one-to-one`` (OC): student layer l <- peer layer l.
* ``none``: no pairs; students train independently (the vanilla baseline).

Students of different depths (student L_s, peer L_p) pair by relative depth.
Student layer j corresponds to peer layer ``q(j) = ceil(j * L_p / L_s)``,
the peer layer at the same fraction of the network's depth. ``one-to-one``
uses ``q(j)``; ``alignahead`` uses the peer layer just before it,
``q(j) - 1``, wrapping 0 to L_p. With L_s == L_p this reduces exactly to the
definitions above. Example, L_s = 2, L_p = 4: one-to-one pairs (1, 2), (2, 4);
alignahead pairs (1, 1), (2, 3).
"""

from __future__ import annotations

STRATEGIES = ("alignahead", "one-to-one", "none")


def _proportional_layer(student_layer: int, student_depth: int, peer_depth: int) -> int:
    """The peer layer (1..L_p) at the same relative depth as ``student_layer``."""
    return -(-student_layer * peer_depth // student_depth)  # ceil division on ints


def layer_pairs(strategy: str, student_depth: int, peer_depth: int) -> list[tuple[int, int]]:
    """Pairs ``(student_layer, peer_layer)``, 1-based, for one student/peer couple.

    Args:
        strategy: one of :data:`STRATEGIES`.
        student_depth: L_s >= 1, the number of aligned student layers.
        peer_depth: L_p >= 1, the number of layers the peer shares.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown alignment strategy {strategy!r}; choose one of {STRATEGIES}")
    if student_depth < 1 or peer_depth < 1:
        raise ValueError(f"depths must be >= 1, got student {student_depth}, peer {peer_depth}")
    if strategy == "none":
        return []
    pairs = []
    for j in range(1, student_depth + 1):
        q = _proportional_layer(j, student_depth, peer_depth)
        if strategy == "alignahead":
            q = q - 1 if q > 1 else peer_depth
        pairs.append((j, q))
    return pairs
