"""Secure aggregation with distributed DP: shares, their sum, what the server sees, dropouts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.quantization import dequantize

from fedalign.client.checkpoint import checkpoint_path
from fedalign.noise import NoiseSource
from fedalign.client.release.secure import SecureShareRelease
from fedalign.config import ConfigError, config_from_dict
from fedalign.inprocess import run_inprocess
from fedalign.privacy import PrivacyLedger, StatisticsMechanism
from fedalign.aggregation import honest_noise_shares, minimum_contributors, share_range
from fedalign.server import ServerState
from fedalign.wire import SUM_WITH_OWN, SUM_WITHOUT_OWN, ReleaseLayout
from server.secure_aggregation import share_noise_std
from server.server_app import serve

from loopback import LoopbackGrid

SECURE = {
    "data": {"name": "synthetic-csbm", "synthetic": {"num_nodes": 160}},
    "partition": {"scheme": "iid", "public_fraction": 0.3},
    "federation": {"num_clients": 4, "rounds": 2, "schedule": "simultaneous"},
    "model": {"hidden_layers": 2, "hidden_dim": 8},
    "privacy": {"mechanism": "gaussian", "target_epsilon": 8.0, "secure_aggregation": True,
                "max_dropout_share": 0.25, "colluders": 1},
    "output": {"progress": False, "plot": False},
}


def secure_cfg(**privacy):
    raw = json.loads(json.dumps(SECURE))
    raw["privacy"].update(privacy)
    return config_from_dict(raw)


def last_shares(state_dir, run_tag, clients):
    """Each client's last share, read from its own checkpoint (the test sees the clients' side)."""
    shares = {}
    for c in clients:
        state = torch.load(checkpoint_path(state_dir, run_tag, c), weights_only=True)
        shares[c] = [t.numpy() for t in state["last_share"]]
    return shares


def test_noise_of_a_share_and_the_honest_count():
    """n = K - floor(rho K) - t; a share carries sigma C / sqrt(n) noise around the clipped statistics."""
    assert honest_noise_shares(100, 0.1, 1) == 89 and minimum_contributors(100, 0.1) == 90
    assert honest_noise_shares(2, 0.1, 1) == 1
    mechanism = StatisticsMechanism(clip_norm=0.5, noise_multiplier=3.0)
    stats = [torch.full((20_000,), 1.0)]  # norm 141.4: clipped to 0.5, every entry 0.5 / 141.42
    share = mechanism.share(stats, NoiseSource(), parts=9)
    noise = share[0] - 0.5 / math.sqrt(20_000)
    assert abs(float(noise.mean())) < 0.01
    assert float(noise.std()) == pytest.approx(3.0 * 0.5 / 3, rel=0.02)
    assert share_range(0.5, 0.5) == pytest.approx(1.0 + 9.5 * 0.5)


def test_config_refuses_what_secure_aggregation_cannot_do():
    with pytest.raises(ConfigError, match="simultaneous"):
        config_from_dict({**SECURE, "federation": {"num_clients": 4, "rounds": 2, "schedule": "alternating"}})
    with pytest.raises(ConfigError, match="privacy.colluders"):
        secure_cfg(colluders=3)  # 4 - floor(0.25 * 4) - 3 = 0 honest shares
    with pytest.raises(ConfigError, match="release_every"):
        secure_cfg(release_every=2)


@pytest.mark.parametrize("centred", [False, True])
def test_peers_distributions_are_the_sum_minus_the_own_share_projected(centred):
    """Hand-made: node 0 has in-edges 0 and 1, nodes 1 and 2 one each; two peers' shares (no noise),
    summed with this client's own, give back the peers' mean distribution."""
    cfg = secure_cfg(target_epsilon=None, noise_multiplier=0.0, subtract_baseline=centred)
    layout = ReleaseLayout(3, np.array([0, 0, 1, 2], dtype=np.int64))
    policy = SecureShareRelease.from_config(cfg, 0, 1, layout)
    baseline = np.array([0.5, 0.5, 1.0, 1.0]) if centred else np.zeros(4)
    own, peer_a, peer_b = (np.array(p) - baseline for p in ([0.5, 0.5, 1.0, 1.0], [0.2, 0.8, 1.0, 1.0],
                                                            [0.4, 0.6, 1.0, 1.0]))
    policy.last_share = [own]
    expected = np.array([0.3, 0.7, 1.0, 1.0])  # the mean of (0.2, 0.8) and (0.4, 0.6); singletons 1
    with_own = policy.peer_distributions({SUM_WITH_OWN: [own + peer_a + peer_b, np.array([3.0])]})[0]
    np.testing.assert_allclose(with_own, expected, rtol=1e-6)
    without_own = policy.peer_distributions({SUM_WITHOUT_OWN: [peer_a + peer_b, np.array([2.0])]})[0]
    np.testing.assert_allclose(without_own, expected, rtol=1e-6)
    assert policy.peer_distributions({SUM_WITH_OWN: [own, np.array([1.0])]}) is None  # no peer in the sum


def test_in_process_sum_is_the_sum_of_the_shares_and_epsilon_as_alone(tmp_path):
    """The coordinator keeps only the sum; it equals the clients' shares added up; each client's
    epsilon is what the same sigma gives a client releasing alone (Opacus' PRV accountant, the default)."""
    cfg = secure_cfg()
    run_dir, summary = run_inprocess(cfg, tmp_path / "run")
    assert summary["status"] == "finished"
    completed, cache, summed = ServerState(run_dir).load()
    assert completed == 2 and cache == {} and summed.contributors == [0, 1, 2, 3]
    shares = last_shares(run_dir / "client-state", "", range(4))
    for layer, total in enumerate(summed.arrays):
        np.testing.assert_allclose(total, sum(shares[c][layer] for c in range(4)), rtol=1e-12, atol=1e-12)
    sigma = StatisticsMechanism.for_budget(8.0, 1e-5, 2, 1.0, num_layers=2, accountant="prv").noise_multiplier
    ledger = PrivacyLedger("prv", 1e-5)
    for _ in range(2):
        ledger.record(sigma / math.sqrt(2))
    for client in summary["clients"].values():
        assert client["epsilon"] == pytest.approx(ledger.epsilon(), rel=1e-9) and client["epsilon"] <= 8.0 + 1e-6
    # each share's noise is sigma C / sqrt(n) with n = 4 - 1 - 1 = 2
    assert share_noise_std(cfg) == pytest.approx(sigma / math.sqrt(2))


def _dequantized(masked: np.ndarray, cfg) -> np.ndarray:
    return dequantize([masked], share_range(cfg.privacy.clip_norm, share_noise_std(cfg)), 2 ** 22)[0]


@pytest.mark.parametrize("dropped,centred", [((), False), ((2,), True), ((2, 3), False)],
                         ids=["all", "one-drops-centred", "too-many-drop"])
def test_flower_secagg_server_sees_only_the_sum(dropped, centred, tmp_path, flower_task_identity):
    """Over Flower's SecAgg+ (real ClientApp, loopback grid): no reply the server pulls holds a client's
    share -- no arrays at all, only masked integers unrelated to the share -- and the sum the server
    unmasks equals the contributors' shares added up (to the fixed-point precision). A client that
    drops out in the middle of round 2 (after the keys were shared) does not stop the round; with more
    dropouts than ``privacy.max_dropout_share`` the round's sum cannot be unmasked and is never used."""
    cfg = secure_cfg(subtract_baseline=centred)
    pulled = []

    def drop(msg, pid):
        return pid in dropped and msg.metadata.group_id == "2" and "fitins.config" in msg.content

    grid = LoopbackGrid(4, tmp_path / "state", raise_errors=False, fail=drop,
                        tamper=lambda msg, reply: pulled.append(reply) or reply)
    run_dir, summary = serve(grid, cfg, tmp_path / "run")
    assert summary["status"] == "finished"
    rows = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    round2 = {r["client"]: r["status"] for r in rows if r["round"] == 2}
    expected = [c for c in range(4) if c not in dropped]
    completed, cache, summed = ServerState(run_dir).load()
    if len(dropped) > 1:  # 2 of 4 > floor(0.25 * 4): unmasking refused, the round 1 sum stays
        assert set(round2.values()) == {"missing"} and summed.contributors == [0, 1, 2, 3]
        return
    assert [c for c, status in round2.items() if status == "ok"] == expected
    assert completed == 2 and cache == {} and summed.contributors == expected
    shares = last_shares(tmp_path / "state", run_dir.name, expected)
    step = 2 * share_range(cfg.privacy.clip_norm, share_noise_std(cfg)) / 2 ** 22
    for layer, total in enumerate(summed.arrays):
        np.testing.assert_allclose(total, sum(shares[c][layer] for c in expected), atol=4 * step * len(expected))
    every_share = [s for c in expected for s in shares[c]]
    masked_seen = 0
    for reply in pulled:
        if reply.has_error():
            continue
        for record in reply.content.array_records.values():
            assert len(record) == 0  # secaggplus_mod empties the FitRes' parameters before the reply leaves
        for record in reply.content.config_records.values():
            for value in record.values():
                for item in value if isinstance(value, list) else [value]:
                    if isinstance(item, bytes) and item.startswith(b"\x93NUMPY"):
                        array = bytes_to_ndarray(item)
                        if array.size in {s.size for s in every_share}:
                            masked_seen += 1
                            values = _dequantized(array, cfg)
                            assert min(np.abs(values - s).max() for s in every_share if s.size == array.size) > 1.0
    assert masked_seen >= 2 * len(expected)  # two layers per contributor in each of rounds 0..2
