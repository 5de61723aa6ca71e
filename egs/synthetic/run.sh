#!/usr/bin/env bash
# Offline recipe that hears natural voices: a synthetic corpus mixing natural voices (Kokoro-82M,
# Piper joe), robotic ones (flite, espeak-ng) and non-speech clips, with background noise at
# labelled SNRs and simulated rooms -> describe (desta2-v3: "No speech, no speaker, only music."
# for non-speech) -> SmolLM2 targets kept only where faithful to the labels (non-speech ones must
# say no one speaks; three per non-speech clip) -> Q-Former adapter on Whisper tiny.en +
# SmolLM2-135M -> infer -> built-in benchmark + retention -> probe on held-out voices, held-out
# kinds of sound and the real clips in tests/data/audio (egs/synthetic/RESULTS.md).
#
#   bash egs/synthetic/run.sh                         # everything (installs what it needs)
#   bash egs/synthetic/run.sh --stage train --stop_stage eval --force true
#   bash egs/synthetic/run.sh --help                  # every option
#
# Natural-voice synthesis runs at about real time on one core; it is cached under
# $SPEECHLLM_HOME/cache/tts, so only the first run pays for it.
set -euo pipefail
cd "$(dirname "$0")/../.."
clips="$(ls tests/data/audio/*.ogg | tr '\n' ' ')"

bash egs/TEMPLATE/stages.sh \
  --corpus synthetic --num_threads auto --prepare_mode synth --synth_num 1000 --synth_seed 0 \
  --synth_opts "--natural 0.5 --nonspeech 0.15 --noisy 0.25 --reverb 0.2" \
  --config recipes/synthetic_natural_cpu.yaml \
  --annotators duration,vad,volume,snr,pitch,speaking_rate --describe_opts "--template desta2-v3" \
  --prompt_pool builtin:hearing --gen_max_new_tokens 64 \
  --targets_filter "python egs/synthetic/local/faithful_targets.py --require-no-speaker --nonspeech-copies 3 --rounds 3" \
  --infer_clips "$clips" --infer_limit 8 --eval_limit 60 \
  "$@"
