"""Memory caps (``bench.process_tree``) and mini-batch students under one.

* :func:`bench.process_tree.run_measured` sums the resident sets of a whole process tree, and kills
  the tree when the sum passes its cap.
* A mini-batch run on a graph whose full-batch run does not fit under a memory cap finishes under
  that cap (small scale: ~1M edges, seconds to a minute). The cap is set above the resident set of
  the same worker on a 100-node graph (imports, torch, PyG): the graph must fit in ``MARGIN_MIB``
  more. SAGE students: a full-batch SAGE layer materialises one ``[E, d]`` message tensor, what a
  mini-batch student never holds (its batches are bounded, and its inference runs layer-wise, one
  chunk of target nodes at a time: :mod:`fedalign.client.inference`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from bench.process_tree import run_measured, tree_rss_mib
from bench.scale import spec

REPO = Path(__file__).resolve().parents[1]
MARGIN_MIB = 450
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "FEDALIGN_COMPILE": "0", "TORCHINDUCTOR_COMPILE_THREADS": "1"}


def test_a_tree_is_measured_whole_and_killed_past_its_cap():
    child = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', "
             "'x = bytearray(150 * 2**20); import time; time.sleep(30)']); time.sleep(30)")
    m = run_measured([sys.executable, "-c", child], REPO, cap_mib=100, timeout=60, interval=0.05)
    assert m.capped and not m.timed_out and m.returncode != 0
    assert m.peak_tree_mib > 100  # the grandchild's 150 MiB were counted
    assert m.wall_s < 30  # killed, not waited for
    assert tree_rss_mib(os.getpid()) > 0
    free = run_measured([sys.executable, "-c", "print('ok')"], REPO, cap_mib=1000, timeout=60)
    assert free.returncode == 0 and free.stdout.strip() == "ok" and not free.capped and free.maxrss_mib > 0


def worker_spec(num_nodes: int, degree: int, mode: str) -> dict:
    s = spec(num_nodes * degree, 2, "replicate", mode, smoke=False)
    s.update(id=f"cap-{num_nodes}-{mode}", num_nodes=num_nodes, avg_degree=degree, arch="sage", hidden_dim=128,
             batch_size=1024, rounds=1)
    return s


def run_worker(s: dict, cap_mib: float | None):
    return run_measured([sys.executable, "-m", "bench.scale_worker", json.dumps(s)], REPO, ENV, cap_mib,
                        timeout=600)


def test_a_minibatch_run_finishes_under_a_cap_that_full_batch_passes():
    base = run_worker(worker_spec(100, 10, "mini"), None)
    assert base.returncode == 0, base.stderr[-3000:]
    # The sampled tree sum, not ru_maxrss: on Linux a child's ru_maxrss keeps the high-water mark of the memory it
    # was forked with (exec keeps it), i.e. this test process's own resident set, which grows as the suite runs.
    cap = base.peak_tree_mib + MARGIN_MIB
    full = run_worker(worker_spec(8000, 100, "full"), cap)
    assert full.capped, f"full batch stayed under the cap: {full.peak_mib:.0f} MiB <= {cap:.0f} MiB"
    mini = run_worker(worker_spec(8000, 100, "mini"), cap)
    assert mini.returncode == 0 and not mini.capped, mini.stderr[-3000:]
    result = json.loads(mini.stdout.strip().splitlines()[-1])
    assert result["graph_edges"] > 700_000 and result["rounds"][0]["status"] == "ok"
    assert mini.peak_tree_mib <= cap
