#!/usr/bin/env bash
# Wall time and CPU seconds (user + system, child processes included) of each stage of
# egs/mini/run.sh, one stage at a time under /usr/bin/time, as a Markdown table (egs/mini/RESULTS.md).
# CPU seconds are what to extrapolate from on a shared machine: wall time there depends on the load.
#
#   bash egs/mini/local/stage_cpu.sh [FIRST [LAST [run.sh options...]]]   # default stages 0..7
#   bash egs/mini/local/stage_cpu.sh 1 7 --num_threads 1 --force true
# Each stage's log goes to exp/mini/stage_cpu/stage-N.log.
set -euo pipefail
cd "$(dirname "$0")/../../.."
first=${1:-0} last=${2:-7}
shift $(( $# < 2 ? $# : 2 ))
[ -x /usr/bin/time ] || { echo "stage_cpu.sh: /usr/bin/time missing (apt-get install time)" >&2; exit 1; }
logs=exp/mini/stage_cpu
mkdir -p "$logs"
echo "| stage | wall s | CPU s (user + system) | load average at start |"
echo "| --- | ---: | ---: | --- |"
for s in $(seq "$first" "$last"); do
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  /usr/bin/time -f "%e %U %S" -o "$logs/stage-$s.time" bash egs/mini/run.sh --stage "$s" --stop_stage "$s" "$@" \
    > "$logs/stage-$s.log" 2>&1 || { echo "stage $s failed: $logs/stage-$s.log" >&2; exit 1; }
  tail -1 "$logs/stage-$s.time" | awk -v s="$s" -v load="$load" '{printf "| %s | %.0f | %.0f | %s |\n", s, $1, $2 + $3, load}'
done
