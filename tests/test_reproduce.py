"""The reproduction driver: its tables, JSON and plots agree with the run logs they summarise.

Runs ``python -m benchmarks.reproduce --smoke`` once (synthetic data, three sweeps: strategies,
students K = 2, 3, and one whose dataset files are missing) and recomputes every reported number
independently from the run folders' ``summary.json``, ``config.yaml`` and raw ``rounds.jsonl``.
"""

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml

from benchmarks import reproduce


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    assert reproduce.main(["--smoke", "--out", str(out)]) == 0
    return out, json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


def runs(folder: Path) -> list[dict]:
    """Every finished run under ``folder/runs``: config, summary and raw round rows."""
    found = []
    for run_dir in sorted((folder / "runs").iterdir()):
        summary = json.loads((run_dir / "summary.json").read_text())
        if summary["status"] != "finished":
            continue
        rows = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines() if line.strip()]
        found.append({"dir": run_dir, "config": yaml.safe_load((run_dir / "config.yaml").read_text()),
                      "summary": summary, "rows": rows})
    return found


def fmt(mean, std):
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def test_accuracy_table_is_mean_and_sample_std_of_the_cell_summaries(smoke):
    out, report, markdown = smoke
    by_strategy = defaultdict(list)
    for run in runs(out / "synthetic-gcn"):
        tests = [c["test_at_best_val"] for c in run["summary"]["clients"].values()]
        by_strategy[run["config"]["align"]["strategy"]].append(sum(tests) / len(tests))
    assert sorted(by_strategy) == ["alignahead", "none", "one-to-one"]
    (entry,) = report["strategies"]
    for strategy, values in by_strategy.items():
        reported = entry["accuracy"][strategy]
        assert reported["n"] == len(values) == 3
        assert reported["mean"] == pytest.approx(np.mean(values), abs=1e-12)
        assert reported["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
        assert fmt(np.mean(values), np.std(values, ddof=1)) in markdown
    delta = np.mean(by_strategy["alignahead"]) - np.mean(by_strategy["none"])
    assert f"{100 * delta:+.2f}" in markdown


def test_epochs_to_level_and_curves_recomputed_from_rounds_jsonl(smoke):
    out, report, markdown = smoke
    (entry,) = report["strategies"]
    cells = runs(out / "synthetic-gcn")
    none_best = [np.mean([c["best_val"] for c in run["summary"]["clients"].values()])
                 for run in cells if run["config"]["align"]["strategy"] == "none"]
    assert entry["none_best_val"] == pytest.approx(np.mean(none_best))
    for run in cells:
        curves = defaultdict(list)  # client -> validation metric after each of its training rounds
        for row in sorted(run["rows"], key=lambda r: r["round"]):
            if row["status"] == "ok" and "val_metric" in row:
                curves[row["client"]].append(row["val_metric"])
        step = run["config"]["train"]["local_epochs"]
        # alternating schedule, 2 clients, 8 rounds: each student trains 4 times
        assert [len(curves[c]) for c in (0, 1)] == [4, 4]
        strategy, seed = run["config"]["align"]["strategy"], run["config"]["seed"]
        for fraction in ("0.95", "0.98"):
            level = float(fraction) * np.mean(none_best)
            assert report["strategies"][0]["levels"][fraction]["level"] == pytest.approx(level)
            firsts = [next(((i + 1) * step for i, v in enumerate(curves[c]) if v >= level), None) for c in (0, 1)]
            (reported,) = [c for c in entry["levels"][fraction]["strategies"][strategy]["per_cell"] if c["seed"] == seed]
            assert reported["students"] == firsts
            assert reported["epochs"] == (None if None in firsts else pytest.approx(np.mean(firsts)))
    for fraction in ("0.95", "0.98"):
        for strategy, table in entry["levels"][fraction]["strategies"].items():
            reached = [c["epochs"] for c in table["per_cell"] if c["epochs"] is not None]
            assert table["reached"] == len(reached)
            if reached:
                assert table["mean"] == pytest.approx(np.mean(reached))
    # the mean curve: mean over students, then over seeds, at epochs 2, 4, 6, 8
    align = [run for run in cells if run["config"]["align"]["strategy"] == "alignahead"]
    per_cell = []
    for run in align:
        values = defaultdict(list)
        for row in sorted(run["rows"], key=lambda r: r["round"]):
            if "val_metric" in row:
                values[row["client"]].append(row["val_metric"])
        per_cell.append(np.mean([values[0], values[1]], axis=0))
    curve = entry["curves"]["alignahead"]
    assert curve["epochs"] == [2, 4, 6, 8]
    assert curve["mean"] == pytest.approx(np.mean(per_cell, axis=0).tolist())
    assert curve["std"] == pytest.approx(np.std(per_cell, axis=0, ddof=1).tolist())


def test_gain_against_k_and_reused_cells(smoke):
    out, report, markdown = smoke
    (entry,) = report["students"]
    cells = runs(out / "synthetic-gcn-k")
    assert len(cells) == 12
    tests = {}
    for run in cells:
        cfg = run["config"]
        tests[(cfg["federation"]["num_clients"], cfg["align"]["strategy"], cfg["seed"])] = \
            run["summary"]["mean_test_at_best_val"]
        # every student trains rounds / K * local_epochs = 8 epochs, at every K
        k = cfg["federation"]["num_clients"]
        trained = [sum(1 for r in run["rows"] if r["client"] == c and "val_metric" in r) for c in range(k)]
        assert [t * cfg["train"]["local_epochs"] for t in trained] == [8] * k
    assert [row["K"] for row in entry["rows"]] == [2, 3]
    for row in entry["rows"]:
        k = row["K"]
        align = [tests[(k, "alignahead", s)] for s in (0, 1, 2)]
        none = [tests[(k, "none", s)] for s in (0, 1, 2)]
        assert row["none_from_K"] == k
        assert row["alignahead"]["mean"] == pytest.approx(np.mean(align))
        assert row["gain"] == pytest.approx(np.mean(align) - np.mean(none))
        paired = np.subtract(align, none)
        assert row["paired_gain"]["mean"] == pytest.approx(paired.mean())
        assert row["paired_gain"]["std"] == pytest.approx(paired.std(ddof=1))
        assert f"{100 * paired.mean():+.2f} ± {100 * paired.std(ddof=1):.2f}" in markdown
    # the K = 2 cells are the strategies sweep's runs, copied, not trained again
    source = {(r["config"]["align"]["strategy"], r["config"]["seed"]): r for r in runs(out / "synthetic-gcn")}
    for run in cells:
        cfg = run["config"]
        if cfg["federation"]["num_clients"] == 2:
            assert (run["dir"] / "reused_from.txt").is_file()
            twin = source[(cfg["align"]["strategy"], cfg["seed"])]
            assert run["summary"] == twin["summary"] and run["rows"] == twin["rows"]
        else:
            assert not (run["dir"] / "reused_from.txt").exists()
    sweep = next(s for s in report["sweeps"] if s["id"] == "synthetic-gcn-k")
    assert (sweep["finished"], sweep["reused"]) == (12, 6)
    trained_here = sum(r["summary"]["wall_seconds"] for r in cells if r["config"]["federation"]["num_clients"] == 3)
    assert sweep["cell_wall_seconds"] == pytest.approx(trained_here, abs=0.1)


def test_missing_dataset_is_skipped_with_a_message(smoke):
    out, report, markdown = smoke
    sweep = next(s for s in report["sweeps"] if s["id"] == "missing-gcn")
    assert sweep["state"].startswith("skipped") and sweep["finished"] == 0
    assert "cora" in sweep["reason"] and "missing" in sweep["reason"]
    assert not (out / "missing-gcn" / "runs").exists()
    assert "skipped: dataset files missing" in markdown


def test_plots_are_written(smoke):
    out, _, markdown = smoke
    for name in ("convergence.png", "gain_vs_k.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
        assert f"]({name})" in markdown


def test_running_again_trains_nothing_and_reports_the_same(smoke):
    out, report, _ = smoke
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/runs/*/summary.json")}
    assert len(stamps) == 21
    assert reproduce.main(["--smoke", "--out", str(out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/runs/*/summary.json")} == stamps
    again = json.loads((out / "results.json").read_text())
    assert again["strategies"] == report["strategies"] and again["students"] == report["students"]


def test_only_rejects_unknown_sweep_ids(capsys):
    with pytest.raises(SystemExit):
        reproduce.main(["--only", "photo-gcn,nonsense", "--report-only"])
    assert "nonsense" in capsys.readouterr().err


def test_the_plan_covers_the_issue_grid():
    """Every sweep file of the plan exists and sets what the issue asks (datasets, archs, strategies, seeds, K)."""
    from fedalign.sweep import cell_config, cells, load_sweep

    seen = set()
    for entry in reproduce.PLAN:
        spec = load_sweep(reproduce.SIMULATIONS / entry.sweep)
        configs = [cell_config(spec, c) for c in cells(spec)]
        assert len({c.seed for c in configs}) >= 3
        for cfg in configs:
            seen.add((cfg.data.name, cfg.model.arch, cfg.align.strategy, cfg.federation.num_clients))
            assert cfg.partition.scheme == "replicate"
            epochs = cfg.federation.rounds // cfg.federation.num_clients * cfg.train.local_epochs
            assert epochs == 80  # every student, at every K
    for data in ("amazon-photo", "amazon-computers", "coauthor-cs", "coauthor-physics", "ppi"):
        for arch in ("gcn", "gat"):
            for strategy in ("none", "one-to-one", "alignahead"):
                assert (data, arch, strategy, 2) in seen
    for k in (2, 3, 4):
        assert ("amazon-photo", "gcn", "alignahead", k) in seen and ("amazon-photo", "gcn", "none", k) in seen


def test_final_losses_are_the_last_round_of_each_student(smoke):
    out, report, _ = smoke
    (entry,) = report["strategies"]
    per_strategy = defaultdict(lambda: defaultdict(list))
    for run in runs(out / "synthetic-gcn"):
        last = {}
        for row in sorted(run["rows"], key=lambda r: r["round"]):
            if "task_loss" in row:
                last[row["client"]] = row
        for key in ("task_loss", "align_loss"):
            per_strategy[run["config"]["align"]["strategy"]][key].append(np.mean([r[key] for r in last.values()]))
    for strategy, losses in per_strategy.items():
        for key, values in losses.items():
            assert entry["final_losses"][strategy][key] == pytest.approx(np.mean(values))
    assert entry["final_losses"]["none"]["align_loss"] == 0.0
    assert entry["final_losses"]["alignahead"]["align_loss"] > 0.0
