#!/usr/bin/env bash
# LibriSpeech (read English; transcript, speaker, gender) with Whisper-small + Llama-3-8B-Instruct.
# Corpus location: --corpus_dir /data/LibriSpeech, or LIBRISPEECH=... in egs/db.sh.
#
#   bash egs/librispeech/run.sh --stage prepare --stop_stage generate
#   bash egs/librispeech/run.sh --stage train --launcher accelerate --num_gpus 8
set -euo pipefail
cd "$(dirname "$0")/../.."

bash egs/TEMPLATE/stages.sh \
  --corpus librispeech \
  --prepare_opts "--splits train-clean-100 dev-clean test-clean" \
  --split_map "train=train-clean-100 dev=dev-clean test=test-clean" \
  --config recipes/desta2_whisper-small_llama3-8b-instruct.yaml \
  --annotators duration,vad,volume,snr,pitch,speaking_rate \
  --prompt_pool builtin:attributes \
  "$@"
