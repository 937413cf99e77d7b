"""Alignment strategies: what a student learns from, and which peer layer each student layer aligns with.

Layers are numbered 1..L as in the paper. A map is a list of pairs
``(student_layer, peer_layer)``; the alignment loss of a student sums the
structure KL over these pairs (see :func:`fedalign.statistics.structure_kl`).

* ``alignahead``: student layer l+1 <- peer layer l for l = 1..L-1, and
  student layer 1 <- peer layer L (cyclic: the student's first layer is
  pulled towards the peer's deepest structure).
* ``one-to-one`` (OC): student layer l <- peer layer l.
* ``self`` (control arm): the alignahead map, but the "peer" is the student
  itself, frozen at the end of its previous turn; it never reads a peer's
  statistics and shares nothing. Gain over ``self`` is knowledge transferred
  between students; gain of ``self`` over ``none`` is a cross-layer regulariser.
* ``logits``: deep mutual learning (Zhang et al., CVPR 2018): KL(peer || student)
  of the class distributions on the alignment graph's nodes
  (:func:`fedalign.statistics.class_log_probs`); no layer map.
* ``votes``: private voting over clients (PATE's aggregation, Papernot et al. 2017/2018): each
  client votes its student's argmax on the query set; a student learns (cross-entropy) the answered
  public nodes' plurality labels of its peers' summed votes (:mod:`fedalign.client.votes`).
* ``none``: students train independently (the vanilla baseline).
* ``fedavg`` / ``dp-fedavg``: the reference arms, which average model *weights* (McMahan et al.
  2017; client-level DP, McMahan et al. 2018); no layer map.

Students of different depths (student L_s, peer L_p) pair by relative depth.
Student layer j corresponds to peer layer ``q(j) = ceil(j * L_p / L_s)``,
the peer layer at the same fraction of the network's depth. ``one-to-one``
uses ``q(j)``; ``alignahead`` uses the peer layer just before it,
``q(j) - 1``, wrapping 0 to L_p. With L_s == L_p this reduces exactly to the
definitions above. Example, L_s = 2, L_p = 4: one-to-one pairs (1, 2), (2, 4);
alignahead pairs (1, 1), (2, 3).
"""

from __future__ import annotations

STRATEGIES = ("alignahead", "one-to-one", "self", "logits", "votes", "none", "fedavg", "dp-fedavg")
# Strategies whose students release statistics to their peers (through the server).
SHARING_STRATEGIES = ("alignahead", "one-to-one", "logits", "votes")
# Strategies whose release is per node of the query set (class distributions or votes), not per edge.
NODE_STRATEGIES = ("logits", "votes")
# The reference arms that send model weights instead of statistics (fedalign's default never does).
WEIGHT_STRATEGIES = ("fedavg", "dp-fedavg")
# Strategies whose trainers need only their peers' summed mass (fedalign.wire.PeerMass), which the server
# keeps per student depth so that a train request does not grow with the number of clients. ``votes``
# is not one of them: its client sums one-hot votes and reads the raw histogram.
SUMMED_STRATEGIES = ("alignahead", "one-to-one", "logits")


def shares_statistics(strategy: str) -> bool:
    """True when students of ``strategy`` release statistics to peers (``self`` and ``none`` share nothing).

    Args:
        strategy: an alignment strategy, one of :data:`STRATEGIES`.
    """
    return strategy in SHARING_STRATEGIES


def released_arrays(strategy: str, hidden_layers: int) -> int:
    """Arrays in one release: one per hidden layer (structure), one for ``logits`` (class distributions).

    Args:
        strategy: an alignment strategy, one of :data:`STRATEGIES`.
        hidden_layers: the number of hidden layers of the releasing student.
    """
    return 1 if strategy in NODE_STRATEGIES else hidden_layers


def _proportional_layer(student_layer: int, student_depth: int, peer_depth: int) -> int:
    """The peer layer (1..L_p) at the same relative depth as ``student_layer``."""
    return -(-student_layer * peer_depth // student_depth)  # ceil division on ints


def layer_pairs(strategy: str, student_depth: int, peer_depth: int) -> list[tuple[int, int]]:
    """Pairs ``(student_layer, peer_layer)``, 1-based, for one student/peer couple.

    Args:
        strategy: one of :data:`STRATEGIES` (``logits`` and ``none`` have no pairs;
            ``self`` has alignahead's, with the student as its own peer).
        student_depth: L_s >= 1, the number of aligned student layers.
        peer_depth: L_p >= 1, the number of layers the peer shares.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown alignment strategy {strategy!r}; choose one of {STRATEGIES}")
    if student_depth < 1 or peer_depth < 1:
        raise ValueError(f"depths must be >= 1, got student {student_depth}, peer {peer_depth}")
    if strategy not in ("alignahead", "one-to-one", "self"):
        return []
    pairs = []
    for j in range(1, student_depth + 1):
        q = _proportional_layer(j, student_depth, peer_depth)
        if strategy in ("alignahead", "self"):
            q = q - 1 if q > 1 else peer_depth
        pairs.append((j, q))
    return pairs


def mass_pairs(strategy: str, student_depth: int, peer_depth: int) -> list[tuple[int, int]]:
    """The pairs ``(student_layer, peer_array)`` a peer's release adds to a student's summed mass: the
    layer map (:func:`layer_pairs`), or ``[(1, 1)]`` for the node strategies (one array, the class
    distributions or votes, and no layer map).

    Args:
        strategy: one of :data:`STRATEGIES`.
        student_depth: L_s >= 1, the student's aligned layers.
        peer_depth: L_p >= 1, the arrays the peer released.
    """
    return [(1, 1)] if strategy in NODE_STRATEGIES else layer_pairs(strategy, student_depth, peer_depth)
