"""The study's tuned arms, chosen on validation from the tuning sweeps and written as an arms file.

    python -m bench.privacy_study.arms --out results/privacy-study --write simulations/privacy-study/tuned-arms.yaml

Reads every cell of the sweeps marked ``purpose: tuning`` (:func:`bench.privacy_study.load_records`),
groups them by strategy, and for each arm below takes the grid setting (all grid values but the seed)
with the highest mean validation metric (each student's best validation, mean over students and seeds);
test metrics are never read. The arms file then holds, per arm, its fixed settings and the chosen grid
values, so every study sweep runs the same, fixed hyper-parameters:

* ``votes``: strategy votes, the best setting among those with a consensus threshold T > 0;
* ``votes-t0``: strategy votes without the threshold (T = 0), its best setting among the T = 0 cells;
* ``logits-q``: strategy logits on a query set (align.queries), its best setting;
* ``dp-fedavg`` and ``fedavg``: the best number of rounds of dp-fedavg (fedavg, its ε = ∞ twin, takes the same).

Every statistics arm uses secure aggregation and ``privacy.final_release: false``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from . import OUT, load_records

FIXED = {
    "votes": [
        "align.strategy=votes",
        "align.weight=1.0",
        "privacy.secure_aggregation=true",
        "privacy.final_release=false",
    ],
    "logits-q": [
        "align.strategy=logits",
        "align.weight=0.1",
        "align.logit_temperature=10.0",
        "privacy.secure_aggregation=true",
        "privacy.final_release=false",
    ],
    "dp-fedavg": ["align.strategy=dp-fedavg", "privacy.mechanism=none", "privacy.secure_aggregation=false"],
}


def best_setting(records: list[dict[str, Any]], keep=lambda grid: True) -> dict[str, str] | None:
    """The grid values (seed excluded) of the setting with the highest mean validation among ``records``.

    Args:
        records: tuning cells (:func:`bench.privacy_study.modes.describe`), each with ``grid`` and ``validation``.
        keep: which settings may be chosen (a predicate on the grid values).
    """
    scores: dict[tuple, list[float]] = {}
    for r in records:
        grid = {k: v for k, v in r["grid"].items() if k != "seed"}
        if r["validation"] is not None and keep(grid):
            scores.setdefault(tuple(sorted(grid.items())), []).append(r["validation"])
    if not scores:
        return None
    best = max(scores, key=lambda s: sum(scores[s]) / len(scores[s]))
    return dict(best)


def tuned_arms(records: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The arms (name -> overrides) chosen from the tuning cells ``records``; an arm without cells is left out."""
    by_strategy: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_strategy.setdefault(r["strategy"], []).append(r)
    choices = {
        "votes": best_setting(by_strategy.get("votes", []), lambda g: float(g.get("align.vote_threshold", 0)) > 0),
        "votes-t0": best_setting(by_strategy.get("votes", []), lambda g: float(g.get("align.vote_threshold", 0)) == 0),
        "logits-q": best_setting(by_strategy.get("logits", []), lambda g: g.get("align.queries") not in (None, "")),
        "dp-fedavg": best_setting(by_strategy.get("dp-fedavg", [])),
    }
    arms = {}
    for name, grid in choices.items():
        if grid is None:
            continue
        base = FIXED["votes" if name.startswith("votes") else name]
        arms[name] = base + [f"{k}={v}" for k, v in grid.items() if k != "arm"]
    if "dp-fedavg" in arms:  # its noise-free twin: the same rounds, no clipping, no noise
        rounds = [o for o in arms["dp-fedavg"] if o.startswith(("federation.rounds=", "train.local_epochs="))]
        arms["fedavg"] = [
            "align.strategy=fedavg",
            "privacy.mechanism=none",
            "privacy.secure_aggregation=false",
            "privacy.target_epsilon=null",
            *rounds,
        ]
    return arms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="the study's results folder (with the tuning sweeps)")
    parser.add_argument("--write", type=Path, required=True, help="the arms file to write")
    args = parser.parse_args(argv)
    _, tuning = load_records(args.out)
    arms = tuned_arms(tuning)
    if not arms:
        print(f"no finished tuning cells under {args.out}")
        return 1
    header = (
        "# Written by `python -m bench.privacy_study.arms` from the tuning sweeps (validation only); "
        "do not edit by hand.\n"
    )
    args.write.write_text(header + yaml.safe_dump(arms, sort_keys=False, width=200))
    print(args.write.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
