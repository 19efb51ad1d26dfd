#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what it needs, then lint, types, tests.
#   scripts/test.sh            everything (unit, integration on a real Kafka broker, observability
#                              on real Prometheus/Alertmanager, chart checks)
#   scripts/test.sh -m "not integration"   extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

scripts/bootstrap.sh
scripts/install-prometheus.sh
command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
# pdftotext/pdfinfo: the report's PDF tests read its text layer and page sizes.
command -v pdftotext >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq poppler-utils)
# A failed helm build must not hide every other result: the chart tests fail without helm in CI.
if [ -x scripts/install-helm.sh ]; then scripts/install-helm.sh || echo "test.sh: helm build failed"; fi

echo "== ruff"
.venv/bin/ruff check monitor tests bench
echo "== mypy --strict monitor/"
.venv/bin/mypy monitor
echo "== pytest"
set +e
mkdir -p out
.venv/bin/pytest -q -p no:cacheprovider -W ignore::DeprecationWarning --junitxml=out/junit.xml "$@"
rc=$?
set -e
if [ $# -eq 0 ]; then
  # The core loop once more on the second Kafka backend (the monitor under test reads
  # TELESAFE_KAFKA_CLIENT): heartbeat loss, breach, re-arm, failover.
  echo "== pytest: core scenarios with --kafka-client kafka-python"
  set +e
  TELESAFE_KAFKA_CLIENT=kafka-python .venv/bin/pytest -q -p no:cacheprovider \
    -W ignore::DeprecationWarning --junitxml=out/junit-kafka-python.xml \
    tests/integration/test_monitor_loop.py tests/integration/test_failover.py \
    tests/integration/test_scenarios.py -k "silence or heartbeat or rearm or box or grip or sigkill"
  rc2=$?
  set -e
  [ $rc2 -eq 0 ] || { echo "test.sh: kafka-python backend scenarios failed"; [ $rc -ne 0 ] || rc=$rc2; }
  echo "== safety traceability (every hazard needs a passing test)"
  .venv/bin/telesafe safety trace --junit out/junit.xml --out out/traceability.md \
    || { echo "test.sh: a hazard has no passing test (out/traceability.md)"; [ $rc -ne 0 ] || rc=1; }
fi
echo "test.sh: finished in $(( $(date +%s) - started )) s (pytest exit $rc)"
exit $rc
