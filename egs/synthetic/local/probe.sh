#!/usr/bin/env bash
# Measure a trained egs/synthetic model on audio it was not trained on (egs/synthetic/RESULTS.md):
#   1. the attribute probe (gender and accent asked as in training) on the test split (held-out
#      natural and robotic voices, held-out kinds of sound), the real clips of tests/data/audio
#      and the real recordings Debian installs (alsa-utils' voice, freedesktop sound effects),
#      with the LLM-reading-the-description reference;
#   2. linear probes of gender and speech/non-speech on the encoder layers and the adapter output.
#
#   bash egs/synthetic/local/probe.sh [TAG]        # default tag: synthetic (dump/TAG, exp/TAG)
set -euo pipefail
cd "$(dirname "$0")/../../.."
tag=${1:-synthetic}
dump=dump/$tag exp=exp/$tag
. scripts/python_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false
real=(--real tests/data/audio)
if python egs/synthetic/local/debian_sounds.py "$dump/debian_sounds"; then
  real+=(--real "$dump/debian_sounds")
else
  echo "probe: real Debian recordings left out (apt-get install alsa-utils sound-theme-freedesktop)" >&2
fi
mkdir -p "$exp/eval"
python egs/mini/local/attribute_probe.py --model "$exp/train/final" --test "$dump/described/test.jsonl" \
  --train "$dump/data/train.jsonl" --llm offline:smollm2-135m-instruct --template desta2-v2 "${real[@]}" \
  --out "$exp/eval/attribute_probe.json" | tee "$exp/eval/attribute_probe.md"
python egs/synthetic/local/encoder_probe.py --model "$exp/train/final" --train "$dump/data/train.jsonl" \
  --test "$dump/data/test.jsonl" "${real[@]}" --out "$exp/eval/encoder_probe.json" | tee "$exp/eval/encoder_probe.md"
