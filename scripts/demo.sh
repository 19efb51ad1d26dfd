#!/usr/bin/env bash
# Set up everything (first run: a few minutes) and run the two-site demo end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/telesafe demo "$@"
