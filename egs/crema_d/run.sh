#!/usr/bin/env bash
# CREMA-D (acted emotion: 6 emotions x 4 intensities; sex and age of 91 actors).
# No splits ship: actors are hashed into train/dev/test. Corpus: --corpus_dir or CREMAD in egs/db.sh.
#
#   bash egs/crema_d/run.sh --stage prepare --stop_stage generate
set -euo pipefail
cd "$(dirname "$0")/../.."

bash egs/TEMPLATE/stages.sh \
  --corpus cremad --tag crema_d --split_dev 0.1 --split_test 0.1 \
  --config recipes/desta2_whisper-small_llama3-8b-instruct.yaml \
  --annotators duration,vad,volume,snr,pitch,asr,speaking_rate \
  --prompt_pool builtin:attributes \
  "$@"
