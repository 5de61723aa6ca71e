#!/usr/bin/env bash
# Install everything, build the offline models, transcribe a clip and ask SmolLM2 a question.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$here/scripts/install.sh"
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
speechllm assets install whisper-tiny.en smollm2-135m-instruct
python3 "$here/scripts/offline_smoke.py" "$@"
