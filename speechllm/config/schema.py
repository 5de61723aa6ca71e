"""The typed configs of every stage. One dataclass per concern; a recipe YAML is a ``RunConfig``.

Defaults are the offline CPU setting (Whisper tiny.en + SmolLM2-135M-Instruct from the local
asset cache); the DeSTA2 / DeSTA2.5 recipes under ``recipes/`` override them. Each field's help
text is its ``metadata["help"]``: ``speechllm config show --help-fields`` prints them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from speechllm.config.describe import DescribeConfig
from speechllm.config.fields import Bound, Precision, Range, _f

__all__ = ["Bound", "DataConfig", "DescribeConfig", "EvalConfig", "GenerationConfig", "LoraConfig", "ModelConfig",
           "Precision", "Range", "ReplayConfig", "RunConfig", "SamplingConfig", "TrainConfig", "_f"]


# Why a setting may change when a run is resumed (``_f(on_resume=...)``; docs/training.md lists them).
_RESUME_BOOKKEEPING = "when to save, log or validate, not what is learned"
_RESUME_SAME_MATHS = "a speed or memory lever with the same loss and gradients (a run moving to another machine)"
_RESUME_LENGTH = ("extends or shortens the run; the learning-rate schedule is recomputed over the new total, "
                  "so the rate from the resumed step on follows the new schedule")


@dataclass
class LoraConfig:
    """Optional LoRA on the LLM (DeSTA2.5: r=16 on q, k, v; off by default, as in DeSTA2)."""

    enabled: bool = _f(False, "train LoRA adapters on the LLM (through peft)")
    r: int = _f(16, "LoRA rank", ge=1)
    alpha: int = _f(32, "LoRA alpha (scaling = alpha / r)", gt=0)
    dropout: float = _f(0.05, "LoRA dropout", ge=0, lt=1)
    target_modules: list[str] = _f(["q_proj", "k_proj", "v_proj"], "LLM module names to adapt")
    method: str = _f(
        "lora", "peft method when enabled: lora, dora (weight-decomposed LoRA) or ia3 (learned rescaling "
        "vectors on target_modules); docs/forgetting.md, update scopes", choices="speechllm.models.llm_update:PEFT_METHODS")


@dataclass
class LLMTrainConfig:
    """LLM weights trained in place, chosen by name (like NeMo's freezing): none by default."""

    patterns: list[str] = _f(
        [], "regular expressions searched in the base LLM's parameter names (e.g. embed_tokens, lm_head, "
        "'norm.weight$'); matching weights train in full")
    last_layers: int = _f(0, "also train every weight of the last N decoder layers", ge=0)


@dataclass
class PromptTuningConfig:
    """Prompt tuning (Lester et al. 2021): N learned virtual-token embeddings at the start of every
    LLM input, before the chat template's first token (as peft places them)."""

    num_tokens: int = _f(0, "number of virtual tokens (0: off)", ge=0)
    init_text: str = _f("", "initialise them from this text's token embeddings (repeated to num_tokens); "
                        "empty: random, scaled like the LLM's embeddings")


@dataclass
class PrefixTuningConfig:
    """Prefix tuning (Li & Liang 2021): learned keys and values for N virtual positions in every
    decoder layer, pre-filled into the KV cache before every LLM input."""

    num_tokens: int = _f(0, "number of prefix positions per layer (0: off)", ge=0)
    init_text: str = _f("", "initialise them from the LLM's own keys/values over this text's tokens (repeated "
                        "to num_tokens); empty: small seeded random values")


@dataclass
class ModelConfig:
    """Frozen encoder + adapter + frozen chat LLM."""

    encoder: str = _f("offline:whisper-tiny.en", "Whisper model: offline:NAME, a local folder, or a hub id")
    encoder_revision: str | None = _f(None, "hub revision of the encoder (commit or tag)")
    llm: str = _f("offline:smollm2-135m-instruct", "chat LLM: offline:NAME, a local folder, or a hub id")
    llm_revision: str | None = _f(None, "hub revision of the LLM")
    adapter: str = _f("qformer", "adapter registry name: qformer (DeSTA2) or mlp (frame stacking)",
                      choices="speechllm.models.adapters:adapter_names")
    encoder_layers: list[int] | None = _f(
        None, "encoder indices to tap, numbered as model.tap_point says; null = the per-size DeSTA default",
        ge=0,
    )
    tap_point: str = _f(
        "hidden_states",
        "what a tap index names: hidden_states (DeSTA2; HF's output_hidden_states: 0 = embeddings, i = "
        "output of block i, the last index after the encoder's closing LayerNorm) or block_output "
        "(DeSTA2.5: the raw output of 0-based block i, 0..blocks-1, no closing LayerNorm)",
        choices="speechllm.models.encoder:TAP_POINTS",
    )
    num_queries: int = _f(64, "Q-Former: learned queries per tapped layer (per 30 s window)", ge=1)
    qformer_layers: int = _f(2, "Q-Former: shared transformer depth (DeSTA2: 2, DeSTA2.5: 6)", ge=1)
    qformer_ffn_dim: int = _f(3072, "Q-Former: feed-forward width (BERT default 3072)", ge=1)
    qformer_context: str = _f(
        "valid",
        "Q-Former cross-attention keys: valid (only the frames of real audio: ~10x fewer FLOPs for "
        "short clips, and a feature cache that stores only those frames) or window (DeSTA2: all 1500 "
        "frames of each 30 s window, padding included; the desta2/desta25 recipes pin it)",
        choices="speechllm.models.adapters:QFormerAdapter.CONTEXTS",
    )
    qformer_init: str = _f(
        "bert",
        "Q-Former: initialisation of the shared transformer's Linear layers: bert (normal(0, 0.02) "
        "weights, zero biases) or pytorch (torch's default Linear init, which DeSTA2 and DeSTA2.5 keep)",
        choices="speechllm.models.adapters:QFormerAdapter.INITS",
    )
    frame_norm: str = _f(
        "global",
        "normalise each tapped layer's frames before the adapter: global (per-dimension mean/std over "
        "the real frames of training audio, estimated once when training starts, as Kaldi's global "
        "CMVN; saved with the adapter) or none (DeSTA2; the desta2/desta25 recipes pin it)",
        choices="speechllm.models.adapters:FRAME_NORMS",
    )
    frame_norm_rows: int = _f(256, "frame_norm=global: training rows the statistics are estimated from", ge=1)
    mlp_stack: int = _f(8, "MLP adapter: encoder frames stacked per output vector", ge=1)
    mlp_hidden: int | None = _f(None, "MLP adapter: hidden width; null = LLM width", ge=1)
    transcript_source: Literal["manifest", "whisper", "none"] = _f(
        "manifest", "text after the adapter vectors: manifest transcript, Whisper's own, or none"
    )
    max_transcript_tokens: int = _f(100, "transcript tokens kept in the audio span (DeSTA2.5: 100)", ge=0)
    transcript_prefix: str = _f(
        "", "text put before every non-blank transcript in the audio span (DeSTA2: ' ', the leading "
        "space of Whisper's decoded text, which DeSTA2 keeps)")
    no_speech_transcript: str = _f(
        "", "what enters the span after the adapter vectors when the transcript is blank, e.g. VAD heard no "
        "speech (DeSTA2.5: ' ', one token)")
    asr_language: str | None = _f(
        None, "language of Whisper's own transcript for a multilingual encoder (e.g. en); null: detected per "
        "30 s window (English-only encoders ignore it)")
    use_vad: bool = _f(True, "run silero-vad before ASR; non-speech gets an empty transcript")
    vad_on_given_transcripts: bool = _f(
        False, "where the model transcribes (infer, eval): also run silero-vad on audio whose transcript is "
        "given, and blank that transcript when no speech is heard (DeSTA2.5)")
    audio_locator: str = _f("<|AUDIO|>", "string in the chat messages that the audio span replaces")
    audio_start: str = _f("<start_audio>", "text placed before each audio span ('' for none)")
    audio_end: str = _f("<end_audio>", "text placed after each audio span ('' for none)")
    audio_role: str | None = _f(
        None, "put each audio in a chat turn of its own with this role (DeSTA2: audio), just before the "
        "user turn that holds its locator; null: the audio stays inside the user turn (DeSTA2.5)")
    adapter_dropout: float = _f(0.1, "Q-Former dropout during training (BERT default 0.1)", ge=0, lt=1)
    max_audio_seconds: float = _f(
        300.0, "longest audio accepted; longer raises an error (audio is never silently truncated)",
        gt=0,
    )
    chat_template: str | None = _f(None, "Jinja chat template file for LLMs that ship none")
    dtype: Precision = _f("auto", "dtype of the frozen weights (auto: bf16 where fast, else fp32)")
    trust_remote_code: bool = _f(
        False, "a request only: models' own code (auto_map) runs only with --trust-remote-code or "
        "SPEECHLLM_TRUST_REMOTE_CODE=1 from the person running the command; true in a file without them is refused")
    lora: LoraConfig = field(default_factory=LoraConfig)
    llm_train: LLMTrainConfig = field(default_factory=LLMTrainConfig)
    prompt_tuning: PromptTuningConfig = field(default_factory=PromptTuningConfig)
    prefix_tuning: PrefixTuningConfig = field(default_factory=PrefixTuningConfig)


@dataclass
class DataConfig:
    """Training and validation data."""

    train: list[str] = _f([], "training JSONL files (targets.jsonl rows from `speechllm generate`)")
    train_weights: list[float] | None = _f(
        None, "sampling weight per training file, one per data.train file; null = by size", gt=0, length="train")
    valid: str | None = _f(None, "validation JSONL file",
                           on_resume="read only by validation, which never changes the weights")
    replay: list[str] = _f([], "text-only replay JSONL files (from `speechllm generate-replay`)")
    replay_ratio: float = _f(0.0, "share of text-only replay rows in every batch (~0.05 is usual)", ge=0, lt=1)
    max_audio_seconds: float = _f(
        30.0, "longest training audio; longer rows are skipped and counted as too_long (audio over 30 s runs in 30 s windows)",
        gt=0,
    )
    max_length: int = _f(1024, "maximum tokens per example (longer targets are truncated)", ge=1)
    bucket_by_length: bool = _f(True, "group examples of similar audio seconds + tokens per batch")
    feature_cache: str | None = _f(
        None, "folder of cached encoder features (`speechllm cache-features`)",
        on_resume="where the frozen encoder's features are cached; a cache is checked against the encoder when opened")
    build_feature_cache: bool = _f(
        True, "with data.feature_cache set: build or complete the cache before training (main process)",
        on_resume="whether a missing cache is built first; the features are the same",
    )
    num_workers: int = _f(
        0, "DataLoader worker processes", ge=0,
        on_resume="loader processes only; the rows and their order come from the sampler state in the checkpoint")


@dataclass
class GenerationConfig:
    """Target generation by the frozen LLM (stage 3) and text-only replay (stage 4); how to decode is
    the ``sampling`` section, what only replay reads the ``replay`` section."""

    backend: Literal["hf", "vllm"] = _f("hf", "generation backend")
    instruction: str = _f("What can you hear from the audio?", "fixed instruction (DeSTA2's default)")
    prompt_pool: str | None = _f(None, "text file of instructions, one per line, drawn per row (seeded)")
    system_prompt: str | None = _f(None, "optional system prompt (stored in the training conversation too)")
    context_prompt: str | None = _f(
        None, "system prompt used only while generating targets, not stored in the training "
        "conversation (context distillation); 'builtin:describe' = a note that the wrapped text "
        "describes an audio clip. Helps small LLMs answer from the description; 'builtin:describe-no-speech' = the "
        "same, plus the answer form for clips with no speech")
    chat_template: str | None = _f(None, "Jinja chat template file for LLMs that ship none")
    batch_size: int = _f(
        64, "rows decoding at once (length-sorted, continuous batching). On a 2-core CPU with SmolLM2-135M, "
        "64 gave 1.45x the tokens/s of 16 (docs/benchmarks.md)", ge=1)
    dtype: Precision = _f("auto", "LLM dtype (auto: bf16 where the hardware runs it fast)")
    seed: int = _f(0, "seed for prompt-pool draws and sampling", ge=0, lt=2**32)
    drop_degenerate: bool = _f(False, "drop empty or looping responses instead of keeping and counting them")
    device: str = _f("auto", "where the LLM runs: auto (cuda when available, else cpu), cpu, cuda, cuda:N")
    strict: bool = _f(False, "a row without a description is an error (default: skip it and count it)")


@dataclass
class SamplingConfig:
    """How a reply is decoded: one section read by ``generate``, ``generate-replay`` and ``infer``
    (their --max-new-tokens, --temperature, ... flags override it). ``eval`` decodes greedily
    (a score must not depend on a draw), so of this section it reads nothing."""

    max_new_tokens: int = _f(256, "length limit of a reply; responses cut by it are flagged", ge=1)
    temperature: float = _f(0.0, "0 = greedy", ge=0)
    top_p: float = _f(1.0, "nucleus sampling mass", gt=0, le=1)
    top_k: int = _f(0, "top-k sampling (0 = off)", ge=0)
    repetition_penalty: float = _f(1.0, "HF repetition penalty (1 = off)", gt=0)


@dataclass
class ReplayConfig:
    """Settings only ``speechllm generate-replay`` reads (its kinds: docs/generation.md)."""

    samples: int = _f(1, "self-output: answers sampled per instruction (K)", ge=1)
    verifier: str | None = _f(
        None, "self-output: exact | contains | regex:PATTERN | module:function (null = keep all)"
    )
    instruction_max_new_tokens: int = _f(128, "pseudo: length limit of a sampled instruction", ge=1)
    editor: str | None = _f(None, "minimum-change: editor LLM (offline:NAME, folder or hub id)")
    editor_url: str | None = _f(
        None, "minimum-change: OpenAI-compatible endpoint base URL (instead of a local editor)"
    )
    editor_model: str | None = _f(None, "minimum-change: model name sent to the endpoint")
    editor_api_key_env: str = _f("OPENAI_API_KEY", "environment variable holding the endpoint's API key")


@dataclass
class EvalConfig:
    """``speechllm eval``'s decoding and batching (its --batch-size, --max-new-tokens and --seed
    flags override it). Answers are greedy; the limit is eval's own because benchmark answers are
    short and the figures in the docs were measured at 128."""

    batch_size: int = _f(8, "items per generation batch", ge=1)
    max_new_tokens: int = _f(128, "answer length limit", ge=1)
    seed: int = _f(0, "random seed (recorded in the report)", ge=0, lt=2**32)


@dataclass
class TrainConfig:
    """Optimisation, objectives, forgetting controls, checkpoints and logging."""

    output_dir: str = _f(
        "exp/run", "run folder: checkpoints, logs, resolved config",
        on_resume="a run folder may be moved or copied; --resume PATH may continue another folder's checkpoint")
    init_from: str | None = _f(
        None, "start from a speechllm checkpoint's trained weights (adapter, and LoRA when it has "
        "one), e.g. one written by `speechllm convert desta2|desta25`; the model settings are the "
        "checkpoint's (its weights only fit them)",
        on_resume="the starting weights matter only at step 0; a resumed run continues from its own checkpoint")
    seed: int = _f(0, "global seed", ge=0, lt=2**32)
    lr: float = _f(1e-4, "AdamW peak learning rate (DeSTA2: 1e-4)", gt=0)
    betas: list[float] = _f([0.9, 0.98], "AdamW betas (DeSTA2: 0.9, 0.98)", ge=0, lt=1, length=2)
    weight_decay: float = _f(0.01, "AdamW weight decay", ge=0)
    scheduler: Literal["cosine", "linear", "constant"] = _f("cosine", "decay after warmup")
    warmup_steps: int = _f(2000, "linear warmup steps (DeSTA2: 2000; DeSTA2.5: 5000)", ge=0)
    epochs: int = _f(10, "passes over the training data (DeSTA2: 10)", ge=1, on_resume=_RESUME_LENGTH)
    max_steps: int | None = _f(None, "stop after this many optimiser steps (overrides epochs)", ge=1,
                               on_resume=_RESUME_LENGTH)
    batch_size: int = _f(8, "examples per device per micro-batch (DeSTA2: 8)", ge=1)
    grad_accum: int = _f(1, "micro-batches per optimiser step", ge=1)
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0 = off)", ge=0)
    precision: Precision = _f("bf16", "autocast / weight precision")
    gradient_checkpointing: bool = _f(False, "recompute LLM activations in the backward pass",
                                      on_resume=_RESUME_SAME_MATHS)
    compile: bool = _f(False, "torch.compile the adapter and LLM", on_resume=_RESUME_SAME_MATHS)
    engine: Literal["auto", "ddp", "fsdp2"] = _f(
        "auto", "distributed engine: ddp (every rank holds the whole frozen LLM; trained gradients summed with "
        "one all-reduce), fsdp2 (the frozen LLM sharded over the ranks per decoder layer with FSDP2's "
        "fully_shard), auto (fsdp2 under `accelerate launch` with an FSDP config, else ddp); docs/scaling.md",
        on_resume=_RESUME_SAME_MATHS)
    fsdp_rank0_load: bool = _f(
        True, "under engine fsdp2, only the main rank reads the LLM's weights; the other ranks build it on the "
        "meta device and receive their shards from it (no rank but the main one holds the whole LLM); false: "
        "every rank loads the whole LLM before sharding it", on_resume=_RESUME_SAME_MATHS)
    reuse_prefix_kv: bool = _f(
        True, "run the chat prefix all rows share (system prompt, user header) through the frozen LLM once "
        "and start each forward after it; used only when no LLM weight trains and without gradient checkpointing",
        on_resume=_RESUME_SAME_MATHS)
    attention: Literal["auto", "sdpa", "eager", "fused"] = _f(
        "auto", "attention kernels while training: sdpa (torch's fused kernels), eager (plain "
        "matmul + softmax: faster on CPU at these lengths, where the fused backward is slow), "
        "fused (eager's maths with grouped KV heads and hand-written backwards for attention and the LLM's "
        "RMSNorm: speechllm.train.fused), "
        "auto (fused on CPU, sdpa on GPU)",
        on_resume=_RESUME_SAME_MATHS,
    )
    objectives: dict[str, float] = _f({"ce": 1.0}, "objective name -> weight: ce, kl, diva", ge=0,
                                      choices="speechllm.train.objectives:OBJECTIVES")
    kl_temperature: float = _f(2.0, "temperature of the KL objective (BLSP-KD / Ultravox: 2)", gt=0)
    diva_num_align: int = _f(0, "DiVA: audio vectors aligned to transcript embeddings (0 = off)", ge=0)
    stm_tau: float | None = _f(None, "selective token masking: drop target tokens with base perplexity > tau (paper: 2.5)", gt=0)
    stm_replay: bool = _f(
        False, "apply STM to replay rows too; off by default: replay rows are the base's own answers, and dropping "
        "their unlikely tokens would sharpen the model towards its argmax instead of preserving its distribution")
    l2sp_alpha: float = _f(0.0, "L2-SP strength alpha/2 * ||w - w0||^2 on trained LLM weights", ge=0)
    ewc_lambda: float = _f(0.0, "EWC strength (Fisher normalised to mean 1)", ge=0)
    replay_kl_weight: float = _f(0.0, "KL-to-base on replay rows", ge=0)
    save_every: int = _f(500, "checkpoint every N optimiser steps (0 = only when stopping and at the end)", ge=0,
                         on_resume=_RESUME_BOOKKEEPING)
    keep_last: int = _f(3, "checkpoints kept (0 = all)", ge=0, on_resume=_RESUME_BOOKKEEPING)
    log_every: int = _f(10, "log every N steps", ge=1, on_resume=_RESUME_BOOKKEEPING)
    eval_every: int = _f(500, "validation every N steps (0 = only at the end)", ge=0,
                         on_resume=_RESUME_BOOKKEEPING)
    num_sample_generations: int = _f(2, "validation examples generated at each evaluation", ge=0,
                                     on_resume=_RESUME_BOOKKEEPING)


@dataclass
class RunConfig:
    """A recipe: everything a run needs. ``speechllm train --config recipes/X.yaml key=value``."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    describe: DescribeConfig = field(default_factory=DescribeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    #: Keys that moved (old dotted key -> new one). A recipe or override with an old key still
    #: loads, with a one-line warning naming the new key (:func:`speechllm.config.loader.load_config`).
    moved_keys: ClassVar[dict[str, str]] = {
        **{f"generation.{k}": f"sampling.{k}"
           for k in ("max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty")},
        **{f"generation.{k}": f"replay.{k}"
           for k in ("samples", "verifier", "instruction_max_new_tokens", "editor", "editor_url",
                     "editor_model", "editor_api_key_env")},
    }
