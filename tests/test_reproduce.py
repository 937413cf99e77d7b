"""The reproduction driver: its choices, tables and verdicts agree with the run logs they summarise.

Runs ``python -m bench.reproduce --smoke`` once (synthetic data: tuning, every arm over 3 seeds,
K = 3, a federated map, and a sweep whose dataset files are missing) and recomputes the reported
numbers independently from the run folders' ``summary.json`` and ``config.yaml``.
"""

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from bench import reproduce
from fedalign.runstore import runs_dir


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    assert reproduce.main(["--smoke", "--out", str(out)]) == 0
    return out, json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


def runs(folder: Path) -> list[dict]:
    """Every finished run under ``folder/runs``: its arm, config and summary."""
    found = []
    for run_dir in sorted(runs_dir(folder).iterdir()):
        summary = json.loads((run_dir / "summary.json").read_text())
        if summary["status"] == "finished":
            arm = run_dir.name.split("arm=")[1] if "arm=" in run_dir.name else None
            found.append({"arm": arm, "config": yaml.safe_load((run_dir / "config.yaml").read_text()),
                          "summary": summary})
    return found


def mean_val(run):
    return np.mean([c["best_val"] for c in run["summary"]["clients"].values()])


def test_tuned_arms_are_the_best_validation_cells(smoke):
    out, report, markdown = smoke
    tuned = yaml.safe_load((out / "tuned-arms.yaml").read_text())
    best = max(runs(out / "tuning"), key=mean_val)["config"]["align"]
    assert f"align.kernel={best['kernel']}" in tuned["alignahead-tuned"]
    assert tuned["self-tuned"][0] == "align.strategy=self" and tuned["self-tuned"][1:] == tuned["alignahead-tuned"][1:]
    best_logits = max(runs(out / "tuning-logits"), key=mean_val)["config"]["align"]
    assert f"align.logit_temperature={best_logits['logit_temperature']}" in tuned["logits-tuned"]
    assert "**(chosen)**" in markdown


def test_best_arms_follow_the_mean_validation_of_faithful_and_tuned(smoke):
    out, _, _ = smoke
    per_arm = defaultdict(list)
    for run in runs(out / "strategies"):
        per_arm[run["arm"]].append(mean_val(run))
    best = yaml.safe_load((out / "best-arms.yaml").read_text())
    tuned = yaml.safe_load((out / "tuned-arms.yaml").read_text())
    structure_tuned = np.mean(per_arm["alignahead-tuned"]) > np.mean(per_arm["alignahead"])
    expected = tuned["alignahead-tuned"] if structure_tuned else ["align.strategy=alignahead"]
    assert best["alignahead-best"] == expected


def test_accuracy_and_paired_comparisons_are_recomputed_from_the_summaries(smoke):
    out, report, markdown = smoke
    per_arm = defaultdict(dict)
    for run in runs(out / "strategies"):
        per_arm[run["arm"]][run["config"]["seed"]] = run["summary"]["mean_test_at_best_val"]
    (entry,) = report["strategies"]
    assert sorted(entry["accuracy"]) == sorted(reproduce.STRATEGY_ARMS)
    for arm, values in per_arm.items():
        assert entry["accuracy"][arm]["mean"] == pytest.approx(np.mean(list(values.values())), abs=1e-12)
        assert entry["accuracy"][arm]["std"] == pytest.approx(np.std(list(values.values()), ddof=1), abs=1e-12)
    checked = 0
    for c in entry["comparisons"]:
        a, b = per_arm[c["a"]], per_arm[c["b"]]
        seeds = sorted(a)
        assert c["mean"] == pytest.approx(np.mean([a[s] - b[s] for s in seeds]), abs=1e-12)
        if np.std([a[s] - b[s] for s in seeds]) > 0:
            assert c["p"] == pytest.approx(stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue)
            checked += 1
        expected = ("n/a" if c["n"] < 3 or c["p"] is None else
                    "reproduced" if c["mean"] > 0 and c["p"] < 0.05 else
                    "not reproduced" if c["ci"][1] < 0.005 else "inconclusive")
        assert c["verdict"] == expected
        assert f"| {c['a']} − {c['b']}: " in markdown
    assert checked >= 1


def test_k_finding_pairs_every_k_with_the_k2_independent_students(smoke):
    out, report, _ = smoke
    none = {r["config"]["seed"]: r["summary"]["mean_test_at_best_val"] for r in runs(out / "strategies")
            if r["arm"] == "none"}
    (finding,) = report["students"]
    rows = {(row["arm"], row["K"]): row for row in finding["rows"]}
    for run in runs(out / "students"):
        k, seed = run["config"]["federation"]["num_clients"], run["config"]["seed"]
        assert k == 3
        row = rows[(run["arm"], 3)]
        assert row["diffs"][row["seeds"].index(seed)] == pytest.approx(run["summary"]["mean_test_at_best_val"] - none[seed])
    assert ("alignahead", 2) in rows and ("alignahead-tuned", 3) in rows


def test_map_rows_and_the_missing_dataset(smoke):
    out, report, markdown = smoke
    (finding,) = report["map"]
    (row,) = finding["rows"]
    tests = defaultdict(list)
    for run in runs(out / "map"):
        tests[run["arm"]].append(run["summary"]["mean_test_at_best_val"])
    for arm, values in tests.items():
        assert row["arms"][arm]["mean"] == pytest.approx(np.mean(values))
    assert {s["id"]: s["state"] for s in report["sweeps"]}["missing"].startswith("skipped: dataset 'cora'")
    for name in ("convergence.png", "gain_vs_k.png", "map.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({name})" in markdown
    assert json.loads((out / "provenance.json").read_text())[0]["revision"]


def test_running_again_trains_nothing_and_reports_the_same(smoke):
    out, report, _ = smoke
    assert sum(len(runs(folder)) for folder in out.iterdir() if (folder / "runs.tar.xz").is_file()) == 2 + 2 + 24 + 6 + 15
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/runs.tar.xz")}
    assert len(stamps) == 5 and not list(out.glob("*/runs"))  # finished sweeps keep their runs in one archive
    assert reproduce.main(["--smoke", "--out", str(out), "--workers", "1"]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/runs.tar.xz")} == stamps
    again = json.loads((out / "results.json").read_text())
    assert again["strategies"] == report["strategies"] and again["map"] == report["map"]


def test_only_rejects_unknown_sweep_ids(capsys):
    with pytest.raises(SystemExit):
        reproduce.main(["--only", "photo,nonsense", "--report-only"])
    assert "nonsense" in capsys.readouterr().err


def test_the_plan_covers_the_issue_grid(tmp_path):
    """The sweep files set what the reproduction needs: datasets, arms, seeds, K, budgets, the federated map."""
    from fedalign.sweep import cell_config, cells, load_sweep

    arms = {f"{s}-tuned": [f"align.strategy={s}", "align.weight=10"] for s in ("self", "one-to-one", "alignahead")}
    arms["logits-tuned"] = ["align.strategy=logits", "align.weight=1"]
    best = {f"{s}-best": [f"align.strategy={s}"] for s in ("self", "one-to-one", "alignahead", "logits")}
    results = reproduce.DEFAULT_OUT
    written = []
    for name, body in ((reproduce.TUNED_ARMS, arms), (reproduce.BEST_ARMS, best)):
        if not (results / name).exists():  # stand-ins, removed below, where the programme has not written them
            results.mkdir(parents=True, exist_ok=True)
            (results / name).write_text(yaml.safe_dump(body))
            written.append(results / name)
    try:
        seen = defaultdict(set)
        for sweep in reproduce.PLAN:
            spec = load_sweep(reproduce.SWEEPS / sweep.file)
            for cell in cells(spec):
                cfg = cell_config(spec, cell)
                epochs = cfg.federation.rounds // cfg.federation.num_clients * cfg.train.local_epochs
                assert epochs >= (200 if sweep.kind == "map" else 300)
                assert cfg.model.dropout == 0.0 and cfg.model.init == "shared" and cfg.train.lr == 0.005
                seen[sweep.id].add((cell.get("arm", cfg.align.strategy), cfg.seed, cfg.federation.num_clients,
                                    cfg.partition.scheme, cfg.partition.label_rate, cfg.data.name, cfg.model.arch))
    finally:
        for path in written:
            path.unlink()
    for sweep_id, data, seeds in (("photo", "amazon-photo", 5), ("cs", "coauthor-cs", 5),
                                  ("computers", "amazon-computers", 3), ("synthetic-ppi", "synthetic-ppi", 3)):
        assert {c[5] for c in seen[sweep_id]} == {data} and len({c[1] for c in seen[sweep_id]}) == seeds
        assert {c[0] for c in seen[sweep_id]} == set(reproduce.STRATEGY_ARMS)
    assert {c[6] for c in seen["synthetic-ppi"]} == {"gat"}
    assert {c[2] for c in seen["photo-k"]} == {3, 4}
    assert {(c[3], c[2], c[4]) for c in seen["map"]} == {(s, k, r) for s in ("community", "dirichlet")
                                                          for k in (5, 10) for r in (0.1, 0.02)}
    assert {c[0] for c in seen["map"]} == {"none", "self-best", "one-to-one-best", "alignahead-best", "logits-best"}
