#!/usr/bin/env bash
# Install what the tests need (a no-op when nothing changed), then run them on one CPU thread.
#   bash scripts/run_tests.sh [pytest args...]
# The environment is the one scripts/python_env.sh picks (default <repo>/.venv, created on first use).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$here/scripts/install.sh"
# shellcheck source=scripts/python_env.sh
. "$here/scripts/python_env.sh"
cd "$here"
# One torch thread: on small shared machines two threads are many times slower.
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$PY" -m pytest -q "$@"
