#!/usr/bin/env bash
# The privacy study's long sweeps, run in worktrees at fixed commits beside this checkout, and resumed
# after a session ends (every lane dies with it; finished cells are kept and never run again).
#
#   bash bench/privacy_study/lanes.sh start     # worktrees + venvs + committed cells, then one lane per sweep
#   bash bench/privacy_study/lanes.sh status    # finished cells per lane, the cell running now
#   bash bench/privacy_study/lanes.sh collect   # finished cells back here, then: python -m bench.privacy_study
#
# A lane is one sweep, one cell at a time with one torch thread (a Coauthor CS cell holds ~12.7 GB:
# never two of them, nor the full test suite, beside one). Its worktree is ../<folder> at <commit>;
# the sweep files (simulations/privacy-study/*.yaml) are this checkout's, copied in, and the cells
# already committed here are copied into the worktree first, so the sweep skips them
# (fedalign.sweep: a cell whose summary.json says finished, with the cell's config, is not run again).
# Only config.yaml, summary.json and vote_labels.json of a cell come back (what bench.privacy_study reads).
set -euo pipefail
cd "$(dirname "$0")/../.."
MAIN=$PWD
STUDY=results/privacy-study
# sweep  commit   worktree folder (beside this checkout)
LANES="k100-rest 3b460f0 study5
cs-target deea5ad study7"
KEEP=(config.yaml summary.json vote_labels.json)

worktree() { echo "$(dirname "$MAIN")/$1"; }

start_lane() {  # sweep commit folder
  local sweep=$1 commit=$2 dir
  dir=$(worktree "$3")
  [ -d "$dir" ] || git worktree add --detach "$dir" "$commit"
  [ "$(git -C "$dir" rev-parse HEAD)" = "$(git rev-parse "$commit")" ] || { echo "$dir is not at $commit" >&2; exit 1; }
  cp simulations/privacy-study/*.yaml "$dir/simulations/privacy-study/"
  mkdir -p "$dir/$STUDY/$sweep/runs"
  [ -d "$STUDY/$sweep/runs" ] && cp -rn "$STUDY/$sweep/runs/." "$dir/$STUDY/$sweep/runs/"
  [ -x "$dir/.venv/bin/fedalign" ] || (cd "$dir" && bash setup.sh)
  if pgrep -f "fedalign sweep simulations/privacy-study/$sweep.yaml" >/dev/null; then
    echo "$sweep: already running"
    return
  fi
  (cd "$dir" && FEDALIGN_DATA_ROOT=../shared/data OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 setsid nohup \
    .venv/bin/fedalign sweep "simulations/privacy-study/$sweep.yaml" --workers 1 \
    >>"$(dirname "$MAIN")/lane-$sweep.log" 2>&1 </dev/null &)
  echo "$sweep: started in $dir at $commit (log ../lane-$sweep.log)"
}

finished_runs() {  # runs folder -> the names of its finished cells
  local run
  for run in "$1"/*/; do
    grep -qs '"status": "finished"' "$run/summary.json" && basename "$run"
  done
  return 0
}

collect_lane() {  # sweep commit folder
  local sweep=$1 dir src dst name file n=0
  dir=$(worktree "$3")
  src=$dir/$STUDY/$sweep
  dst=$STUDY/$sweep
  [ -d "$src/runs" ] || { echo "$sweep: no runs in $src (packed into runs.tar.xz? copy it by hand)"; return; }
  mkdir -p "$dst/runs"
  for name in $(finished_runs "$src/runs"); do
    mkdir -p "$dst/runs/$name"
    for file in "${KEEP[@]}"; do
      [ -f "$src/runs/$name/$file" ] && cp "$src/runs/$name/$file" "$dst/runs/$name/$file"
    done
    n=$((n + 1))
  done
  cp "$src/results.csv" "$src/table.md" "$src/sweep.json" "$dst/" 2>/dev/null || true
  echo "$sweep: $n finished cells in $dst"
}

status_lane() {  # sweep commit folder
  local sweep=$1 dir total
  dir=$(worktree "$3")
  total=$(cd "$dir" && .venv/bin/python -c "from fedalign.sweep import load_sweep, cells; \
print(len(cells(load_sweep('simulations/privacy-study/$sweep.yaml'))))" 2>/dev/null || echo "?")
  echo "$sweep: $(finished_runs "$dir/$STUDY/$sweep/runs" | wc -l) of $total cells finished (noise controls" \
    "included); running: $(pgrep -f "sweep simulations/privacy-study/$sweep.yaml" >/dev/null && echo yes || echo no)"
}

case "${1:-}" in
  start | collect | status)
    while read -r sweep commit folder; do "${1}_lane" "$sweep" "$commit" "$folder"; done <<<"$LANES" ;;
  *)
    sed -n '2,8p' "$0"
    exit 2 ;;
esac
