"""How much signal can survive the privacy noise in the privacy study's regime: per-coordinate SNR bounds.

    FEDALIGN_DATA_ROOT=../shared/data python -m bench.privacy_snr     # -> results/privacy-study/snr.{csv,md}

For K clients, a per-client epsilon, a strategy (structure statistics: L x E coordinates; ``logits``:
N x C class probabilities) and a mode (each client noises its own release, or secure aggregation with
distributed noise), it prints sigma as the clients solve it for their planned releases, the noise std
on one coordinate of the peers' mean that a student aligns with, the largest RMS per-coordinate signal
a release clipped to norm C can carry (C / sqrt(D): all of the clipped norm spread evenly), and their
ratio. No training: the figures depend only on the public sizes and the accounting.

``--centring`` also measures what subtracting the public uniform baseline (``privacy.subtract_baseline``)
buys: for client 0's student at initialisation and after 100 local epochs, ||p|| / ||p - b||. Both
norms exceed C, so both releases are clipped to C; the part that differs from the public baseline then
carries C ||p - b|| / ||p|| of the clipped norm without centring (sensitivity sqrt(2) C) and all of C
with it (sensitivity 2 C): centring multiplies the SNR of that part by (||p|| / ||p - b||) / sqrt(2).

``--accountants`` compares the noise each of Opacus' accountants needs for the same epsilon over the
study's planned releases (RDP's bound against PRV's numerically tight upper bound).

* Each client alone: K - 1 releases with noise sigma C each; their mean has noise sigma C / sqrt(K - 1).
* Secure aggregation: K - 1 shares with noise sigma C / sqrt(n) each (n honest shares,
  :func:`fedalign.aggregation.honest_noise_shares`); their mean has noise sigma C / sqrt(n (K - 1)).
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

from fedalign.aggregation import honest_noise_shares
from fedalign.alignment import released_arrays
from fedalign.config import load_config
from fedalign.privacy import StatisticsMechanism
from fedalign.schedules import planned_releases
from fedalign.server import release_layout_of

REPO = Path(__file__).resolve().parent.parent
BASE = REPO / "simulations" / "privacy-study" / "base.yaml"
STRATEGIES = {"alignahead": ["align.strategy=alignahead"], "logits": ["align.strategy=logits"]}


def snr_rows(clients: list[int], epsilons: list[float]) -> list[dict]:
    rows = []
    for k in clients:
        for strategy, overrides in STRATEGIES.items():
            cfg = load_config(BASE, [f"federation.num_clients={k}", *overrides])
            layout = release_layout_of(cfg)
            depth = cfg.model.hidden_layers
            if layout is None or not isinstance(depth, int):
                raise RuntimeError(f"{BASE} needs its data root and one depth for every student")
            arrays = released_arrays(strategy, depth)
            coordinates = arrays * layout.num_edges
            p = cfg.privacy
            n = honest_noise_shares(k, p.max_dropout_share, p.colluders)
            for eps in epsilons:
                sigma = StatisticsMechanism.for_budget(
                    eps, p.delta, planned_releases(cfg, 0), p.clip_norm, num_layers=arrays, accountant=p.accountant
                ).noise_multiplier
                signal = p.clip_norm / math.sqrt(coordinates)
                for mode, noise in (
                    ("each client alone", sigma * p.clip_norm / math.sqrt(k - 1)),
                    ("secure aggregation", sigma * p.clip_norm / math.sqrt(n * (k - 1))),
                ):
                    rows.append(
                        {
                            "clients": k,
                            "strategy": strategy,
                            "coordinates": coordinates,
                            "epsilon": eps,
                            "sigma": round(sigma, 4),
                            "mode": mode,
                            "noise_std_of_peers_mean": noise,
                            "max_rms_signal": signal,
                            "snr_bound": signal / noise,
                        }
                    )
    return rows


def centring_rows(epochs: int = 100) -> list[dict]:
    """||p|| / ||p - b|| of client 0's release at initialisation and after ``epochs`` local epochs."""
    import numpy as np
    import torch

    from fedalign.client import build_student
    from fedalign.privacy.mechanism import uniform_baseline

    rows = []
    arms = {
        "alignahead": ["align.strategy=alignahead", "align.kernel=l1-softmax", "align.tau=100"],
        "logits": ["align.strategy=logits", "align.weight=0.1", "align.logit_temperature=10"],
    }
    for strategy, overrides in arms.items():
        cfg = load_config(BASE, ["privacy.mechanism=none", "privacy.target_epsilon=null", *overrides])
        student = build_student(cfg, 0)
        for trained in (0, epochs):
            while student.epochs_trained < trained:
                student.train({}, 1)
            stats = student.statistics()
            baseline = uniform_baseline(torch.from_numpy(student.layout.target), student.layout.num_nodes).numpy()
            p = np.concatenate(stats).astype(np.float64)
            ratio = float(np.linalg.norm(p) / np.linalg.norm(p - np.tile(baseline, len(stats))))
            rows.append(
                {
                    "strategy": strategy,
                    "epochs": trained,
                    "norm_ratio": ratio,
                    "centring_snr_gain": ratio / math.sqrt(2),
                }
            )
    return rows


def accountant_rows(epsilons: list[float]) -> list[dict]:
    """sigma for each epsilon over the study's planned releases under the RDP and the PRV accountant."""
    cfg = load_config(BASE, [])
    p, releases = cfg.privacy, planned_releases(cfg, 0)
    rows = []
    for eps in epsilons:
        sigma = {
            name: StatisticsMechanism.for_budget(eps, p.delta, releases, p.clip_norm, accountant=name).noise_multiplier
            for name in ("rdp", "prv")
        }
        rows.append(
            {
                "epsilon": eps,
                "releases": releases,
                "sigma_rdp": sigma["rdp"],
                "sigma_prv": sigma["prv"],
                "prv_noise_of_rdp": sigma["prv"] / sigma["rdp"],
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="20,100")
    parser.add_argument("--epsilons", default="1,2,4,8")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "privacy-study")
    parser.add_argument("--centring", action="store_true", help="also measure what baseline subtraction buys")
    parser.add_argument("--accountants", action="store_true", help="also compare the RDP and PRV accountants")
    args = parser.parse_args(argv)
    rows = snr_rows([int(k) for k in args.clients.split(",")], [float(e) for e in args.epsilons.split(",")])
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "snr.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "| K | strategy | coordinates D | epsilon | sigma | mode | noise std of the peers' mean | "
        "max RMS signal C/sqrt(D) | SNR bound |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['clients']} | {r['strategy']} | {r['coordinates']} | {r['epsilon']:g} | {r['sigma']:.3g} | "
        f"{r['mode']} | {r['noise_std_of_peers_mean']:.3g} | {r['max_rms_signal']:.2e} | {r['snr_bound']:.2e} |"
        for r in rows
    ]
    if args.centring:
        lines += [
            "",
            "| strategy | local epochs | norm ratio ‖p‖ / ‖p − b‖ | SNR gain of centring |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['strategy']} | {r['epochs']} | {r['norm_ratio']:.2f} | {r['centring_snr_gain']:.2f} |"
            for r in centring_rows()
        ]
    if args.accountants:
        lines += [
            "",
            "| epsilon | releases | sigma (RDP) | sigma (PRV) | PRV noise / RDP noise |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['epsilon']:g} | {r['releases']} | {r['sigma_rdp']:.4g} | {r['sigma_prv']:.4g} | "
            f"{r['prv_noise_of_rdp']:.3f} |"
            for r in accountant_rows([float(e) for e in args.epsilons.split(",")])
        ]
    (args.out / "snr.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
