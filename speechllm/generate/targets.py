"""Stage 3: the frozen LLM reads each row's seed description and answers an instruction; the
answer is the training target.

Per row: ``messages`` = optional system turn + a user turn holding the audio locator and the
instruction (what training renders), ``prompt`` = the chat-template rendering of the same
messages with the seed description in the locator's place (what the LLM read). The run is
resumable (rows are appended and flushed one by one; ids already in the output are skipped),
shardable (``shard="i/N"``) and batched (length-sorted windows, left padding, KV cache).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from speechllm.config import RunConfig
from speechllm.errors import SpeechLLMError
from speechllm.generate.backend import GenerationBackend, SamplingParams, load_backend, row_seed
from speechllm.generate.progress import GenerationProgress
from speechllm.generate.prompts import (
    generation_context,
    generation_messages,
    instruction_source,
    training_messages,
)
from speechllm.generate.quality import degeneracy
from speechllm.utils.fs import refuse_same_file
from speechllm.utils.jsonl import (
    ResumableJsonlWriter,
    check_same_settings,
    iter_jsonl,
    parse_shard,
    shard_of,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Rows gathered, length-sorted and cut into batches at a time (in batches).
SORT_WINDOW_BATCHES = 32


class InputRowError(SpeechLLMError):
    """A described row that cannot be used (no id, duplicate id, no description with --strict)."""


def sidecar_path(output: str | os.PathLike, kind: str) -> Path:
    """``targets.jsonl`` -> ``targets.<kind>.json[l]`` beside it (dropped, summary, faithfulness)."""
    out = Path(output)
    stem = out.name[:-6] if out.name.endswith(".jsonl") else out.name
    return out.with_name(f"{stem}.{kind}")


@dataclass
class GenerateSummary:
    """What a run did."""

    input_rows: int = 0
    in_shard: int = 0
    already_done: int = 0
    written: int = 0
    dropped: Counter = field(default_factory=Counter)
    no_description: int = 0
    no_description_examples: list[str] = field(default_factory=list)
    truncated: int = 0
    degenerate: Counter = field(default_factory=Counter)
    generated_tokens: int = 0
    wall_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_rows": self.input_rows, "in_shard": self.in_shard, "already_done": self.already_done,
            "written": self.written, "dropped": dict(self.dropped), "no_description": self.no_description,
            "no_description_examples": self.no_description_examples, "truncated": self.truncated,
            "degenerate": dict(self.degenerate), "generated_tokens": self.generated_tokens,
            "wall_seconds": round(self.wall_seconds, 3),
            "tokens_per_second": round(self.generated_tokens / self.wall_seconds, 2) if self.wall_seconds else 0.0,
        }

    def lines(self) -> list[str]:
        d = self.to_dict()
        out = [
            f"rows: {self.input_rows} in input, {self.in_shard} in this shard, {self.already_done} already done, "
            f"{self.written} written now",
            f"generated {self.generated_tokens} tokens in {self.wall_seconds:.1f} s "
            f"({d['tokens_per_second']:.1f} tok/s)",
            f"cut by max_new_tokens (finish_reason=length): {self.truncated}",
            f"empty: {self.degenerate.get('empty', 0)}; looping: {self.degenerate.get('loop', 0)}"
            + (f"; dropped: {sum(self.dropped.values())}" if self.dropped else " (kept; set generation.drop_degenerate=true to drop)"
               if self.degenerate else ""),
        ]
        if self.no_description:
            out.append(f"skipped (no description): {self.no_description} (e.g. {', '.join(self.no_description_examples)}); "
                       "run `speechllm describe` first, or --strict to make this an error")
        return out


def _scan_input(path: Path, shard: tuple[int, int], done: set[str], strict: bool,
                summary: GenerateSummary) -> int:
    """Validate ids and descriptions before the model loads; returns the rows left to generate."""
    seen: set[str] = set()
    pending = 0
    for line_no, row in iter_jsonl(path):
        summary.input_rows += 1
        if "id" not in row or str(row["id"]) == "":
            raise InputRowError(f"{path}:{line_no}: row has no 'id' (every row needs a unique id)")
        rid = str(row["id"])
        if rid in seen:
            raise InputRowError(f"{path}:{line_no}: duplicate id {rid!r}; ids must be unique")
        seen.add(rid)
        if shard_of(rid, shard[1]) != shard[0]:
            continue
        summary.in_shard += 1
        if rid in done:
            summary.already_done += 1
            continue
        description = row.get("description")
        if not isinstance(description, str) or not description.strip():
            if strict:
                raise InputRowError(
                    f"{path}:{line_no}: row {rid!r} has no 'description'; run `speechllm describe` on the "
                    "manifest first (or drop --strict to skip such rows)")
            summary.no_description += 1
            if len(summary.no_description_examples) < 5:
                summary.no_description_examples.append(rid)
            continue
        pending += 1
    return pending


def _pending_rows(path: Path, shard: tuple[int, int], done: set[str]):
    for _, row in iter_jsonl(path):
        rid = str(row["id"])
        if shard_of(rid, shard[1]) != shard[0] or rid in done:
            continue
        description = row.get("description")
        if isinstance(description, str) and description.strip():
            yield row


def _windows(rows, size: int):
    window: list[dict[str, Any]] = []
    for row in rows:
        window.append(row)
        if len(window) >= size:
            yield window
            window = []
    if window:
        yield window


def generate_targets(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    config: RunConfig | None = None,
    *,
    llm: str | None = None,
    shard: str | None = None,
    backend: GenerationBackend | None = None,
    progress: bool = True,
    faithfulness: bool = True,
) -> GenerateSummary:
    """Generate a target for every described row of ``input_path`` into ``output_path``.

    ``config.generation`` holds the prompt settings, ``config.sampling`` the decoding, ``config.model`` the chat layout
    (audio locator and its wrapping) and the default LLM; ``llm`` overrides ``config.model.llm``.
    Pass a loaded ``backend`` to reuse a model across calls. At the end the faithfulness summary
    (labelled attributes vs responses) is written to ``<output>.faithfulness.json`` and the run
    summary to ``<output>.summary.json``.
    """
    cfg = config or RunConfig()
    gen = cfg.generation
    input_path, output_path = Path(input_path), Path(output_path)
    refuse_same_file(input_path, output_path)
    shard_spec = parse_shard(shard)
    instructions = instruction_source(gen.instruction, gen.prompt_pool, gen.seed)  # bad pool: fail before loading
    params = SamplingParams.from_config(cfg.sampling)

    # What the rows' ``generator`` records besides the backend's own description.
    settings = {
        "sampling": params.to_dict(), "seed": gen.seed, **instructions.describe(),
        "system_prompt": gen.system_prompt,
        "context_prompt": generation_context(gen.system_prompt, gen.context_prompt, cfg.model),
    }
    _check_resumable(output_path,
                     {"model": backend.llm_ref if backend is not None else (llm or cfg.model.llm), **settings})
    writer = ResumableJsonlWriter(output_path)
    dropped_writer = ResumableJsonlWriter(sidecar_path(output_path, "dropped.jsonl")) if gen.drop_degenerate else None
    summary = GenerateSummary()
    try:
        done = set(writer.done_ids) | (dropped_writer.done_ids if dropped_writer else set())
        pending = _scan_input(input_path, shard_spec, done, gen.strict, summary)
        if pending and backend is None:
            backend = load_backend(
                gen.backend, llm or cfg.model.llm, dtype=gen.dtype, device=gen.device,
                chat_template=gen.chat_template or cfg.model.chat_template,
                revision=cfg.model.llm_revision if llm is None else None,
                trust_remote_code=cfg.model.trust_remote_code)
        if pending:
            assert backend is not None
            generator_info = {
                **backend.describe(),
                **settings,
                "audio_layout": {"locator": cfg.model.audio_locator, "start": cfg.model.audio_start,
                                 "end": cfg.model.audio_end},
            }
            bar = GenerationProgress(pending, f"generate {output_path.name}", enabled=progress)
            try:
                _run(backend, _pending_rows(input_path, shard_spec, done), cfg, instructions, params,
                     generator_info, writer, dropped_writer, summary, bar)
            finally:
                summary.wall_seconds = bar.seconds
                bar.close()
    finally:
        writer.close()
        if dropped_writer:
            dropped_writer.close()

    from speechllm.utils.fs import atomic_write_text

    atomic_write_text(sidecar_path(output_path, "summary.json"), json.dumps(summary.to_dict(), indent=2) + "\n")
    if faithfulness:
        from speechllm.generate.faithfulness import faithfulness_summary, write_faithfulness

        write_faithfulness(sidecar_path(output_path, "faithfulness.json"),
                           faithfulness_summary(row for _, row in iter_jsonl(output_path)))
    return summary


def _check_resumable(output_path: Path, settings: dict[str, Any]) -> None:
    """Refuse to continue an output whose rows were generated with other settings (model,
    sampling, seed, instructions, system or context prompt): a resumed run would mix targets
    of two configurations in one file, and a finished one would silently keep the old ones."""
    if not output_path.is_file():
        return
    with open(output_path, encoding="utf-8") as f:
        first = f.readline()
    try:
        stored = json.loads(first).get("generator") or {}
    except (json.JSONDecodeError, AttributeError):
        return  # a torn or foreign first line: the writer reports it
    check_same_settings(output_path, stored, settings)


def in_input_order(finished: Iterable[tuple[int, T]]) -> Iterator[tuple[int, T]]:
    """Re-order ``(position, value)`` pairs that arrive in any order into positions 0, 1, 2, ...

    Each value is yielded as soon as all earlier positions have been; positions must be a
    permutation of ``range(n)``.
    """
    waiting: dict[int, T] = {}
    next_position = 0
    for position, value in finished:
        waiting[position] = value
        while next_position in waiting:
            yield next_position, waiting.pop(next_position)
            next_position += 1
    if waiting:
        raise RuntimeError(f"positions {sorted(waiting)[:5]} arrived without position {next_position}")


def _run(backend, rows, cfg: RunConfig, instructions, params: SamplingParams, generator_info,
         writer, dropped_writer, summary: GenerateSummary, bar: GenerationProgress) -> None:
    gen = cfg.generation
    context = generation_context(gen.system_prompt, gen.context_prompt, cfg.model)
    window_size = gen.batch_size * SORT_WINDOW_BATCHES
    for window in _windows(rows, window_size):
        items = []
        for row in window:
            rid = str(row["id"])
            instruction = instructions.instruction_for(rid)
            messages = training_messages(instruction, cfg.model, gen.system_prompt)
            seen = messages if context is None else training_messages(instruction, cfg.model, context)
            prompt = backend.render(generation_messages(seen, row["description"], cfg.model))
            items.append((backend.count_tokens(prompt), row, messages, prompt))
        # Longest first: similar lengths decode together (little padding), and a prompt too long
        # for the memory fails at once rather than hours in. The backend keeps batch_size rows
        # decoding, refilling the batch as rows finish.
        decode_order = sorted(range(len(items)), key=lambda i: -items[i][0])
        seeds = [row_seed(gen.seed, str(items[i][1]["id"])) for i in decode_order]
        stream = backend.generate_stream([items[i][3] for i in decode_order], params, seeds=seeds,
                                         batch_size=gen.batch_size)
        finished = ((decode_order[index], completion) for index, completion in stream)
        # Rows are written in input order (the contract users join on): each finished row waits
        # until every earlier row of its window is written, so a kill loses at most one window.
        for position, completion in in_input_order(finished):
            _, row, messages, prompt = items[position]
            flag = degeneracy(completion.text)
            out = {**row, "prompt": prompt, "messages": messages, "response": completion.text,
                   "finish_reason": completion.finish_reason, "degenerate": flag,
                   "generator": generator_info}
            if completion.finish_reason == "length":
                summary.truncated += 1
            if flag:
                summary.degenerate[flag] += 1
            if flag and dropped_writer is not None:
                dropped_writer.write(out)
                summary.dropped[flag] += 1
            else:
                writer.write(out)
                summary.written += 1
            summary.generated_tokens += len(completion.token_ids)
            bar.update(1, len(completion.token_ids))
