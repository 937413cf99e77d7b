"""bench.quickstart: the README's main job timed in a fresh process, its figures written with their load and provenance."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_quickstart_benchmark_times_a_finished_run_and_writes_only_to_out(tmp_path):
    committed = REPO / "results" / "benchmarks" / "quickstart" / "results.json"
    before = committed.read_bytes() if committed.is_file() else None
    done = subprocess.run([sys.executable, "-m", "bench.quickstart", "--smoke", "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    (run,) = results["runs"]
    assert run["engine"] == "inprocess" and run["seconds"] > 0 and run["load_before"] >= 0
    assert results["provenance"]["command"] and "revision" in results["provenance"]
    assert "| `fedalign run simulations/quickstart.yaml --engine inprocess` | 1 |" in (tmp_path / "table.md").read_text()
    assert (committed.read_bytes() if committed.is_file() else None) == before
