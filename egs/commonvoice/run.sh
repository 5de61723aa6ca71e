#!/usr/bin/env bash
# Common Voice (crowd-sourced read speech; self-reported age, gender, accent). Uses the release's
# train/dev/test TSVs. Corpus: --corpus_dir /data/cv-corpus-XX/en or COMMONVOICE in egs/db.sh.
#
#   bash egs/commonvoice/run.sh --stage prepare --stop_stage generate
set -euo pipefail
cd "$(dirname "$0")/../.."

bash egs/TEMPLATE/stages.sh \
  --corpus commonvoice \
  --prepare_opts "--splits train dev test" \
  --split_map "train=train dev=dev test=test" \
  --config recipes/desta2_whisper-small_llama3-8b-instruct.yaml \
  --annotators duration,vad,volume,snr,pitch,speaking_rate \
  --prompt_pool builtin:attributes \
  "$@"
