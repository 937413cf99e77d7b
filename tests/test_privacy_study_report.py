"""The privacy study's report: gains paired by seed with `none`, and the share of the no-noise gain kept."""

from __future__ import annotations

import csv
import math

import pytest

from bench.privacy_study import load_rows, summarise, write_table


def _write(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def test_gain_over_none_and_kept_share_by_hand(tmp_path):
    _write(tmp_path / "k20-reference" / "results.csv", ["seed", "arm", "metric", "test"],
           [[0, "none", "accuracy", 0.60], [1, "none", "accuracy", 0.62], [2, "none", "accuracy", 0.64],
            [0, "logits", "accuracy", 0.64], [1, "logits", "accuracy", 0.66], [2, "logits", "accuracy", 0.70]])
    _write(tmp_path / "k20" / "results.csv",
           ["seed", "arm", "privacy.target_epsilon", "privacy.secure_aggregation", "metric", "test"],
           [[0, "logits", 8.0, True, "accuracy", 0.62], [1, "logits", 8.0, True, "accuracy", 0.64],
            [2, "logits", 8.0, True, "accuracy", 0.67]])
    table = summarise(load_rows(tmp_path))
    clean = next(r for r in table if r["arm"] == "logits" and r["mode"] == "no noise")
    secure = next(r for r in table if r["arm"] == "logits" and r["mode"] == "secure aggregation")
    # no noise: differences 0.04, 0.04, 0.06 -> mean 0.04667, sd 0.011547, se 0.006667
    assert clean["gain_over_none"] == pytest.approx(0.14 / 3)
    assert clean["gain_se"] == pytest.approx(0.011547005 / math.sqrt(3))
    # epsilon 8: differences 0.02, 0.02, 0.03 -> mean 0.02333; kept 0.02333 / 0.04667 = 0.5
    assert secure["gain_over_none"] == pytest.approx(0.07 / 3)
    assert secure["kept_of_no_noise_gain"] == pytest.approx(0.5)
    write_table(table, tmp_path)
    row = "| 20 | Dirichlet, 2 % | logits | secure aggregation | 8 | 3 | 64.33 ± 2.52 | +2.33 ± 0.33 |"
    assert row in (tmp_path / "table.md").read_text()


def test_label_dp_rows_are_paired_with_none_under_label_dp_and_none_with_none_without(tmp_path):
    _write(tmp_path / "k20-reference" / "results.csv", ["seed", "arm", "metric", "test"],
           [[0, "none", "accuracy", 0.60], [1, "none", "accuracy", 0.62], [2, "none", "accuracy", 0.64]])
    _write(tmp_path / "labels" / "results.csv", ["seed", "arm", "metric", "test"],
           [[0, "none", "accuracy", 0.50], [1, "none", "accuracy", 0.53], [2, "none", "accuracy", 0.55],
            [0, "logits", "accuracy", 0.52], [1, "logits", "accuracy", 0.56], [2, "logits", "accuracy", 0.57]])
    table = summarise(load_rows(tmp_path))
    none = next(r for r in table if r["arm"] == "none" and r["mode"] == "label DP")
    logits = next(r for r in table if r["arm"] == "logits" and r["mode"] == "label DP")
    assert none["gain_over_none"] == pytest.approx(-0.28 / 3)  # -0.10, -0.09, -0.09
    assert logits["gain_over_none"] == pytest.approx(0.07 / 3)  # 0.02, 0.03, 0.02
    assert logits["kept_of_no_noise_gain"] is None
    _write(tmp_path / "labels-4" / "results.csv", ["seed", "arm", "metric", "test"],
           [[0, "none", "accuracy", 0.58], [1, "none", "accuracy", 0.60], [0, "logits", "accuracy", 0.64],
            [1, "logits", "accuracy", 0.63]])
    at_4 = {r["arm"]: r for r in summarise(load_rows(tmp_path)) if r["mode"] == "label DP" and r["epsilon"] == 4.0}
    assert at_4["none"]["gain_over_none"] == pytest.approx(-0.02)  # -0.02, -0.02 against none without label DP
    assert at_4["logits"]["gain_over_none"] == pytest.approx(0.045)  # 0.06, 0.03 against none at label epsilon 4


def test_community_rows_are_paired_with_none_on_the_community_split(tmp_path):
    _write(tmp_path / "k20-reference" / "results.csv", ["seed", "arm", "metric", "test"],
           [[0, "none", "accuracy", 0.60], [1, "none", "accuracy", 0.62]])
    header = ["seed", "arm", "privacy.target_epsilon", "privacy.noise_multiplier", "privacy.secure_aggregation",
              "metric", "test"]
    _write(tmp_path / "k20-community" / "results.csv", header,
           [[0, "none", "inf", "", False, "accuracy", 0.80], [1, "none", "inf", "", False, "accuracy", 0.84],
            [0, "logits", "inf", "", False, "accuracy", 0.84], [1, "logits", "inf", "", False, "accuracy", 0.86],
            [0, "logits", "", "1000.0", False, "accuracy", 0.81], [1, "logits", "", "1000.0", False, "accuracy", 0.86]])
    table = summarise(load_rows(tmp_path))
    community = {r["mode"]: r for r in table if r["split"] == "community, 10 %" and r["arm"] == "logits"}
    assert community["no noise"]["gain_over_none"] == pytest.approx(0.03)  # 0.04, 0.02: with community none
    noise = community["noise only (σ = 1000)"]
    assert noise["epsilon"] == pytest.approx(0.1)
    assert noise["gain_over_none"] == pytest.approx(0.015)  # 0.01, 0.02
    assert noise["kept_of_no_noise_gain"] == pytest.approx(0.5)
    assert next(r for r in table if r["arm"] == "none" and r["split"] == "Dirichlet, 2 %")["test_mean"] == \
        pytest.approx(0.61)
