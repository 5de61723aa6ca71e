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
# The mini recipe's mix (converted voices, gender-balanced robotic rows): with the same size and
# seed as egs/mini/local/probe.sh's probe set, this corpus's test split is that probe set, so both
# recipes are measured on the same held-out clips and neither trains on them.
. egs/mini/local/mix.sh

bash egs/TEMPLATE/stages.sh \
  --corpus synthetic --num_threads auto --prepare_mode synth --synth_num 1000 --synth_seed 0 \
  --synth_opts "$synth_mix" \
  --config recipes/synthetic_natural_cpu.yaml \
  --annotators duration,vad,volume,snr,pitch,speaking_rate --describe_opts "--template desta2-v3" \
  --prompt_pool builtin:hearing --gen_max_new_tokens 64 --valid_split "" \
  --targets_filter "python egs/synthetic/local/faithful_targets.py --require-no-speaker --nonspeech-copies 3 --rounds 3" \
  --infer_clips "$clips" --infer_limit 8 --eval_limit 60 \
  "$@"
