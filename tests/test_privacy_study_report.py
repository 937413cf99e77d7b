"""The privacy study's report: every cell read from its run folder (config and summary, never the sweep's name),
gains paired by seed with `none` and with the noise control, and tuning choices made on validation only."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from bench.privacy_study import choose, comparisons, load_records, report, summarise, write_table
from bench.privacy_study.conclusions import holm, verdict

STUDY = Path(__file__).resolve().parents[1] / "results" / "privacy-study"
DIRICHLET = {"scheme": "dirichlet", "alpha": 0.5, "label_rate": 0.02}
COMMUNITY = {"scheme": "community", "alpha": 0.5, "label_rate": 0.1}
PLAIN = {"mechanism": "gaussian", "target_epsilon": math.inf}
LABELS_1 = {"mechanism": "none", "unit": "labels", "label_epsilon": 1.0}


def _privacy(**keys):
    return {"unit": "client", "mechanism": "gaussian", "target_epsilon": None, "noise_multiplier": None,
            "label_epsilon": None, "secure_aggregation": False, "subtract_baseline": False, "release_every": 1,
            "noise_control": False, **keys}


def _sweep(folder: Path, cells: list[tuple], k: int = 20, partition: dict | None = None,
           purpose: str | None = None, data: str | None = None) -> None:
    """A sweep folder as fedalign.sweep leaves it: results.csv with a run column, runs/<id>/{config.yaml,summary.json}.
    A cell: (seed, arm, privacy keys, test[, validation]); its run id is made up (the report reads the run column)."""
    rows = []
    for index, (seed, arm, privacy, test, *val) in enumerate(cells):
        run = f"cell{index}__seed={seed}"
        config = {"seed": seed, "federation": {"num_clients": k}, "partition": partition or DIRICHLET,
                  **({"data": {"name": data}} if data else {}),
                  "align": {"strategy": arm if arm == "dp-fedavg" else arm.split("-")[0]}, "privacy": _privacy(**privacy)}
        summary = {"status": "finished", "metric": "accuracy", "mean_test_at_best_val": test, "wall_seconds": 60.0,
                   "clients": {"0": {"best_val": val[0] if val else 0.5, "test_at_best_val": test}},
                   "epsilon": 0.104 if privacy.get("noise_multiplier") else privacy.get("target_epsilon")}
        (folder / "runs" / run).mkdir(parents=True)
        (folder / "runs" / run / "config.yaml").write_text(yaml.safe_dump(config))
        (folder / "runs" / run / "summary.json").write_text(json.dumps(summary))
        rows.append({"seed": seed, "arm": arm, "run": run, "metric": "accuracy", "test": test})
    with open(folder / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if purpose:
        (folder / "sweep.json").write_text(json.dumps({"name": folder.name, "purpose": purpose}))


def _table(out: Path) -> list[dict]:
    study, _ = load_records(out)
    return summarise(study)


def test_gain_over_none_and_kept_share_by_hand(tmp_path):
    _sweep(tmp_path / "a", [(0, "none", PLAIN, 0.60), (1, "none", PLAIN, 0.62), (2, "none", PLAIN, 0.64),
                            (0, "logits", PLAIN, 0.64), (1, "logits", PLAIN, 0.66), (2, "logits", PLAIN, 0.70)])
    secure = {"target_epsilon": 8.0, "secure_aggregation": True}
    _sweep(tmp_path / "b", [(0, "logits", secure, 0.62), (1, "logits", secure, 0.64), (2, "logits", secure, 0.67)])
    table = _table(tmp_path)
    clean = next(r for r in table if r["arm"] == "logits" and r["mode"] == "no noise")
    secure = next(r for r in table if r["arm"] == "logits" and r["mode"] == "secure aggregation")
    # no noise: differences 0.04, 0.04, 0.06 -> mean 0.04667, sd 0.011547, se 0.006667
    assert clean["gain_over_none"] == pytest.approx(0.14 / 3)
    assert clean["gain_se"] == pytest.approx(0.011547005 / math.sqrt(3))
    # epsilon 8: differences 0.02, 0.02, 0.03 -> mean 0.02333; kept 0.02333 / 0.04667 = 0.5
    assert secure["gain_over_none"] == pytest.approx(0.07 / 3)
    assert secure["kept_of_no_noise_gain"] == pytest.approx(0.5)
    assert secure["gain_over_noise_control"] is None  # no noise control ran
    write_table(table, tmp_path)
    row = "| 20 | Dirichlet, 2 % | logits | secure aggregation | 8 | 3 | 64.33 ± 2.52 | +2.33 ± 0.33 |"
    assert row in (tmp_path / "table.md").read_text()


def test_label_dp_rows_are_paired_with_none_under_label_dp_and_none_with_none_without(tmp_path):
    _sweep(tmp_path / "x", [(0, "none", PLAIN, 0.60), (1, "none", PLAIN, 0.62), (2, "none", PLAIN, 0.64)])
    _sweep(tmp_path / "y", [(0, "none", LABELS_1, 0.50), (1, "none", LABELS_1, 0.53), (2, "none", LABELS_1, 0.55),
                            (0, "logits", LABELS_1, 0.52), (1, "logits", LABELS_1, 0.56),
                            (2, "logits", LABELS_1, 0.57)])
    table = _table(tmp_path)
    none = next(r for r in table if r["arm"] == "none" and r["mode"] == "label DP")
    logits = next(r for r in table if r["arm"] == "logits" and r["mode"] == "label DP")
    assert none["gain_over_none"] == pytest.approx(-0.28 / 3)  # -0.10, -0.09, -0.09
    assert logits["gain_over_none"] == pytest.approx(0.07 / 3)  # 0.02, 0.03, 0.02
    assert logits["kept_of_no_noise_gain"] is None and logits["epsilon"] == 1.0
    labels_4 = {**LABELS_1, "label_epsilon": 4.0}
    _sweep(tmp_path / "z", [(0, "none", labels_4, 0.58), (1, "none", labels_4, 0.60), (0, "logits", labels_4, 0.64),
                            (1, "logits", labels_4, 0.63)])
    at_4 = {r["arm"]: r for r in _table(tmp_path) if r["mode"] == "label DP" and r["epsilon"] == 4.0}
    assert at_4["none"]["gain_over_none"] == pytest.approx(-0.02)  # -0.02, -0.02 against none without label DP
    assert at_4["logits"]["gain_over_none"] == pytest.approx(0.045)  # 0.06, 0.03 against none at label epsilon 4


def test_rows_are_paired_by_k_and_split_from_the_config(tmp_path):
    _sweep(tmp_path / "p", [(0, "none", PLAIN, 0.60), (1, "none", PLAIN, 0.62)])
    sigma = {"target_epsilon": None, "noise_multiplier": 1000.0}
    _sweep(tmp_path / "q", [(0, "none", PLAIN, 0.80), (1, "none", PLAIN, 0.84), (0, "logits", PLAIN, 0.84),
                            (1, "logits", PLAIN, 0.86), (0, "logits", sigma, 0.81), (1, "logits", sigma, 0.86)],
           partition=COMMUNITY)
    _sweep(tmp_path / "r", [(0, "none", PLAIN, 0.40), (1, "none", PLAIN, 0.50)], k=100)
    table = _table(tmp_path)
    community = {r["mode"]: r for r in table if r["split"] == "community, 10 %" and r["arm"] == "logits"}
    assert community["no noise"]["gain_over_none"] == pytest.approx(0.03)  # 0.04, 0.02: with community none
    noise = community["noise only (σ = 1000)"]
    assert noise["epsilon"] == pytest.approx(0.1)  # the epsilon the run reports, to 2 significant digits
    assert noise["gain_over_none"] == pytest.approx(0.015)  # 0.01, 0.02
    assert noise["kept_of_no_noise_gain"] == pytest.approx(0.5)
    by_k = {r["K"]: r["test_mean"] for r in table if r["arm"] == "none" and r["split"] == "Dirichlet, 2 %"}
    assert by_k == {20: pytest.approx(0.61), 100: pytest.approx(0.45)}


def test_gain_over_the_noise_control_by_hand(tmp_path):
    dp = {"target_epsilon": 4.0, "secure_aggregation": True}
    control = {**dp, "noise_control": True}
    alone, alone_control = {"target_epsilon": 4.0}, {"target_epsilon": 4.0, "noise_control": True}
    old = {"target_epsilon": None, "noise_multiplier": 1000.0}
    _sweep(tmp_path / "s", [
        (0, "none", PLAIN, 0.50), (1, "none", PLAIN, 0.52), (2, "none", PLAIN, 0.54),
        (0, "logits", dp, 0.60), (1, "logits", dp, 0.61), (2, "logits", dp, 0.65),
        (0, "logits", control, 0.58), (1, "logits", control, 0.60), (2, "logits", control, 0.61),
        (0, "logits", alone, 0.55), (1, "logits", alone, 0.56), (2, "logits", alone, 0.57),
        (0, "logits", alone_control, 0.56), (1, "logits", alone_control, 0.56), (2, "logits", alone_control, 0.58),
        (0, "logits", old, 0.40), (1, "logits", old, 0.40), (2, "logits", old, 0.40),
        (0, "alignahead", dp, 0.70), (1, "alignahead", dp, 0.72), (2, "alignahead", dp, 0.71),
        (0, "alignahead", old, 0.69), (1, "alignahead", old, 0.70), (2, "alignahead", old, 0.72)])
    rows = {(r["arm"], r["mode"]): r for r in _table(tmp_path)}
    secure = rows[("logits", "secure aggregation")]
    # with its own noise control (secure aggregation, epsilon 4): 0.02, 0.01, 0.04 -> mean 0.02333
    assert secure["noise_control"] == "noise control, secure aggregation"
    assert secure["gain_over_noise_control"] == pytest.approx(0.07 / 3)
    sd = math.sqrt(((0.02 - 0.07 / 3) ** 2 + (0.01 - 0.07 / 3) ** 2 + (0.04 - 0.07 / 3) ** 2) / 2)
    assert secure["gain_over_noise_control_se"] == pytest.approx(sd / math.sqrt(3))
    # each client alone is paired with the alone control, not the secure one nor the sigma = 1000 cells
    assert rows[("logits", "alone")]["gain_over_noise_control"] == pytest.approx(-0.02 / 3)  # -0.01, 0, -0.01
    assert rows[("logits", "noise control")]["epsilon"] == 4.0
    assert rows[("logits", "noise control")]["gain_over_noise_control"] is None
    # no noise control at this epsilon: the first studies' sigma = 1000 row of the same K, split and arm
    assert rows[("alignahead", "secure aggregation")]["noise_control"] == "noise only (σ = 1000)"
    assert rows[("alignahead", "secure aggregation")]["gain_over_noise_control"] == pytest.approx(0.02 / 3)
    found = {(f["family"], f["row"][2], f["row"][3]): f for f in comparisons(load_records(tmp_path)[0])}
    minus_alone = found[("secure aggregation minus alone", "logits", "secure aggregation")]
    assert minus_alone["mean"] == pytest.approx(0.06)  # 0.05, 0.05, 0.08
    assert minus_alone["verdict"] == verdict(minus_alone) == ("significant gain" if minus_alone["p"] < 0.05
                                                              else "inconclusive")


def test_statistics_rows_are_paired_with_dp_fedavg_at_the_same_epsilon(tmp_path):
    dp4, dp8 = {"target_epsilon": 4.0, "secure_aggregation": True}, {"target_epsilon": 8.0, "secure_aggregation": True}
    weights4, weights8 = {"mechanism": "none", "target_epsilon": 4.0}, {"mechanism": "none", "target_epsilon": 8.0}
    _sweep(tmp_path / "s", [
        (0, "none", PLAIN, 0.50), (1, "none", PLAIN, 0.52), (2, "none", PLAIN, 0.54),
        (0, "votes", dp4, 0.60), (1, "votes", dp4, 0.61), (2, "votes", dp4, 0.65),
        (0, "votes", dp8, 0.70), (1, "votes", dp8, 0.71),
        (0, "dp-fedavg", weights4, 0.55), (1, "dp-fedavg", weights4, 0.58), (2, "dp-fedavg", weights4, 0.59),
        (0, "dp-fedavg", weights8, 0.75), (1, "dp-fedavg", weights8, 0.72)], k=100)
    found = {(f["family"], f["row"][2], f["row"][4]): f for f in comparisons(load_records(tmp_path)[0])}
    at4 = found[("statistics minus DP-FedAvg at the same ε", "votes", 4.0)]
    assert at4["other"][2] == "dp-fedavg" and at4["other"][3] == "central DP (weights)" and at4["other"][4] == 4.0
    assert at4["diffs"] == pytest.approx([0.05, 0.03, 0.06]) and at4["mean"] == pytest.approx(0.14 / 3)
    at8 = found[("statistics minus DP-FedAvg at the same ε", "votes", 8.0)]
    assert at8["diffs"] == pytest.approx([-0.05, -0.01]) and at8["n"] == 2


def test_cells_of_another_dataset_are_never_paired_or_averaged_with_photo(tmp_path):
    _sweep(tmp_path / "photo", [(0, "none", PLAIN, 0.50), (1, "none", PLAIN, 0.52), (0, "logits", PLAIN, 0.60)],
           k=100, data="amazon-photo")
    _sweep(tmp_path / "cs", [(0, "none", PLAIN, 0.30), (0, "logits", PLAIN, 0.31)], k=100, data="coauthor-cs")
    rows = {(r["split"], r["arm"]): r for r in _table(tmp_path)}
    assert rows[("Dirichlet, 2 %", "none")]["test_mean"] == pytest.approx(0.51)  # seed 0 is not CS's 0.30
    assert rows[("coauthor-cs: Dirichlet, 2 %", "none")]["test_mean"] == pytest.approx(0.30)
    assert rows[("Dirichlet, 2 %", "logits")]["gain_over_none"] == pytest.approx(0.10)
    assert rows[("coauthor-cs: Dirichlet, 2 %", "logits")]["gain_over_none"] == pytest.approx(0.01)


def test_a_seed_run_twice_counts_once_with_the_mean_of_its_runs(tmp_path):
    _sweep(tmp_path / "a", [(0, "none", PLAIN, 0.50), (1, "none", PLAIN, 0.52), (0, "logits", PLAIN, 0.60),
                            (1, "logits", PLAIN, 0.64)])
    _sweep(tmp_path / "b", [(0, "logits", PLAIN, 0.56)])  # seed 0 again, in another sweep
    (row,) = [r for r in _table(tmp_path) if r["arm"] == "logits"]
    assert row["seeds"] == 2
    assert row["test_mean"] == pytest.approx((0.58 + 0.64) / 2)
    assert row["gain_over_none"] == pytest.approx((0.08 + 0.12) / 2)


def test_verdicts_and_holm():
    assert verdict({"mean": 0.01, "p": 0.01}) == "significant gain"
    assert verdict({"mean": -0.01, "p": 0.04}) == "significant loss"
    assert verdict({"mean": 0.05, "p": 0.05}) == "inconclusive" == verdict({"mean": 0.05, "p": None})
    assert holm([0.01, 0.04, None, 0.03]) == [pytest.approx(0.03), pytest.approx(0.06), None, pytest.approx(0.06)]


def test_tuning_chooses_on_validation_never_on_test(tmp_path):
    weak = {"target_epsilon": 8.0}
    # (seed, arm, privacy, test, validation): the first setting wins on test, the second on validation
    _sweep(tmp_path / "t", [(0, "logits-a", weak, 0.90, 0.60), (1, "logits-a", weak, 0.92, 0.62),
                            (0, "logits-b", weak, 0.70, 0.70), (1, "logits-b", weak, 0.72, 0.66)], purpose="tuning")
    _sweep(tmp_path / "u", [(0, "none", PLAIN, 0.5)])
    study, tuning = load_records(tmp_path)
    assert {r["sweep"] for r in study} == {"u"} and len(tuning) == 4  # tuning cells stay out of the table
    (choice,) = choose(tuning)  # the named arms are settings of one strategy (logits): chosen among them
    assert choice["chosen"] == "arm=logits-b"
    assert choice["settings"]["arm=logits-b"]["mean"] == pytest.approx(0.68)
    assert (choice["arm"], choice["mode"], choice["epsilon"]) == ("logits", "alone", 8.0)
    report(tmp_path)
    text = (tmp_path / "tuning.md").read_text()
    assert "Chosen: **arm=logits-b**" in text and "| arm=logits-b (chosen) | 68.00 ± 2.83 | 2 |" in text


def test_a_row_without_its_run_folder_is_an_error(tmp_path):
    _sweep(tmp_path / "w", [(0, "none", PLAIN, 0.5)])
    shutil.rmtree(tmp_path / "w" / "runs")
    with pytest.raises(FileNotFoundError, match="cell0__seed=0"):
        load_records(tmp_path)


@pytest.mark.skipif(not (STUDY / "k20" / "runs.tar.xz").is_file(), reason="the study's run archives are not here")
def test_the_study_table_does_not_depend_on_the_sweep_names(tmp_path):
    folders = sorted(p.parent for p in STUDY.glob("*/results.csv"))
    for index, folder in enumerate(folders):
        for name, target in ((folder.name, tmp_path / "named"), (f"sweep-{len(folders) - index:02d}",
                                                                 tmp_path / "scrambled")):
            (target / name).mkdir(parents=True)
            for item in ("results.csv", "runs.tar.xz", "sweep.json"):
                if (folder / item).is_file():
                    shutil.copy(folder / item, target / name / item)
            if (folder / "runs").is_dir():  # a sweep still running keeps its finished cells in runs/
                shutil.copytree(folder / "runs", target / name / "runs")
    named, scrambled = report(tmp_path / "named"), report(tmp_path / "scrambled")
    assert len(named) >= 40
    assert (tmp_path / "named" / "table.md").read_text() == (tmp_path / "scrambled" / "table.md").read_text()
    assert (tmp_path / "named" / "conclusions.md").read_text() == \
        (tmp_path / "scrambled" / "conclusions.md").read_text()
    assert [{k: v for k, v in r.items() if k != "sweeps"} for r in named] == \
        [{k: v for k, v in r.items() if k != "sweeps"} for r in scrambled]
    # the README's K = 100 target cell: secure aggregation minus its noise control, -0.16 +- 0.38, p = 0.72
    target = next(r for r in named if (r["K"], r["arm"], r["mode"], r["epsilon"]) ==
                  (100, "alignahead", "secure aggregation", 8.0))
    assert round(target["gain_over_noise_control"] * 100, 2) == -0.16
    assert round(target["gain_over_noise_control_p"], 2) == 0.72


def test_tuned_arms_are_the_validation_argmax_with_and_without_threshold():
    """The arms file takes, per arm, the grid setting of highest mean validation (test is never read)."""
    from bench.privacy_study.arms import tuned_arms

    def cell(strategy, val, test, **grid):
        return {"strategy": strategy, "grid": {"seed": "0", **grid}, "validation": val, "test": test}

    records = [cell("votes", 0.70, 0.50, **{"align.queries": "100", "align.vote_threshold": "40"}),
               cell("votes", 0.60, 0.90, **{"align.queries": "300", "align.vote_threshold": "40"}),
               cell("votes", 0.50, 0.10, **{"align.queries": "100", "align.vote_threshold": "0"}),
               cell("votes", 0.55, 0.05, **{"align.queries": "300", "align.vote_threshold": "0"}),
               cell("dp-fedavg", 0.3, 0.9, **{"federation.rounds": "5"}),
               cell("dp-fedavg", 0.4, 0.1, **{"federation.rounds": "20"})]
    arms = tuned_arms(records)
    assert "align.queries=100" in arms["votes"] and "align.vote_threshold=40" in arms["votes"]
    assert "align.queries=300" in arms["votes-t0"] and "align.vote_threshold=0" in arms["votes-t0"]
    assert "federation.rounds=20" in arms["dp-fedavg"] and "federation.rounds=20" in arms["fedavg"]
    assert "privacy.final_release=false" in arms["votes"] and "logits-q" not in arms
