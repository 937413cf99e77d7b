"""Ledgers that cannot silently reset: the checks the server and its clients make on the privacy spent.

A client's privacy ledgers (what it has spent, :class:`~fedalign.privacy.PrivacyLedger`) live in its
checkpoint. A client that has lost it -- a deleted client-state folder, a run resumed on the other
engine (whose clients keep their state elsewhere), an older checkpoint put back -- would start a fresh
ledger and spend its budget a second time. So, on both sides of the wire:

* the server keeps each client's last reported epsilon (:class:`ReportedEpsilon`, saved with the run
  in ``server-state.npz``) and tells the client with every request (``epsilon_before``);
* a client that holds no ledger with at least that epsilon releases nothing and says so: its reply
  carries only :data:`LEDGER_LOST` (:func:`refusal`) -- or, in a SecAgg+ round, which needs a share
  from every client that answers, it leaves the round with an error saying so (:func:`lost_error`);
* the server stops the run -- :class:`LedgerBroken`, naming the client and the fix -- on such a reply,
  or on a reply whose epsilon is lower than before, missing after one was reported, or not a number;
  so it does when a resumed run has lost the state that holds these values.

Epsilon 0 (nothing charged yet, e.g. only round 0's free release) and runs without privacy (no
epsilon at all) are never refused. The values are the ones replies carry: ``epsilon`` and
``dp_sgd_epsilon`` (:data:`LEDGER_METRICS`); both only grow.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

LEDGER_METRICS = ("epsilon", "dp_sgd_epsilon")
LEDGER_LOST = "ledger_lost"  # the reply of a client that refuses to release (in wire.REPLY_METRICS)
LOST = "has lost its privacy ledger"  # how a refusal reads where no reply can carry LEDGER_LOST (SecAgg+)
RELATIVE_TOLERANCE = 1e-9  # a restored ledger reports the same float; this only absorbs rounding

FIX = (
    "Put the client's state back (its checkpoint for this run: <run folder>/client-state with "
    "--engine inprocess, <state dir>/<run folder name> on Flower) and resume again with the engine that "
    "wrote it, or start a new run"
)


class LedgerBroken(RuntimeError):
    """A client's privacy ledger did not continue where it stopped; the run stops (the message says
    which client, why, and how to fix it)."""


def number(value: object) -> float:
    """``value`` as a float; NaN for anything that is not a number (None, a string).

    Args:
        value: anything a reply's metric may hold.
    """
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def below(value: float, before: float) -> bool:
    """Whether ``value`` is lower than ``before`` (beyond rounding); NaN counts as lower.

    Args:
        value: the newly reported value.
        before: the value reported earlier.
    """
    if math.isnan(value):
        return True
    if math.isinf(before):
        return value < before
    return value < before - RELATIVE_TOLERANCE * max(1.0, abs(before))


class ReportedEpsilon:
    """Per ledger metric (:data:`LEDGER_METRICS`), each client's largest reported value so far.

    :attr:`latest` (client -> the largest over its metrics) is what the server tells each client as
    ``epsilon_before``; the transports read it (the coordinator hands them this dict).
    """

    def __init__(self) -> None:
        self.values: dict[str, dict[int, float]] = {name: {} for name in LEDGER_METRICS}
        self.latest: dict[int, float] = {}

    def problem(self, client: int, metrics: dict) -> str | None:
        """Why the reply ``metrics`` of ``client`` breaks its ledger, or None.

        Args:
            client: the client's index.
            metrics: the reply's metrics.
        """
        if LEDGER_LOST in metrics and number(metrics[LEDGER_LOST]) != 0.0:
            return f"client {client} {LOST} ({self._no_checkpoint(client)}) and released nothing"
        for name in LEDGER_METRICS:
            earlier = self.values[name].get(client)
            if earlier is None:
                continue
            if name not in metrics:
                if name == "epsilon":  # every reply of a client with a release ledger carries it
                    return f"client {client} reported no epsilon after reporting {earlier:.4g}: its ledger is gone"
                continue
            value = number(metrics[name])
            if below(value, earlier):
                return (
                    f"client {client} reported {name} {value:.4g} after {earlier:.4g}: its ledger started "
                    "again (lost or older state)"
                )
        return None

    def problem_in_error(self, client: int, error: str) -> str | None:
        """Why the error reply of ``client`` says its ledger is lost (:func:`lost_error`), or None.

        Args:
            client: the client's index.
            error: the error message of the client's failed reply.
        """
        if lost_error(client) not in error:
            return None
        return f"client {client} {LOST} ({self._no_checkpoint(client)}) and left the round without releasing"

    def _no_checkpoint(self, client: int) -> str:
        before = self.latest.get(client)
        held = "" if before is None else f" holding the epsilon {before:.4g} it reported before"
        return f"it found no checkpoint{held}"

    def record(self, client: int, metrics: dict) -> None:
        """Take the ledger values of an accepted reply (each client's values only grow).

        Args:
            client: the client's index.
            metrics: the accepted reply's metrics (only :data:`LEDGER_METRICS` are read).
        """
        for name in LEDGER_METRICS:
            if name in metrics:
                value = number(metrics[name])
                if not math.isnan(value) and value >= 0:
                    self.values[name][client] = max(value, self.values[name].get(client, value))
                    self.latest[client] = max(value, self.latest.get(client, value))

    def merge(self, values: dict[str, dict[int, float]]) -> None:
        """Take saved values (``{metric: {client: value}}``), keeping the larger of each.

        Args:
            values: ``{metric: {client: value}}``, as saved in the server's state (client ids may be strings).
        """
        for name, per_client in values.items():
            if name in self.values:
                for client, value in per_client.items():
                    self.record(int(client), {name: value})

    def merge_records(self, records: Iterable) -> None:
        """Take the values in round records (``rounds.jsonl``): a state saved before they were kept.

        Args:
            records: the run's round records (:class:`~fedalign.server.records.RoundRecord`).
        """
        for record in records:
            self.record(record.client, {k: v for k, v in record.metrics.items() if k in LEDGER_METRICS})

    def spent(self) -> dict[int, float]:
        """Clients that reported a charged release (epsilon > 0) -> the largest value."""
        return {c: v for c, v in self.latest.items() if v > 0}


def lost_error(client: int) -> str:
    """The start of the error a client raises where its refusal cannot be a reply (a SecAgg+ round).

    Args:
        client: the client's index.
    """
    return f"client {client} {LOST} and releases nothing"


def refusal(client: int, epsilon_before: float | None, holds_state: bool, spent: float | None) -> str | None:
    """Why client ``client`` must not release, or None.

    Args:
        client: the client's index (named in the message).
        epsilon_before: what the server says this client reported before (None: nothing; 0: nothing
            charged).
        holds_state: whether the client continues from its own state (a checkpoint found on disk, or a
            student that has answered in this process).
        spent: the largest epsilon its ledgers hold now (None: it keeps none).
    """
    if epsilon_before is None or not number(epsilon_before) > 0:
        return None
    if not holds_state:
        return (
            f"client {client}: no checkpoint of this run, but the server says it reported epsilon "
            f"{epsilon_before:.4g} before: its privacy ledger is lost; releasing nothing"
        )
    if spent is not None and below(spent, epsilon_before):
        return (
            f"client {client}: its ledger holds epsilon {spent:.4g}, less than the {epsilon_before:.4g} it "
            "reported before (an older checkpoint?); releasing nothing"
        )
    return None
