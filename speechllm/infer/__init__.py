"""Inference: one request (``speechllm-infer --audio ... --prompt ...``) or a resumable JSONL
manifest (``--manifest in.jsonl --output out.jsonl``). See :mod:`speechllm.infer.runner`; many
requests at once: :mod:`speechllm.infer.batched`."""

from speechllm.infer.batched import BatchedReply, generate_batched
from speechllm.infer.runner import (
    GenerationOptions,
    InferRequest,
    InferResult,
    ManifestRowError,
    ManifestSummary,
    build_messages,
    format_timings,
    load_model,
    run_manifest,
    run_request,
)

__all__ = [
    "BatchedReply",
    "GenerationOptions",
    "InferRequest",
    "InferResult",
    "ManifestRowError",
    "ManifestSummary",
    "build_messages",
    "format_timings",
    "generate_batched",
    "load_model",
    "run_manifest",
    "run_request",
]
