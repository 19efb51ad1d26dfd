#!/usr/bin/env bash
# Nightly fuzz run: at least TOTAL_INPUTS generated inputs through tests/fuzz (see
# docs/safety/README.md, "Fuzzing", and tests/fuzz/fuzzkit.py for what one input is).
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/fuzz-nightly.sh [-j|--workers N] [--seed S] [--out FILE] [TOTAL_INPUTS]

Runs the fuzz tests (tests/fuzz) until they have been fed at least TOTAL_INPUTS generated
inputs (default 1000000): half to record decoding (arbitrary bytes 20%, mutated telemetry
20%, mutated operator requests 10%), half to the engine (adversarial action sequences).

Work is split into jobs, one pytest process on one test with its own --hypothesis-seed and
max_examples, N at a time (default: nproc) under nice. A first round measures the engine's
inputs per example; later rounds size their jobs from it and run until every test has its
share. Stops early once a job fails.

  -j, --workers N   parallel pytest processes (default: nproc)
  --seed S          first hypothesis seed; job k uses S+k (default: random)
  --out FILE        summary JSON (default: out/fuzz-nightly.json; per-job reports and
                    logs in out/fuzz-nightly/)
  -h, --help        this text

Environment: PYTHON (default .venv/bin/python), FUZZ_NICE (default 19).
Exit status: 0 target reached and no failure; 1 a test failed or the target was missed;
2 bad usage.
EOF
}

die() { echo "fuzz-nightly: $*" >&2; echo "try: scripts/fuzz-nightly.sh --help" >&2; exit 2; }
posint() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }

total=1000000
workers=$(nproc)
seed=""
out=out/fuzz-nightly.json
have_total=""
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    -j|--workers)
      [ $# -ge 2 ] || die "$1 needs a value"
      posint "$2" || die "workers must be a positive integer, got '$2'"
      workers=$2; shift 2 ;;
    --seed)
      [ $# -ge 2 ] || die "$1 needs a value"
      [[ $2 =~ ^[0-9]+$ ]] || die "seed must be a non-negative integer, got '$2'"
      seed=$2; shift 2 ;;
    --out)
      [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a file name"
      out=$(realpath -m -- "$2"); shift 2 ;;
    -*) die "unknown option '$1'" ;;
    *)
      [ -z "$have_total" ] || die "one TOTAL_INPUTS only (got '$total' and '$1')"
      posint "$1" || die "TOTAL_INPUTS must be a positive integer, got '$1'"
      total=$1; have_total=1; shift ;;
  esac
done

cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
nice_level=${FUZZ_NICE:-19}
[ -x "$py" ] || die "no python at '$py' (set PYTHON)"
[[ $nice_level =~ ^[0-9]+$ ]] || die "FUZZ_NICE must be 0..19, got '$nice_level'"
if [ -z "$seed" ]; then seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' '); fi

work=out/fuzz-nightly
rm -rf "$work"
mkdir -p "$work" "$(dirname "$out")"
started=$(date -u +%FT%TZ)
t0=$SECONDS
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain -- monitor tests 2>/dev/null | wc -l || echo 0)
"$py" - "$work/meta.json" <<EOF
import json, os, sys
json.dump({
    "command": "scripts/fuzz-nightly.sh $total",
    "target_inputs": $total,
    "workers": $workers,
    "first_seed": $seed,
    "nice": $nice_level,
    "started": "$started",
    "git_commit": "$commit",
    "uncommitted_files_in_monitor_and_tests": $dirty,
    "cpus": os.cpu_count(),
    "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
}, open(sys.argv[1], "w"), indent=1)
EOF
echo "fuzz-nightly: target $total inputs, $workers workers, seeds from $seed, nice $nice_level"

run_job() {  # index test max_examples seed
  local base rc
  base=$work/job-$(printf %05d "$1")
  echo "$2 $3 $4" >"$base.job"
  if TELESAFE_FUZZ_EXAMPLES=$3 TELESAFE_FUZZ_REPORT=$base.json \
      nice -n "$nice_level" "$py" -m pytest "$2" -q -p no:cacheprovider \
      --hypothesis-seed="$4" >"$base.log" 2>&1; then
    rc=0
  else
    rc=$?
  fi
  echo "$rc" >"$base.rc"
}

trap 'kill $(jobs -p) 2>/dev/null; exit 130' INT TERM

job=0
round=0
failed=0
max_rounds=20
while [ "$round" -lt "$max_rounds" ]; do
  plan=$("$py" -m tests.fuzz.nightly plan --dir "$work" --total "$total" --workers "$workers")
  [ -n "$plan" ] || break
  round=$((round + 1))
  echo "fuzz-nightly: round $round, $(wc -l <<<"$plan") jobs"
  running=0
  while read -r test examples; do
    run_job "$job" "$test" "$examples" $((seed + job)) &
    job=$((job + 1))
    running=$((running + 1))
    if [ "$running" -ge "$workers" ]; then
      wait -n || true
      running=$((running - 1))
    fi
  done <<<"$plan"
  wait
  if grep -qv '^0$' "$work"/job-*.rc; then failed=1; fi
  progress=$("$py" -m tests.fuzz.nightly merge --dir "$work")
  echo "  after round $round: ${progress%%$'\n'*}"
  if [ "$failed" -ne 0 ]; then
    echo "fuzz-nightly: a job failed; no further rounds" >&2
    break
  fi
done

"$py" - "$work/meta.json" "$started" "$((SECONDS - t0))" "$round" <<'EOF'
import datetime as dt, json, os, sys
meta = json.load(open(sys.argv[1]))
meta |= {"finished": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
         "wall_s": int(sys.argv[3]), "rounds": int(sys.argv[4]),
         "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]}
json.dump(meta, open(sys.argv[1], "w"), indent=1)
EOF
if "$py" -m tests.fuzz.nightly merge --dir "$work" --out "$out" --final; then
  echo "fuzz-nightly: summary in $out"
else
  echo "fuzz-nightly: FAILED or target missed; summary in $out, logs in $work/" >&2
  exit 1
fi
