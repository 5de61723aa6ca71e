#!/usr/bin/env bash
# Offline mini recipe (the README's main job): a synthetic corpus that mixes natural voices
# (Kokoro-82M, Piper joe), robotic ones (flite, espeak-ng) and non-speech clips, with background
# noise at labelled SNRs and simulated rooms, some voices and kinds of sound held out for test ->
# describe (desta2-v3: "No speech, no speaker, only music." for non-speech) -> SmolLM2 targets
# kept only where faithful to the labels (a non-speech one must say that no one speaks; three per
# non-speech clip, three re-sampling rounds: with two of each the model invented a speaker for most
# non-speech clips; answers that copy the description back are counted, not rejected: see
# egs/mini/RESULTS.md) -> Q-Former adapter on Whisper
# tiny.en + SmolLM2-135M -> infer -> built-in benchmark + retention. `egs/mini/local/probe.sh`
# then asks gender and speech/no speech on held-out voices, held-out kinds of sound and real
# recordings. Wall and CPU time per stage: egs/mini/RESULTS.md.
#
#   bash egs/mini/run.sh                          # everything (installs what it needs)
#   bash egs/mini/run.sh --stage train --stop_stage eval --force true
#   bash egs/mini/run.sh --help                   # every option
#
# The natural voices are synthesised at about real time on one core, once: stage 1 caches them
# under $SPEECHLLM_HOME/cache/tts (default ~/.cache/speechllm), so only the first run pays for it.
set -euo pipefail
cd "$(dirname "$0")/../.."
# Real recordings shipped with the repository (three LibriSpeech readers and a robin chirp,
# credits in tests/data/audio/CREDITS.md): stage 6 answers about them as a demonstration.
clips="$(ls tests/data/audio/*.ogg | tr '\n' ' ')"
. egs/mini/local/mix.sh

# Threads: "auto" counts the idle cores as each stage's command starts. Idle 2-core machine: 2
# threads (1.65x faster training steps than 1); another busy process beside it: 1 thread instead of
# an oversubscribed 2, which ran training steps 10-20x slower (benchmarks/threads_under_load.py).
# No dev targets (--valid_split ""): the recipe validates nothing during training, and the
# target stage is the second-largest cost after training.
bash egs/TEMPLATE/stages.sh \
  --corpus mini --num_threads auto --prepare_mode synth --synth_num 400 --synth_seed 0 \
  --synth_opts "$synth_mix" \
  --config recipes/mini_offline_cpu.yaml \
  --annotators duration,vad,volume,snr,pitch,speaking_rate --describe_opts "--template desta2-v3" \
  --prompt_pool builtin:hearing --gen_max_new_tokens 64 --valid_split "" \
  --targets_filter "python egs/synthetic/local/faithful_targets.py --require-no-speaker --nonspeech-copies 3 --rounds 3" \
  --infer_clips "$clips" --infer_limit 8 --eval_limit 60 \
  "$@"
