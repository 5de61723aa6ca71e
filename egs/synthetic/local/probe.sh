#!/usr/bin/env bash
# Measure a trained egs/synthetic model on audio it was not trained on (egs/synthetic/RESULTS.md):
#   1. the attribute probe (gender and accent asked as in training) on the test split (held-out
#      natural and robotic voices, held-out kinds of sound), the real clips of tests/data/audio
#      and the real recordings Debian installs (alsa-utils' voice, freedesktop sound effects),
#      with the LLM-reading-the-description reference;
#   2. linear probes of gender and speech/non-speech on the encoder layers and the adapter output.
#
#   bash egs/synthetic/local/probe.sh [TAG [TEMPLATE [MODEL]]]
#     TAG: dump/TAG, exp/TAG (default synthetic); TEMPLATE: how real recordings are described for
#     the LLM reference, as the describe stage did (default desta2-v3); MODEL: default
#     exp/TAG/train/final (a checkpoint's model folder for a learning curve). ATTRIBUTES=gender
#     asks one attribute only; LLM_REFERENCE= skips the LLM reading the description;
#     ENCODER_PROBE=false skips the linear probes.
set -euo pipefail
cd "$(dirname "$0")/../../.."
tag=${1:-synthetic} template=${2:-desta2-v3}
dump=dump/$tag exp=exp/$tag
model=${3:-$exp/train/final} out=$exp/eval${3:+/$(basename "$(dirname "$3")")}
. scripts/python_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false
. egs/synthetic/local/probe_inputs.sh
mkdir -p "$out"
python egs/mini/local/attribute_probe.py --model "$model" --test "$dump/described/test.jsonl" \
  --train "$dump/data/train.jsonl" "${reference[@]}" --template "$template" \
  --attributes "${ATTRIBUTES:-gender,accent}" "${real[@]}" --out "$out/attribute_probe.json" | tee "$out/attribute_probe.md"
if [ "${ENCODER_PROBE:-true}" = true ]; then
  python egs/synthetic/local/encoder_probe.py --model "$model" --train "$dump/data/train.jsonl" \
    --test "$dump/data/test.jsonl" "${real[@]}" --out "$out/encoder_probe.json" | tee "$out/encoder_probe.md"
fi
