#!/usr/bin/env bash
# IEMOCAP (dyadic sessions; categorical emotion + valence/arousal). Leave-one-session-out: sessions
# 1-4 train, 5 test (the usual protocol); a 10% slice of training speakers is not held out, so dev
# is session 4 here. Corpus: --corpus_dir /data/IEMOCAP_full_release or IEMOCAP in egs/db.sh.
#
#   bash egs/iemocap/run.sh --stage prepare --stop_stage generate
set -euo pipefail
cd "$(dirname "$0")/../.."

bash egs/TEMPLATE/stages.sh \
  --corpus iemocap \
  --split_map "train=Session1+Session2+Session3 dev=Session4 test=Session5" \
  --config recipes/desta2_whisper-small_llama3-8b-instruct.yaml \
  --annotators duration,vad,volume,snr,pitch,speaking_rate \
  --prompt_pool builtin:attributes \
  "$@"
