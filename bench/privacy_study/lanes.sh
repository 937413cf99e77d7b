#!/usr/bin/env bash
# The privacy study's long sweeps, run in worktrees at fixed commits beside this checkout, and resumed
# after a session ends (every lane dies with it; finished cells are kept and never run again).
#
#   bash bench/privacy_study/lanes.sh start     # worktrees + venvs + committed cells, then one lane per sweep
#   bash bench/privacy_study/lanes.sh status    # finished cells per lane, the cell running now
#   bash bench/privacy_study/lanes.sh collect   # finished cells back here, then: python -m bench.privacy_study
#   (start also launches a watcher: when one lane's sweep is complete, the other restarts at its next cell
#   boundary with 2 workers, the machine's 2 cores; a lane with nothing left to run is not started)
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

start_lane() {  # sweep commit folder [workers]
  local sweep=$1 commit=$2 workers=${4:-1} dir
  dir=$(worktree "$3")
  if [ -f "$STUDY/$sweep/runs.tar.xz" ] || [ -f "$dir/$STUDY/$sweep/runs.tar.xz" ]; then
    echo "$sweep: complete (its runs are packed in runs.tar.xz; collect it if only the worktree has it)"
    return
  fi
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
  if complete "$sweep" "$3"; then
    echo "$sweep: every cell finished"
    return
  fi
  (cd "$dir" || exit 1  # only the sweep goes to the background: nothing here waits for it
   FEDALIGN_DATA_ROOT=../shared/data OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 setsid nohup \
     .venv/bin/fedalign sweep "simulations/privacy-study/$sweep.yaml" --workers "$workers" \
     >>"$(dirname "$MAIN")/lane-$sweep.log" 2>&1 </dev/null &)
  echo "$sweep: started in $dir at $commit, $workers worker(s) (log ../lane-$sweep.log)"
}

finished_runs() {  # runs folder -> the names of its finished cells
  local run
  for run in "$1"/*/; do
    grep -qs '"status": "finished"' "$run/summary.json" && basename "$run"
  done
  return 0
}

total_cells() {  # sweep folder -> the number of the sweep's cells (noise controls included)
  (cd "$(worktree "$2")" && .venv/bin/python -c "from fedalign.sweep import load_sweep, cells; \
print(len(cells(load_sweep('simulations/privacy-study/$1.yaml'))))" 2>/dev/null) || echo "?"
}

done_cells() {  # sweep folder -> finished cells in the worktree (all of them once the runs are archived)
  local out
  out=$(worktree "$2")/$STUDY/$1
  if [ ! -d "$out/runs" ] && [ -f "$out/runs.tar.xz" ]; then total_cells "$1" "$2"; else finished_runs "$out/runs" | wc -l; fi
}

complete() {  # sweep folder -> success when every cell has finished
  [ -d "$(worktree "$2")" ] && [ "$(done_cells "$1" "$2")" = "$(total_cells "$1" "$2")" ]
}

running() { pgrep -f "fedalign sweep simulations/privacy-study/$1.yaml" >/dev/null; }

watch_lanes() {  # when exactly one lane is left, restart it with 2 workers once its running cell has finished
  local sweep commit folder left before
  while true; do
    sleep 60
    left=()
    while read -r sweep commit folder; do complete "$sweep" "$folder" || left+=("$sweep $commit $folder"); done <<<"$LANES"
    [ "${#left[@]}" -eq 0 ] && return
    [ "${#left[@]}" -eq 1 ] || continue
    read -r sweep commit folder <<<"${left[0]}"
    running "$sweep" || return  # stopped by hand or with the session: leave it
    pgrep -f "sweep simulations/privacy-study/$sweep.yaml --workers 2" >/dev/null && return
    before=$(done_cells "$sweep" "$folder")
    while [ "$(done_cells "$sweep" "$folder")" = "$before" ] && running "$sweep"; do sleep 20; done
    pkill -f "fedalign sweep simulations/privacy-study/$sweep.yaml" || true
    while running "$sweep"; do sleep 5; done
    start_lane "$sweep" "$commit" "$folder" 2
    return
  done
}

collect_lane() {  # sweep commit folder
  local sweep=$1 dir src dst name file n=0
  dir=$(worktree "$3")
  src=$dir/$STUDY/$sweep
  dst=$STUDY/$sweep
  if [ ! -d "$src/runs" ] && [ -f "$src/runs.tar.xz" ]; then  # complete: the sweep packed its runs
    cp "$src/runs.tar.xz" "$src/results.csv" "$src/table.md" "$src/sweep.json" "$dst/"
    rm -rf "$dst/runs"
    echo "$sweep: complete, runs.tar.xz in $dst"
    return
  fi
  [ -d "$src/runs" ] || { echo "$sweep: no runs in $src"; return; }
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
  echo "$1: $(done_cells "$1" "$3") of $(total_cells "$1" "$3") cells finished (noise controls included);" \
    "running: $(running "$1" && echo yes || echo no)"
}

case "${1:-}" in
  start | collect | status)
    while read -r sweep commit folder; do "${1}_lane" "$sweep" "$commit" "$folder"; done <<<"$LANES"
    if [ "$1" = start ] && ! pgrep -f "lanes.sh watch" >/dev/null; then
      setsid nohup bash "$0" watch >>"$(dirname "$MAIN")/lane-watch.log" 2>&1 </dev/null &
    fi ;;
  watch) watch_lanes ;;
  *)
    sed -n '2,10p' "$0"
    exit 2 ;;
esac
