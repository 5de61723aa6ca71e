"""Inference on one request or a JSONL manifest, with timings.

A manifest row::

    {"id": "u1", "audio": "a.wav" | ["a.wav", "b.flac"] | null, "prompt": "What can you hear?",
     "system": "...", "transcript": "..." | ["...", null], "messages": [...]}

``messages`` (a full chat) replaces ``prompt``/``system``. Audio paths are relative to the
manifest's folder. Each output row is the input row plus ``response`` and ``transcripts``; a row
whose audio or layout is unusable gets ``error`` (a stable kind) and ``error_message`` instead,
is counted, and the job goes on. Output is appended through ``ResumableJsonlWriter``: a rerun
skips ids already written.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechllm.errors import SpeechLLMError

log = logging.getLogger(__name__)


@dataclass
class GenerationOptions:
    """Sampling options of ``speechllm-infer`` (temperature 0 = greedy)."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = 0

    def kwargs(self) -> dict[str, Any]:
        return dict(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p,
                    top_k=self.top_k, repetition_penalty=self.repetition_penalty)


@dataclass
class InferRequest:
    """One conversation: messages plus its audio files (in locator order) and optional transcripts."""

    messages: list[dict[str, Any]]
    audio_paths: list[str] = field(default_factory=list)
    transcripts: list[str | None] | None = None
    waves: list[Any] | None = None  # already decoded audio_paths (16 kHz mono), if any


@dataclass
class InferResult:
    response: str
    transcripts: list[str]
    timings: dict[str, float]
    new_tokens: int
    audio_seconds: float


class ManifestRowError(SpeechLLMError):
    """A manifest row that does not describe a request."""

    kind = "bad_row"


def build_messages(prompt: str | None, system: str | None = None) -> list[dict[str, str]]:
    """``[system?, user]`` messages from a prompt (an empty prompt gives an empty user turn)."""
    messages = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": prompt or ""})
    return messages


def load_model(model_dir: str | os.PathLike, *, device: str = "cpu", dtype: str | None = None):
    """A checkpoint folder loaded for inference (frozen, eval mode)."""
    from transformers.utils import logging as hf_logging

    from speechllm.models.speech_llm import SpeechLLM

    hf_logging.disable_progress_bar()  # per-tensor "Loading weights" bars drown the CLI's output

    return SpeechLLM.from_pretrained(model_dir, device=device, dtype=dtype)


class _TimingStreamer:
    """Records the time of the first generated token and counts tokens; optionally prints text
    as it comes (through transformers' ``TextStreamer``)."""

    def __init__(self, tokenizer: Any, print_text: bool):
        self.first_token_time: float | None = None
        self.tokens = 0
        self._seen_prompt = False
        self._printer = None
        if print_text:
            from transformers import TextStreamer

            self._printer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)

    def put(self, value) -> None:
        if self._printer is not None:
            self._printer.put(value)
        if not self._seen_prompt:  # generate first hands over the prompt
            self._seen_prompt = True
            return
        if self.first_token_time is None:
            self.first_token_time = time.perf_counter()
        self.tokens += int(value.numel())

    def end(self) -> None:
        if self._printer is not None:
            self._printer.end()


def run_request(model, request: InferRequest, options: GenerationOptions, *, stream: bool = False) -> InferResult:
    """Load the audio, build the span, generate; timings in seconds (audio load, encoder, ASR,
    time to first token from the start of generation, generation, total)."""
    import torch

    from speechllm.audio import load_audio

    t0 = time.perf_counter()
    waves = request.waves if request.waves is not None else [load_audio(p) for p in request.audio_paths]
    t_audio = time.perf_counter()
    if options.seed is not None:
        torch.manual_seed(options.seed)
    timings: dict[str, float] = {"audio_load_s": t_audio - t0}
    streamer = _TimingStreamer(model.tokenizer, print_text=stream)
    t_gen0 = time.perf_counter()
    response, batch = model.generate(
        request.messages, waves, request.transcripts, streamer=streamer, return_batch=True,
        timings=timings, **options.kwargs(),
    )
    t_end = time.perf_counter()
    first = streamer.first_token_time or t_end
    timings["ttft_s"] = first - t_gen0  # encoder + ASR + adapter + prefill + first step
    timings["decode_s"] = t_end - first
    timings["total_s"] = t_end - t0
    audio_seconds = sum(len(w) for w in waves) / 16_000
    return InferResult(response=response, transcripts=batch.transcripts[0], timings=timings,
                       new_tokens=streamer.tokens, audio_seconds=audio_seconds)


def _row_request(row: dict[str, Any], base_dir: Path, where: str, default_prompt: str | None = None,
                 default_system: str | None = None, use_manifest_transcripts: bool = True) -> InferRequest:
    audio = row.get("audio")
    if audio is None:
        paths: list[str] = []
    elif isinstance(audio, str):
        paths = [audio]
    elif isinstance(audio, list) and all(isinstance(a, str) for a in audio):
        paths = list(audio)
    else:
        raise ManifestRowError(f"{where}: field 'audio': expected a path or a list of paths")
    paths = [str(p if Path(p).is_absolute() else base_dir / p) for p in paths]
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise ManifestRowError(f"{where}: field 'messages': expected a list of {{role, content}} objects")
    else:
        prompt = row.get("prompt", row.get("instruction", default_prompt))
        if prompt is not None and not isinstance(prompt, str):
            raise ManifestRowError(f"{where}: field 'prompt': expected a string")
        messages = build_messages(prompt, row.get("system", default_system))
    transcripts = row.get("transcript") if use_manifest_transcripts else None
    if transcripts is not None:
        transcripts = [transcripts] if isinstance(transcripts, str) else list(transcripts)
        if len(transcripts) != len(paths):
            raise ManifestRowError(
                f"{where}: field 'transcript': {len(transcripts)} transcript(s) for {len(paths)} audio(s)"
            )
    return InferRequest(messages=messages, audio_paths=paths, transcripts=transcripts)


@dataclass
class ManifestSummary:
    written: int = 0
    skipped_done: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def run_manifest(model, manifest: str | os.PathLike, output: str | os.PathLike,
                 options: GenerationOptions, *, progress: bool = True, default_prompt: str | None = None,
                 default_system: str | None = None, limit: int | None = None,
                 settings: dict[str, Any] | None = None,
                 use_manifest_transcripts: bool = True, batch_size: int = 1) -> ManifestSummary:
    """Answer every row of ``manifest`` into ``output`` (resumable; see the module docstring).
    Rows without ``prompt``/``messages`` (e.g. a plain data manifest) get ``default_prompt`` and
    ``default_system``. ``limit`` answers only the first N rows. The sampling options, default
    prompts and ``settings`` (e.g. the model folder) are recorded in ``<output>.settings.json``;
    resuming with other ones, or writing into the manifest itself, is refused.
    ``use_manifest_transcripts=False`` ignores rows' ``transcript`` fields, so that the model hears
    its own ASR transcript as it would in deployment (a data manifest's gold transcript flatters
    the result); each output row records ``transcripts`` (what entered the audio span) and
    ``transcript_source`` (``manifest`` or ``model``).

    ``batch_size`` > 1 answers the pending rows in groups through
    :func:`speechllm.infer.batched.generate_batched` (``batch_size`` rows decoding at once;
    greedy answers as row by row); each group is written when it is done, in input order.
    A repetition penalty, or an LLM the batched decoder cannot serve, keeps the row-by-row path."""
    from dataclasses import asdict

    from speechllm.utils.fs import refuse_same_file
    from speechllm.utils.jsonl import ResumableJsonlWriter, iter_jsonl

    refuse_same_file(manifest, output)
    manifest = Path(manifest)
    base_dir = manifest.parent
    summary = ManifestSummary()
    t0 = time.perf_counter()
    rows = list(iter_jsonl(manifest))
    if limit is not None:
        rows = rows[:limit]
    seen: set[str] = set()
    for line_no, row in rows:
        rid = row.get("id")
        if rid is None:
            raise ManifestRowError(f"{manifest}:{line_no}: field 'id': missing (every row needs a unique id)")
        if str(rid) in seen:
            raise ManifestRowError(f"{manifest}:{line_no}: duplicate id {rid!r}")
        seen.add(str(rid))
    from speechllm.utils.progress import progress_bar

    bar = progress_bar(len(rows), "infer", "row", enabled=progress)
    record = {"options": asdict(options), "default_prompt": default_prompt, "default_system": default_system,
              "use_manifest_transcripts": use_manifest_transcripts, **(settings or {})}
    batched = batch_size > 1 and _batched_supported(model, options)
    if batched and options.temperature > 0:
        # Batched sampling draws each row from its own seeded generator, the row-by-row path from
        # torch's global one: the two are different samples, so a resume must not mix them.
        record["sampling_rng"] = "per_row"
    with ResumableJsonlWriter(output, settings=record) as writer:
        if batched:
            _run_manifest_batched(model, rows, writer, options, summary, bar, manifest, base_dir, batch_size,
                                  default_prompt, default_system, use_manifest_transcripts)
            rows = []  # answered above
        for line_no, row in rows:
            rid = str(row["id"])
            bar.update(1)
            if rid in writer.done_ids:
                summary.skipped_done += 1
                continue
            where = f"{manifest}:{line_no} (id {rid})"
            try:
                request = _row_request(row, base_dir, where, default_prompt, default_system,
                                       use_manifest_transcripts)
                result = run_request(model, request, options)
            except SpeechLLMError as e:
                kind = getattr(e, "kind", type(e).__name__)
                summary.errors[kind] = summary.errors.get(kind, 0) + 1
                log.warning("%s: %s", where, e)
                writer.write({**row, "error": kind, "error_message": str(e)})
                continue
            writer.write(_answered_row(row, request, result.response, result.transcripts, default_prompt))
            summary.written += 1
    bar.close()
    summary.seconds = time.perf_counter() - t0
    return summary


def _answered_row(row: dict[str, Any], request: InferRequest, response: str, transcripts: list[str],
                  default_prompt: str | None) -> dict[str, Any]:
    """The output row of an answered manifest row."""
    out = dict(row)
    if not {"messages", "prompt", "instruction"} & row.keys() and default_prompt is not None:
        out["prompt"] = default_prompt  # record the defaulted prompt with the reply
    source = "manifest" if request.transcripts is not None else "model"
    return {**out, "response": response, "transcripts": transcripts, "transcript_source": source}


def _batched_supported(model, options: GenerationOptions) -> bool:
    from speechllm.infer.batched import batched_decoding_supported

    if batched_decoding_supported(model, options.repetition_penalty):
        return True
    log.info("infer: answering row by row (a repetition penalty, or an LLM the batched decoder cannot serve)")
    return False


GROUP_BATCHES = 4  # a batched manifest run writes every GROUP_BATCHES x batch_size rows


def _run_manifest_batched(model, rows, writer, options: GenerationOptions, summary: ManifestSummary, bar,
                          manifest: Path, base_dir: Path, batch_size: int, default_prompt: str | None,
                          default_system: str | None, use_manifest_transcripts: bool) -> None:
    """The pending rows of ``rows`` answered group by group (see :func:`run_manifest`)."""
    from speechllm.audio import load_audio
    from speechllm.infer.batched import generate_batched

    def fail(row: dict[str, Any], where: str, e: SpeechLLMError) -> dict[str, Any]:
        kind = getattr(e, "kind", type(e).__name__)
        summary.errors[kind] = summary.errors.get(kind, 0) + 1
        log.warning("%s: %s", where, e)
        return {**row, "error": kind, "error_message": str(e)}

    pending = []
    for line_no, row in rows:
        if str(row["id"]) in writer.done_ids:
            summary.skipped_done += 1
            bar.update(1)
        else:
            pending.append((line_no, row))
    group = batch_size * GROUP_BATCHES
    for start in range(0, len(pending), group):
        chunk = pending[start:start + group]
        out: list[dict[str, Any] | None] = [None] * len(chunk)
        todo: list[tuple[int, InferRequest]] = []
        for k, (line_no, row) in enumerate(chunk):
            where = f"{manifest}:{line_no} (id {row['id']})"
            try:
                request = _row_request(row, base_dir, where, default_prompt, default_system,
                                       use_manifest_transcripts)
                request.waves = [load_audio(p) for p in request.audio_paths]
                todo.append((k, request))
            except SpeechLLMError as e:
                out[k] = fail(row, where, e)
        replies = generate_batched(
            model, [r.messages for _, r in todo], [r.waves or [] for _, r in todo],
            [r.transcripts if r.transcripts is not None else [None] * len(r.waves or []) for _, r in todo],
            max_new_tokens=options.max_new_tokens, temperature=options.temperature, top_p=options.top_p,
            top_k=options.top_k, seed=options.seed, batch_size=batch_size)
        for (k, request), reply in zip(todo, replies, strict=True):
            line_no, row = chunk[k]
            if reply.error is not None:
                out[k] = fail(row, f"{manifest}:{line_no} (id {row['id']})", reply.error)
            else:
                out[k] = _answered_row(row, request, reply.response or "", reply.transcripts, default_prompt)
                summary.written += 1
        for written in out:
            writer.write(written)
        bar.update(len(chunk))


def format_timings(result: InferResult) -> str:
    """One line of timings and rates for stderr."""
    t = result.timings
    rate = (result.new_tokens - 1) / max(t["decode_s"], 1e-9) if result.new_tokens > 1 else 0.0
    rtf = t["total_s"] / result.audio_seconds if result.audio_seconds else float("nan")
    parts = [f"{k}={v:.3f}" for k, v in t.items()]
    return " ".join(parts) + f" new_tokens={result.new_tokens} tokens_per_s={rate:.1f} rtf={rtf:.3f}"


def run_requests(model, requests: Sequence[InferRequest], options: GenerationOptions) -> list[InferResult]:
    """Convenience: :func:`run_request` for each request."""
    return [run_request(model, r, options) for r in requests]
