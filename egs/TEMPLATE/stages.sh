#!/usr/bin/env bash
# Shared stage script of every egs/<corpus>/run.sh (Kaldi/ESPnet style).
#
#   stages: 0 setup | 1 prepare | 2 describe | 3 generate | 4 cache | 5 train | 6 infer | 7 eval
#   run.sh --stage 2 --stop_stage 5      # by number
#   run.sh --stage describe --stop_stage train   # or by name
#   run.sh --help                        # every option with its default
#
# A stage whose outputs exist is skipped (a no-op) unless --force; a stage whose inputs are
# missing says which earlier stage to run. Nothing here is machine-specific: corpus locations
# come from options or from db.sh (copy egs/TEMPLATE/db.sh.example to egs/db.sh).
set -euo pipefail

log() { echo "[$(date '+%Y-%m-%d %H:%M:%S')] (${corpus:-?}) $*"; }
die() { log "ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------- options (all defaulted)
stage=0                 # first stage to run (number or name)
stop_stage=7            # last stage to run (number or name)
corpus=""               # importer name for `speechllm prepare` (synthetic: see prepare_mode)
prepare_mode=prepare    # prepare = `speechllm prepare CORPUS DIR`; synth = offline synthetic corpus
corpus_dir=""           # where the corpus lies (default: from db.sh)
prepare_opts=""         # extra options of `speechllm prepare` (e.g. "--splits train-clean-100 dev-clean")
synth_num=300           # synthetic corpus: number of utterances
synth_seed=0            # synthetic corpus: seed
synth_opts=""           # synthetic corpus: extra options of `speechllm synth` (e.g. "--natural 0.5 --nonspeech 0.15")
splits="train dev test"  # manifest names written by the prepare stage (<split>.jsonl)
split_map=""            # prepare: corpus split -> ours, e.g. "train=train-clean-100 dev=dev-clean test=test-clean" ("" = speaker hash)
split_dev=0.05          # prepare: share of speakers in dev (speaker-hash rule)
split_test=0.05         # prepare: share of speakers in test (speaker-hash rule)
train_split=train       # split used for training
valid_split=dev         # split used for validation ("" = none)
test_split=test         # held-out split for infer/eval
dump=""                 # data folder (default: dump/<tag>)
exp=""                  # experiment folder (default: exp/<tag>)
tag=""                  # name of this run (default: the corpus name)
config=""               # recipe YAML under recipes/ (model + generation + training)
overrides=""            # extra dotted key=value overrides for train (space-separated)
annotators=""           # describe: comma-separated annotators ("" = describe's default)
describe_jobs=2         # describe: worker processes
describe_opts=""        # describe: extra options (e.g. "--template desta2-v2")
prompt_pool=""          # generate: prompt pool (e.g. builtin:attributes; "" = fixed instruction)
gen_max_new_tokens=96   # generate: response length limit
gen_batch_size=""       # generate: rows decoding at once (empty: the config's generation.batch_size)
gen_extra=""            # generate: extra options
targets_filter=""       # generate: command run as CMD DESCRIBED.jsonl TARGETS.jsonl after each split (may rewrite TARGETS)
use_feature_cache=true  # stage 4: cache frozen-encoder features for training
launcher=local          # local | accelerate | slurm
num_gpus=1              # accelerate/slurm: processes per node
num_nodes=1             # slurm: training nodes (one srun task per node; torchrun meets at a c10d rendezvous)
engine=auto             # train: distributed engine, auto | ddp | fsdp2 (sets train.engine unless auto)
rdzv_port=29500         # slurm: rendezvous port on the allocation's first node (MASTER_ADDR)
accelerate_config=""    # accelerate: config file (default: recipes/accelerate/multi_gpu_ddp.yaml)
slurm_opts=""           # slurm: extra srun / sbatch options (partition, time, ...)
shards=1                # describe, generate, cache: N shards by id (slurm: one sbatch array job per stage), then merged
dry_run=false           # print the describe/generate/cache/train commands instead of running them
infer_clips=""          # stage 6: extra audio files to run speechllm-infer on
infer_limit=0           # stage 6: answer only the first N held-out rows (0 = all)
infer_prompt="Is the speaker male or female, and what is their accent?"  # stage 6: prompt
eval_limit=0            # stage 7: evaluate only the first N items (0 = all)
builtin_style=short     # stage 7: built-in benchmark style: short (one-word answers) | choice (MMAU style)
benches=""              # stage 7: extra benchmarks NAME:PATH (space-separated), e.g. mmau:/data/mmau.json
skip_install=false      # stage 0: skip scripts/install.sh (already installed)
num_threads=""          # torch CPU threads: N, or auto (idle cores, measured as each command starts) (default: $OMP_NUM_THREADS or 1)
force=false             # re-run stages whose outputs exist

stage_names=(setup prepare describe generate cache train infer eval)

usage() {
  sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  echo "Options (current value):"
  sed -n '/^# -* options/,/^stage_names=/p' "${BASH_SOURCE[0]}" | grep -E '^[a-z_]+=.*# ' | \
    while IFS= read -r line; do
      name=${line%%=*}; comment=${line##*  # }
      printf '  --%-20s %-24s %s\n' "$name" "\"${!name}\"" "$comment"
    done
}

# Recipe defaults are set by the caller (run.sh) as --opt value pairs before "$@".
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --*=*) key=${1%%=*}; key=${key#--}; val=${1#*=}; shift ;;
    --*) key=${1#--}; [ $# -ge 2 ] || die "option --$key needs a value"; val=$2; shift 2 ;;
    *) die "unexpected argument '$1' (options are --name value; see --help)" ;;
  esac
  key=${key//-/_}
  declare -p "$key" >/dev/null 2>&1 && [[ " ${stage_names[*]} " != *" $key "* ]] || die "unknown option --$key (see --help)"
  printf -v "$key" '%s' "$val"
done

stage_number() {
  local s=$1 i
  if [[ $s =~ ^[0-9]+$ ]]; then echo "$s"; return; fi
  for i in "${!stage_names[@]}"; do [ "${stage_names[$i]}" = "$s" ] && { echo "$i"; return; }; done
  die "unknown stage '$s'; stages: ${stage_names[*]}"
}
stage=$(stage_number "$stage"); stop_stage=$(stage_number "$stop_stage")

# ---------------------------------------------------------------- derived paths
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tag=${tag:-$corpus}
[ -n "$tag" ] || die "--corpus (or --tag) is required"
[ -f "$repo/egs/db.sh" ] && . "$repo/egs/db.sh"
if [ -z "$corpus_dir" ] && [ "$prepare_mode" = prepare ]; then
  var="$(echo "$corpus" | tr '[:lower:]-' '[:upper:]_')"
  corpus_dir="${!var:-}"
fi
dump=${dump:-dump/$tag}
exp=${exp:-exp/$tag}
[ -n "$config" ] || die "--config is required (a recipe under recipes/)"
[ -f "$config" ] || config="$repo/$config"
[ -f "$config" ] || die "recipe $config not found"
if [ "${num_threads:-}" = auto ]; then
  # Each speechllm command counts the idle cores when it starts (speechllm.utils.threads).
  export SPEECHLLM_NUM_THREADS=auto; unset OMP_NUM_THREADS
else
  export OMP_NUM_THREADS=${num_threads:-${OMP_NUM_THREADS:-1}}
fi
# The project's Python environment (<repo>/.venv unless one is active; scripts/python_env.sh).
# shellcheck source=scripts/python_env.sh
. "$repo/scripts/python_env.sh"
export TOKENIZERS_PARALLELISM=false
read -r -a override_args <<< "$overrides"
read -r -a gen_extra_args <<< "$gen_extra"

run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
done_marker() { echo "$dump/.done.$1"; }
fresh() {  # --force: remove a stage's old outputs, which its resumable tool would otherwise continue
  [ "$force" = true ] || return 0
  local p
  for p in "$@"; do
    if [ -e "$p" ]; then log "--force: removing $p"; [ "$dry_run" = true ] || rm -rf "$p"; fi
  done
}

skip_if_done() {  # a finished stage is a no-op unless --force
  if [ "$force" != true ] && [ -f "$(done_marker "$1")" ]; then
    log "stage $1 (${stage_names[$1]}): already done ($(done_marker "$1")); --force to redo"; return 0
  fi
  return 1
}
mark_done() { [ "$dry_run" = true ] && return 0; mkdir -p "$dump"; date '+%F %T' > "$(done_marker "$1")"; }
need() {  # need FILE STAGE: an input made by an earlier stage
  [ -e "$1" ] || die "missing $1: run stage $2 (${stage_names[$2]}) first, e.g. --stage $2"
}
x() {  # run a command, or with --dry_run true print it (shell-quoted, one line starting with "+")
  if [ "$dry_run" = true ]; then printf '+'; printf ' %q' "$@"; printf '\n'; else "$@"; fi
}
# Each srun task (one per node) finds the allocation's first node (MASTER_ADDR) and starts torchrun
# there and on every other node; they meet at the c10d rendezvous MASTER_ADDR:rdzv_port under the
# job id. Arguments: python nodes gpus-per-node port, then train's arguments.
# shellcheck disable=SC2016
slurm_train_script='export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1);'
slurm_train_script+=' exec "$0" -m torch.distributed.run --nnodes="$1" --nproc_per_node="$2" --rdzv_backend=c10d'
slurm_train_script+=' --rdzv_endpoint="$MASTER_ADDR:$3" --rdzv_id="$SLURM_JOB_ID" -m speechllm.cli train "${@:4}"'
train_cmd() {
  local engine_args=()
  [ "$engine" = auto ] || engine_args=("train.engine=$engine")
  case "$launcher" in
    local) x speechllm train "$@" "${engine_args[@]}" ;;
    accelerate) [ "$num_nodes" = 1 ] || die "--launcher accelerate starts one node; for --num_nodes $num_nodes use --launcher slurm (docs/scaling.md)"
                x accelerate launch --config_file "${accelerate_config:-$repo/recipes/accelerate/multi_gpu_ddp.yaml}" \
                  --num_processes "$num_gpus" -m speechllm.cli train "$@" "${engine_args[@]}" ;;
    slurm) # shellcheck disable=SC2086
           x srun --nodes="$num_nodes" --ntasks-per-node=1 --gpus-per-node="$num_gpus" $slurm_opts \
             bash -c "$slurm_train_script" "$PY" "$num_nodes" "$num_gpus" "$rdzv_port" "$@" "${engine_args[@]}" ;;
    *) die "unknown --launcher $launcher (local | accelerate | slurm)" ;;
  esac
}
[[ "$shards" =~ ^[1-9][0-9]*$ ]] || die "--shards $shards: a number >= 1"
sharded() {  # sharded CMD...: run CMD once per shard; @I@ in an argument becomes the shard number
  # (local: one after another; slurm: one sbatch array job, waited for). With --shards 1: CMD once, @I@ -> 0.
  local i a args
  if [ "$shards" -gt 1 ] && [ "$launcher" = slurm ]; then
    local wrap=""
    for a in "$@"; do wrap+="$(printf '%q' "$a") "; done
    # shellcheck disable=SC2086
    x sbatch --wait --array="0-$((shards - 1))" --job-name="speechllm-$2" $slurm_opts \
      --wrap "${wrap//@I@/\$SLURM_ARRAY_TASK_ID}"
    return
  fi
  for ((i = 0; i < shards; i++)); do
    args=(); for a in "$@"; do args+=("${a//@I@/$i}"); done
    x "${args[@]}"
  done
}
shard_out=""; shard_args=()
set_shard_out() {  # set_shard_out FILE.jsonl: where one shard writes, and its --shard option
  if [ "$shards" -gt 1 ]; then shard_out="${1%.jsonl}.@I@.jsonl"; shard_args=(--shard "@I@/$shards")
  else shard_out=$1; shard_args=(); fi
}
shard_files() { local i; for ((i = 0; i < shards; i++)); do echo "${1%.jsonl}.$i.jsonl"; done; }
concat_shards() {  # concat_shards OUT: OUT.0 .. OUT.N-1 (each .jsonl with its side files) into OUT
  local out=$1 base=${1%.jsonl} i side
  for ((i = 0; i < shards; i++)); do cat "$base.$i.jsonl"; done > "$out.tmp" && mv "$out.tmp" "$out"
  for side in skipped.jsonl; do
    for ((i = 0; i < shards; i++)); do [ ! -f "$base.$i.jsonl.$side" ] || cat "$base.$i.jsonl.$side"; done > "$out.$side"
  done
}

data="$dump/data"; described="$dump/described"; targets="$dump/targets"; features="$dump/features"
model_dir="$exp/train/final"
log "corpus=$corpus tag=$tag config=$config dump=$dump exp=$exp stages ${stage}..${stop_stage} threads=${OMP_NUM_THREADS:-auto} python=$PY"

# ---------------------------------------------------------------- 0 setup: install + offline models
if run_stage 0; then
  log "stage 0 (setup): install speechllm and its offline models"
  if [ "$skip_install" != true ]; then bash "$repo/scripts/install.sh"; fi
  # The recipe's offline models, and Whisper tiny.en: describe's default ASR for rows without text.
  for ref in $(speechllm config get --config "$config" model.encoder) \
             $(speechllm config get --config "$config" model.llm) offline:whisper-tiny.en; do
    case "$ref" in offline:*) speechllm assets install "${ref#offline:}" ;; esac
  done
fi

# ---------------------------------------------------------------- 1 prepare: corpus -> manifests
if run_stage 1 && ! skip_if_done 1; then
  log "stage 1 (prepare): $prepare_mode"
  if [ "$prepare_mode" = synth ]; then
    # shellcheck disable=SC2086
    speechllm synth "$data" --num "$synth_num" --seed "$synth_seed" --overwrite $synth_opts
  else
    [ -n "$corpus_dir" ] || die "no corpus folder: pass --corpus_dir or set it in egs/db.sh"
    [ -d "$corpus_dir" ] || die "corpus folder $corpus_dir does not exist (--corpus_dir or egs/db.sh)"
    speechllm prepare "$corpus" "$corpus_dir" "$data/raw" ${prepare_opts:-}
    map_args=(); for m in $split_map; do map_args+=(--map "$m"); done
    speechllm split "$data/raw/manifest.jsonl" "$data" "${map_args[@]}" --dev "$split_dev" --test "$split_test"
  fi
  mark_done 1
fi

# ---------------------------------------------------------------- 2 describe: annotate + seed descriptions
if run_stage 2 && ! skip_if_done 2; then
  log "stage 2 (describe)"
  mkdir -p "$described"
  for s in $splits; do
    need "$data/$s.jsonl" 1
    fresh "$described/$s.jsonl" "$described/$s.jsonl".* "$described/$s.describe.yaml" "$described/$s".[0-9]*.*
    set_shard_out "$described/$s.jsonl"
    # shellcheck disable=SC2086
    sharded speechllm describe "$data/$s.jsonl" "$shard_out" "${shard_args[@]}" --config "$config" --jobs "$describe_jobs" \
      ${annotators:+--annotators "$annotators"} $describe_opts
    # Describe's shards are disjoint by id: concatenated, they are the whole split.
    if [ "$shards" -gt 1 ]; then x concat_shards "$described/$s.jsonl"; fi
  done
  mark_done 2
fi

# ---------------------------------------------------------------- 3 generate: the frozen LLM's own answers
if run_stage 3 && ! skip_if_done 3; then
  log "stage 3 (generate)"
  mkdir -p "$targets"
  for s in $train_split $valid_split; do
    need "$described/$s.jsonl" 2
    fresh "$targets/$s.jsonl" "$targets/$s".*.json "$targets/$s".*.yaml "$targets/$s".dropped.jsonl \
      "$targets/$s".[0-9]*.*
    set_shard_out "$targets/$s.jsonl"
    sharded speechllm generate "$described/$s.jsonl" "$shard_out" "${shard_args[@]}" --config "$config" \
      --max-new-tokens "$gen_max_new_tokens" ${gen_batch_size:+--batch-size "$gen_batch_size"} \
      ${prompt_pool:+--prompt-pool "$prompt_pool"} "${gen_extra_args[@]}"
    if [ "$shards" -gt 1 ]; then
      mapfile -t parts < <(shard_files "$targets/$s.jsonl")
      x speechllm generate merge "${parts[@]}" --output "$targets/$s.jsonl" --expect "$described/$s.jsonl"
    fi
    # shellcheck disable=SC2086
    if [ -n "$targets_filter" ]; then $targets_filter "$described/$s.jsonl" "$targets/$s.jsonl"; fi
  done
  mark_done 3
fi

train_data=("data.train=[$targets/$train_split.jsonl]")
[ -n "$valid_split" ] && train_data+=("data.valid=$targets/$valid_split.jsonl")
[ "$use_feature_cache" = true ] && train_data+=("data.feature_cache=$features")

# ---------------------------------------------------------------- 4 cache: frozen-encoder features
if run_stage 4 && [ "$use_feature_cache" = true ] && ! skip_if_done 4; then
  log "stage 4 (cache features)"
  need "$targets/$train_split.jsonl" 3
  fresh "$features"   # rows are keyed by id: re-made audio under the same ids needs a new cache
  shard_args=(); [ "$shards" -gt 1 ] && shard_args=(--shard "@I@/$shards")
  sharded speechllm cache-features --config "$config" --out "$features" "${shard_args[@]}" "${train_data[@]}" \
    "${override_args[@]}"
  if [ "$shards" -gt 1 ]; then
    x speechllm cache-features --config "$config" --out "$features" --merge "${train_data[@]}" "${override_args[@]}"
  fi
  mark_done 4
fi

# ---------------------------------------------------------------- 5 train
if run_stage 5 && ! skip_if_done 5; then
  log "stage 5 (train) launcher=$launcher"
  need "$targets/$train_split.jsonl" 3
  fresh "$exp/train"   # otherwise training resumes from its last checkpoint
  train_cmd --config "$config" --resume auto "${train_data[@]}" "train.output_dir=$exp/train" "${override_args[@]}"
  [ "$dry_run" = true ] || need "$model_dir" 5
  mark_done 5
fi

# ---------------------------------------------------------------- 6 infer: held-out audio (+ extra clips)
if run_stage 6 && ! skip_if_done 6; then
  log "stage 6 (infer)"
  need "$model_dir" 5
  need "$data/$test_split.jsonl" 1
  fresh "$exp/infer"
  mkdir -p "$exp/infer"
  speechllm-infer --model "$model_dir" --config "$config" --manifest "$data/$test_split.jsonl" \
    --output "$exp/infer/$test_split.jsonl" --prompt "$infer_prompt" --max-new-tokens 64 \
    --ignore-manifest-transcripts $( [ "$infer_limit" -gt 0 ] && echo --limit "$infer_limit" )
  # The model hears its own Whisper transcript (as deployed), not the manifest's gold one; the
  # transcript it heard is recorded in each row ("transcripts") and in clips.log.
  for clip in $infer_clips; do
    [ -f "$clip" ] || { log "infer clip $clip not found: skipped"; continue; }
    reply=$(speechllm-infer --model "$model_dir" --config "$config" --audio "$clip" --prompt "$infer_prompt" \
      --max-new-tokens 64 --show-transcript 2>"$exp/infer/.clip.err" | tr '\n' ' ') || {
      log "speechllm-infer $(basename "$clip") failed: $(tail -1 "$exp/infer/.clip.err")"; continue; }
    heard=$(sed -n "s/^transcript (heard) [^:]*: //p" "$exp/infer/.clip.err")
    log "speechllm-infer $(basename "$clip"): heard ${heard:-''} -> $reply"
  done | tee "$exp/infer/clips.log"
  rm -f "$exp/infer/.clip.err"
  mark_done 6
fi

# ---------------------------------------------------------------- 7 eval: benchmark + retention
if run_stage 7 && ! skip_if_done 7; then
  log "stage 7 (eval)"
  need "$model_dir" 5
  fresh "$exp/eval"
  bench_args=()
  if [ "$prepare_mode" = synth ]; then
    speechllm eval build-builtin "$data/$test_split.jsonl" "$dump/builtin.jsonl" --style "$builtin_style"
    bench_args+=(--bench "builtin:$dump/builtin.jsonl")
  fi
  for b in $benches; do bench_args+=(--bench "$b"); done
  llm=$(speechllm config get --config "$config" model.llm)
  limit_args=(); [ "$eval_limit" -gt 0 ] && limit_args=(--limit "$eval_limit")
  speechllm eval --config "$config" --model "$model_dir" "${bench_args[@]}" --bench retention --base "$llm" \
    --out "$exp/eval" "${limit_args[@]}"
  [ -f "$exp/eval/report.md" ] && cat "$exp/eval/report.md"
  mark_done 7
fi
log "done (stages ${stage}..${stop_stage})"
