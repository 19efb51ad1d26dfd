#!/usr/bin/env bash
# Set up a fresh checkout: a virtualenv in .venv with telesafe and its dev tools installed,
# and the Kafka broker's jars resolved from Maven Central into the cache.
# Idempotent and non-interactive; re-running it only checks what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "bootstrap: $PY not found (telesafe needs Python >= 3.11)" >&2
  exit 1
fi
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
  echo "bootstrap: $("$PY" --version) is too old; telesafe needs Python >= 3.11" >&2
  exit 1
}
for tool in java mvn; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "bootstrap: '$tool' not found: the local Kafka broker needs Java 17+ and Maven" >&2
    echo "           (Debian: apt-get install -y openjdk-17-jre-headless maven)" >&2
    exit 1
  }
done

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.telesafe-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing telesafe and its dependencies into .venv"
  # pip's and setuptools' own notices (the editable-install banner) go to a log, shown
  # only if the install fails.
  log=.venv/pip-install.log
  if ! { .venv/bin/pip install -q --disable-pip-version-check --upgrade pip &&
         .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "bootstrap: installing into .venv failed (the output above is kept in $log)" >&2
    exit 1
  fi
  touch "$stamp"
fi
echo "bootstrap: resolving Kafka jars from Maven Central (cached after the first run)"
.venv/bin/python -c 'from monitor.broker import runtime; runtime.resolve_jars(progress=print)'
echo "bootstrap: ready (.venv/bin/telesafe --help)"
