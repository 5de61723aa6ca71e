#!/usr/bin/env bash
# Measure the mini model on audio it was not trained on (egs/mini/RESULTS.md):
#   1. the probe set: the test split of the 1000-row corpus with the recipe's mix and seed (100
#      rows: unseen sentences, half of them held-out voices or held-out kinds of sound; its rows
#      are those the 1000-row corpus would have, so synthesis is shared with egs/synthetic's cache);
#   2. the attribute probe (egs/mini/local/attribute_probe.py: gender and accent asked as in
#      training; a non-speech reply is right only when it says no one speaks and names no speaker,
#      the lenient count beside it) on the probe set, the real clips of tests/data/audio and the
#      real recordings Debian installs (alsa-utils' voice, freedesktop sound effects) and the CMU
#      ARCTIC man of the pysptk sdist (egs/synthetic/local/registry_recordings.py), with the
#      LLM-reading-the-description reference;
#   3. linear probes of gender, accent and speech/non-speech on the encoder layers and the adapter
#      output (egs/synthetic/local/encoder_probe.py).
#
#   bash egs/mini/local/probe.sh [TAG [MODEL]]
#     TAG: dump/TAG, exp/TAG (default mini); MODEL: default exp/TAG/train/final (a checkpoint's
#     model folder for a learning curve). ATTRIBUTES=gender asks one attribute only;
#     LLM_REFERENCE= skips the LLM reading the description; ENCODER_PROBE=false skips the linear
#     probes; PROBE_NUM=N draws the probe set from an N-row corpus (default 1000: N/10 test rows);
#     OUT=DIR writes the tables there (default exp/TAG/probe, or exp/TAG/probe/step-N for a checkpoint).
set -euo pipefail
cd "$(dirname "$0")/../../.."
tag=${1:-mini}
dump=dump/$tag exp=exp/$tag
model=${2:-$exp/train/final} out=${OUT:-$exp/probe${2:+/$(basename "$(dirname "$2")")}}
. scripts/python_env.sh
. egs/mini/local/mix.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false
probe=$dump/probe_${PROBE_NUM:-1000}
if [ ! -s "$probe/test.jsonl" ]; then
  # shellcheck disable=SC2086
  speechllm synth "$probe" --num "${PROBE_NUM:-1000}" --seed 0 --splits test --overwrite $synth_mix
fi
. egs/synthetic/local/probe_inputs.sh
mkdir -p "$out"
python egs/mini/local/attribute_probe.py --model "$model" --test "$probe/test.jsonl" \
  --train "$dump/data/train.jsonl" "${reference[@]}" --template desta2-v3 --nonspeech-rule strict \
  --attributes "${ATTRIBUTES:-gender,accent}" "${real[@]}" --out "$out/attribute_probe.json" | tee "$out/attribute_probe.md"
if [ "${ENCODER_PROBE:-true}" = true ]; then
  python egs/synthetic/local/encoder_probe.py --model "$model" --train "$dump/data/train.jsonl" \
    --test "$probe/test.jsonl" "${real[@]}" --out "$out/encoder_probe.json" | tee "$out/encoder_probe.md"
fi
