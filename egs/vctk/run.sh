#!/usr/bin/env bash
# VCTK (109 English speakers; age, gender, accent labels) with Whisper-small + Llama-3-8B-Instruct.
# VCTK ships no splits: speakers are hashed into train/dev/test (5% / 5%), so test voices are unseen.
# Corpus location: --corpus_dir /data/VCTK-Corpus-0.92, or VCTK=... in egs/db.sh.
#
#   bash egs/vctk/run.sh --stage prepare --stop_stage generate
set -euo pipefail
cd "$(dirname "$0")/../.."

bash egs/TEMPLATE/stages.sh \
  --corpus vctk --split_dev 0.05 --split_test 0.05 \
  --config recipes/desta2_whisper-small_llama3-8b-instruct.yaml \
  --annotators duration,vad,volume,snr,pitch,asr,speaking_rate \
  --prompt_pool builtin:attributes \
  "$@"
