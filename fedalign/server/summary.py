"""A run's summary from its round log: best validation per client, the test metric there, totals."""

from __future__ import annotations

from typing import Any

import numpy as np

from .records import RoundRecord


def summarise(records: list[RoundRecord], num_clients: int, metric_name: str) -> dict:
    """Best validation metric per client and the test metric of that same round.

    Ties in validation keep the earliest round. Clients that never reported
    a validation metric get ``None``; so does the test metric of a client with
    no test nodes (many clients on a small graph), and the mean leaves it out. Rounds whose release was withheld still
    count (the client trained and evaluated). When any record carries
    ``epsilon``, each client gets ``epsilon`` (its last reported value, None if
    it never reported one) and the summary a top-level ``epsilon``, the
    maximum over clients, plus ``withheld_rounds``.

    Args:
        records: the run's round records.
        num_clients: K.
        metric_name: the task metric's name (``accuracy`` or ``micro_f1``).
    """
    clients: dict[str, dict[str, Any]] = {}
    for c in range(num_clients):
        rows = [r for r in records if r.client == c and r.status in ("ok", "withheld") and "val_metric" in r.metrics]
        if not rows:
            clients[str(c)] = {"best_val": None, "test_at_best_val": None, "best_round": None, "rounds_trained": 0}
            continue
        best = max(rows, key=lambda r: (r.metrics["val_metric"], -r.round))
        clients[str(c)] = {
            "best_val": best.metrics["val_metric"],
            "test_at_best_val": best.metrics.get("test_metric"),  # None: the client holds no test nodes
            "best_round": best.round,
            "rounds_trained": len(rows),
        }
    privacy = {}
    if any("epsilon" in r.metrics for r in records):
        spent = []
        for c in range(num_clients):
            reported = [r for r in records if r.client == c and "epsilon" in r.metrics]
            last = max(reported, key=lambda r: r.round).metrics["epsilon"] if reported else None
            clients[str(c)]["epsilon"] = last
            if last is not None:
                spent.append(last)
        privacy = {
            "epsilon": max(spent) if spent else None,
            "withheld_rounds": [{"round": r.round, "client": r.client} for r in records if r.status == "withheld"],
        }
    tests = [v["test_at_best_val"] for v in clients.values() if v["test_at_best_val"] is not None]
    return {
        "metric": metric_name,
        "clients": clients,
        "mean_test_at_best_val": float(np.mean(tests)) if tests else None,
        "missing_rounds": [
            {"round": r.round, "client": r.client, "error": r.error} for r in records if r.status == "missing"
        ],
        "rejected_rounds": [
            {"round": r.round, "client": r.client, "error": r.error} for r in records if r.status == "rejected"
        ],
        "bytes_sent_total": int(sum(r.bytes_sent for r in records)),
        "bytes_received_total": int(sum(r.bytes_received for r in records)),
        **privacy,
    }
