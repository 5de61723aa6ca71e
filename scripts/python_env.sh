# Sourced by scripts/install.sh, scripts/run_tests.sh and egs/TEMPLATE/stages.sh: choose the
# Python environment every script of the project uses, create it when needed, and put its bin/
# first on PATH so `speechllm` and `speechllm-infer` resolve to it. Sets PY.
#
# Which environment, in this order:
#   1. $PYTHON, when set (an interpreter you chose; nothing is created);
#   2. the active virtualenv ($VIRTUAL_ENV) or conda environment ($CONDA_PREFIX, not `base`);
#   3. $SPEECHLLM_VENV, default <repo>/.venv, created with `python3 -m venv` on first use.
# Why a venv by default: Debian/Ubuntu's system Python refuses `pip install` (PEP 668, "externally
# managed"), and installing into it would mix the project's pinned torch with the system's.

_speechllm_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_speechllm_env_log() { echo "[python-env] $*" >&2; }

if [ -n "${PYTHON:-}" ]; then
  PY="$PYTHON"
elif [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
  PY="$VIRTUAL_ENV/bin/python"
elif [ -n "${CONDA_PREFIX:-}" ] && [ "${CONDA_DEFAULT_ENV:-base}" != base ] && [ -x "$CONDA_PREFIX/bin/python" ]; then
  PY="$CONDA_PREFIX/bin/python"
else
  _speechllm_venv="${SPEECHLLM_VENV:-$_speechllm_repo/.venv}"
  if [ ! -x "$_speechllm_venv/bin/python" ]; then
    _speechllm_base="$(command -v python3 || true)"
    [ -n "$_speechllm_base" ] || { _speechllm_env_log "ERROR: python3 not found; install Python >= 3.10"; return 1 2>/dev/null || exit 1; }
    if ! "$_speechllm_base" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
      _speechllm_env_log "ERROR: $("$_speechllm_base" --version 2>&1) is too old; speechllm needs Python >= 3.10 (set PYTHON=/path/to/python3.1x)"
      return 1 2>/dev/null || exit 1
    fi
    _speechllm_env_log "creating the virtual environment $_speechllm_venv (set SPEECHLLM_VENV or activate your own to use another)"
    if ! "$_speechllm_base" -m venv "$_speechllm_venv" 2>/dev/null; then
      # Debian ships venv's pip bootstrap in a separate package.
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        _speechllm_env_log "installing python3-venv (Debian)"
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        rm -rf "$_speechllm_venv"
        "$_speechllm_base" -m venv "$_speechllm_venv"
      else
        _speechllm_env_log "ERROR: '$_speechllm_base -m venv' failed; on Debian/Ubuntu run: sudo apt-get install python3-venv"
        return 1 2>/dev/null || exit 1
      fi
    fi
  fi
  export VIRTUAL_ENV="$_speechllm_venv"
  PY="$_speechllm_venv/bin/python"
fi
case "$PY" in */*) ;; *) PY="$(command -v "$PY")" || { _speechllm_env_log "ERROR: PYTHON=$PYTHON not found"; return 1 2>/dev/null || exit 1; } ;; esac
export PATH="$(dirname "$PY"):$PATH"
