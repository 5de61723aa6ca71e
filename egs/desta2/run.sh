#!/usr/bin/env bash
# DeSTA2-style multi-corpus mixture: each corpus is prepared and described on its own, the described
# splits are concatenated, then targets, training and evaluation run once on the mixture. The default
# list keeps corpora whose licences allow research training (LibriSpeech CC-BY 4.0, VCTK CC-BY 4.0,
# CREMA-D ODbL, Common Voice CC0); add iemocap/ravdess if your licence covers them.
# Corpus locations: egs/db.sh (see egs/TEMPLATE/db.sh.example).
#
#   bash egs/desta2/run.sh --corpora "librispeech vctk"
#   bash egs/desta2/run.sh --stage train     # options apply to the mixture's stages (3-7); stages
#                                            # 1-2 of each corpus always run (no-ops once done)
set -euo pipefail
cd "$(dirname "$0")/../.."
corpora="librispeech vctk cremad commonvoice"
if [ "${1:-}" = --corpora ]; then corpora=$2; shift 2; fi
common=(--config recipes/desta2_whisper-small_llama3-8b-instruct.yaml --prompt_pool builtin:attributes)

for c in $corpora; do  # stages 1-2 per corpus: prepare (+ speaker-disjoint split) and describe
  bash egs/TEMPLATE/stages.sh --corpus "$c" --tag "desta2/$c" "${common[@]}" "$@" --stage 1 --stop_stage 2
done
mkdir -p dump/desta2/data dump/desta2/described
for s in train dev test; do  # corpus audio lies outside dump/, so its paths are absolute: cat is safe
  for c in $corpora; do cat "dump/desta2/$c/data/$s.jsonl"; done > "dump/desta2/data/$s.jsonl"
  for c in $corpora; do cat "dump/desta2/$c/described/$s.jsonl"; done > "dump/desta2/described/$s.jsonl"
done
bash egs/TEMPLATE/stages.sh --corpus desta2 "${common[@]}" --stage 3 "$@"
