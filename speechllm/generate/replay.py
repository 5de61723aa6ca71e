"""Stage 4: text-only replay rows in the LLM's own words (no audio), to mix into training.

Kinds:

- ``pseudo`` (Magpie): the LLM sees only its chat template up to the start of a user turn (the
  *pre-query template*), samples an instruction at temperature 1, then answers it (greedy by
  default). Empty, unfinished or duplicate instructions are rejected.
- ``self-output``: the LLM answers given instructions, ``K`` samples each; the first sample an
  optional verifier accepts is kept (exact / contains / regex / a named Python function).
- ``paraphrase``: the LLM rewrites given gold answers in its own words.
- ``minimum-change``: the LLM answers, then an editor (a stronger local model or an
  OpenAI-compatible endpoint) changes only what is wrong; the edit is kept.

Every row: ``id``, ``kind``, ``messages`` (the conversation without the answer), ``response``,
``prompt`` (the text the LLM read), ``finish_reason``, ``generator``. Rejected attempts go to
``OUT.rejected.jsonl`` with their reason, so a restart neither repeats nor loses them.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechllm.config import RunConfig
from speechllm.errors import SpeechLLMError
from speechllm.generate.backend import GenerationBackend, SamplingParams, load_backend, row_seed
from speechllm.generate.editor import Editor, load_editor
from speechllm.generate.progress import GenerationProgress
from speechllm.generate.prompts import text_messages
from speechllm.generate.targets import sidecar_path
from speechllm.utils.jsonl import ResumableJsonlWriter, iter_jsonl, parse_shard, shard_of

log = logging.getLogger(__name__)

REPLAY_KINDS = ("pseudo", "self-output", "paraphrase", "minimum-change")
#: Replaced by the user turn's content when the pre-query template is derived.
SENTINEL = "\u2063SPEECHLLM_USER_QUERY\u2063"

PARAPHRASE_PROMPT = (
    "Rewrite the answer below in your own words. Keep its meaning and every fact; add nothing. "
    "Reply with the rewritten answer only.\n\nQuestion: {instruction}\n\nAnswer: {answer}"
)
EDIT_PROMPT = (
    "Below are a question and an answer. Change only what is wrong in the answer and keep "
    "everything else word for word; if nothing is wrong, repeat the answer unchanged. Reply with "
    "the corrected answer only.\n\nQuestion: {instruction}\n\n{reference}Answer: {answer}"
)


class ReplayError(SpeechLLMError):
    """Replay cannot run as asked (unknown kind, missing instructions or answers, bad verifier)."""


@dataclass
class ReplaySummary:
    kind: str
    written: int = 0
    already_done: int = 0
    rejected: Counter = field(default_factory=Counter)
    generated_tokens: int = 0
    wall_seconds: float = 0.0

    def lines(self) -> list[str]:
        rate = self.generated_tokens / self.wall_seconds if self.wall_seconds else 0.0
        out = [f"{self.kind}: {self.written} rows written now, {self.already_done} already done",
               f"generated {self.generated_tokens} tokens in {self.wall_seconds:.1f} s ({rate:.1f} tok/s)"]
        if self.rejected:
            out.append("rejected: " + ", ".join(f"{k}={v}" for k, v in sorted(self.rejected.items())))
        return out


# ---------------------------------------------------------------------------------------------
# Inputs and verifiers
# ---------------------------------------------------------------------------------------------

_INSTRUCTION_KEYS = ("instruction", "prompt", "question")
_ANSWER_KEYS = ("answer", "reference", "output")


def read_instructions(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Instruction items from a ``.jsonl`` file (``instruction``/``prompt``/``question``, optional
    ``answer``/``reference``/``output`` and ``id``) or a text file (one instruction a line).
    Items get ``id`` (``<file stem>-<line>`` when absent), ``instruction`` and ``answer``."""
    p = Path(path)
    if not p.is_file():
        raise ReplayError(f"instructions {p}: no such file")
    items: list[dict[str, Any]] = []
    if p.suffix == ".jsonl":
        for line_no, row in iter_jsonl(p):
            text = next((row[k] for k in _INSTRUCTION_KEYS if isinstance(row.get(k), str)), None)
            if not text or not text.strip():
                raise ReplayError(f"{p}:{line_no}: no instruction (give one of: {', '.join(_INSTRUCTION_KEYS)})")
            answer = next((row[k] for k in _ANSWER_KEYS if isinstance(row.get(k), str)), None)
            items.append({**row, "id": str(row.get("id", f"{p.stem}-{line_no:06d}")),
                          "instruction": text.strip(), "answer": answer, "_where": f"{p}:{line_no}"})
    else:
        for line_no, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip() and not line.lstrip().startswith("#"):
                items.append({"id": f"{p.stem}-{line_no:06d}", "instruction": line.strip(), "answer": None,
                              "_where": f"{p}:{line_no}"})
    ids = Counter(item["id"] for item in items)
    dup = [k for k, v in ids.items() if v > 1]
    if dup:
        raise ReplayError(f"instructions {p}: duplicate ids {', '.join(dup[:5])}")
    if not items:
        raise ReplayError(f"instructions {p}: no instruction found")
    return items


def normalise_answer(text: str) -> str:
    """Lower case, punctuation dropped, whitespace collapsed (for exact / contains checks)."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


Verifier = Callable[[str, str, dict[str, Any]], bool]


def load_verifier(spec: str | None) -> Verifier | None:
    """``exact`` | ``contains`` (against the item's answer) | ``regex:PATTERN`` | ``module:function``.

    A ``module:function`` is imported and called as ``function(instruction, response, item)``
    and must return a bool: naming a module is the user's explicit choice to run its code. No
    string from a data file is ever evaluated.
    """
    if not spec:
        return None
    if spec == "exact":
        return lambda _i, response, item: normalise_answer(response) == normalise_answer(_answer_of(item))
    if spec == "contains":
        def contains(_i: str, response: str, item: dict[str, Any]) -> bool:
            answer = normalise_answer(_answer_of(item))
            return bool(answer) and f" {answer} " in f" {normalise_answer(response)} "
        return contains
    if spec.startswith("regex:"):
        try:
            pattern = re.compile(spec[len("regex:"):])
        except re.error as e:
            raise ReplayError(f"verifier {spec!r}: bad regular expression ({e})") from None
        return lambda _i, response, _item: pattern.search(response) is not None
    if re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", spec):
        module_name, func_name = spec.split(":")
        try:
            func = getattr(importlib.import_module(module_name), func_name)
        except (ImportError, AttributeError) as e:
            raise ReplayError(f"verifier {spec!r}: cannot import ({e})") from None
        if not callable(func):
            raise ReplayError(f"verifier {spec!r}: {func_name} is not callable")
        return lambda instruction, response, item: bool(func(instruction, response, item))
    raise ReplayError(f"verifier {spec!r}: expected exact, contains, regex:PATTERN or module:function")


def _answer_of(item: dict[str, Any], who: str = "this verifier") -> str:
    answer = item.get("answer")
    if not isinstance(answer, str):
        raise ReplayError(f"{item.get('_where', item['id'])}: {who} needs an 'answer' for every instruction "
                          f"(a .jsonl file with 'instruction' and 'answer' fields)")
    return answer


# ---------------------------------------------------------------------------------------------
# Pre-query template (Magpie)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreQueryTemplate:
    """The chat template's text up to where a user message starts, and what closes the turn."""

    prefix: str
    turn_end: str  # text the template puts right after a user message (e.g. "<|im_end|>\n")
    stop_token_ids: tuple[int, ...]


def pre_query_template(backend: GenerationBackend, system_prompt: str | None = None) -> PreQueryTemplate:
    """Render a conversation whose user message is a sentinel and cut at the sentinel.

    This works for any chat template (default system turns, BOS tokens and headers are whatever
    the template writes), rather than assuming a format. The first token of what follows the
    sentinel (``<|im_end|>``, ``<|eot_id|>``, ...) stops the sampled instruction.
    """
    messages = text_messages(SENTINEL, system_prompt)
    text = backend.render(messages, add_generation_prompt=False)
    at = text.find(SENTINEL)
    if at < 0 or text.count(SENTINEL) != 1:
        raise ReplayError("cannot derive the pre-query template: the chat template does not copy the user "
                          "message verbatim (give a plain template with --chat-template)")
    prefix, turn_end = text[:at], text[at + len(SENTINEL):]
    stops: list[int] = []
    tokenizer = getattr(backend, "tokenizer", None)
    if tokenizer is not None and turn_end.strip():
        ids = tokenizer(turn_end.strip(), add_special_tokens=False)["input_ids"]
        if ids and ids[0] in set(getattr(tokenizer, "all_special_ids", []) or []):
            stops.append(int(ids[0]))
    return PreQueryTemplate(prefix=prefix, turn_end=turn_end, stop_token_ids=tuple(stops))


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def generate_replay(
    output_path: str | os.PathLike,
    kind: str,
    config: RunConfig | None = None,
    *,
    llm: str | None = None,
    instructions: str | os.PathLike | Sequence[dict[str, Any]] | None = None,
    num: int | None = None,
    shard: str | None = None,
    backend: GenerationBackend | None = None,
    editor: Editor | None = None,
    progress: bool = True,
) -> ReplaySummary:
    """Write text-only replay rows of ``kind`` to ``output_path`` (resumable, shardable).

    ``pseudo`` needs ``num`` (rows to produce; ids ``pseudo-000000`` ... are split across shards);
    the other kinds need ``instructions`` (a file or items). ``minimum-change`` needs an editor:
    ``editor`` or ``config.replay.editor`` / ``editor_url``.
    """
    if kind not in REPLAY_KINDS:
        raise ReplayError(f"unknown replay kind {kind!r}; known: {', '.join(REPLAY_KINDS)}")
    cfg = config or RunConfig()
    gen, replay = cfg.generation, cfg.replay
    shard_spec = parse_shard(shard)
    params = SamplingParams.from_config(cfg.sampling)
    items: list[dict[str, Any]] = []
    if kind == "pseudo":
        if not num or num < 1:
            raise ReplayError("pseudo replay needs the number of rows to make (--num N)")
    else:
        if instructions is None:
            raise ReplayError(f"{kind} replay needs instructions (--instructions FILE: .jsonl or one a line)")
        if isinstance(instructions, (str, os.PathLike)):
            from speechllm.utils.fs import refuse_same_file

            refuse_same_file(instructions, output_path)
        items = read_instructions(instructions) if isinstance(instructions, (str, os.PathLike)) else [
            {"answer": None, **dict(it), "id": str(it["id"])} for it in instructions]
        if kind == "paraphrase":
            for it in items:
                _answer_of(it, "paraphrase replay")
    verifier = load_verifier(replay.verifier) if kind == "self-output" else None
    if kind == "self-output" and replay.samples > 1 and params.greedy:
        raise ReplayError("self-output with samples > 1 needs sampling: set --temperature > 0 "
                          "(greedy samples would all be the same)")
    if kind == "minimum-change" and editor is None:
        editor = load_editor(replay, max_new_tokens=cfg.sampling.max_new_tokens, batch_size=gen.batch_size,
                             dtype=gen.dtype, device=gen.device)

    writer = ResumableJsonlWriter(output_path)
    rejected_writer = ResumableJsonlWriter(sidecar_path(output_path, "rejected.jsonl"))
    summary = ReplaySummary(kind=kind)
    try:
        done = writer.done_ids | rejected_writer.done_ids
        if kind == "pseudo":
            ids = [f"pseudo-{i:06d}" for i in range(num or 0)]
            todo: list[dict[str, Any]] = [{"id": i} for i in ids if shard_of(i, shard_spec[1]) == shard_spec[0]]
        else:
            todo = [it for it in items if shard_of(it["id"], shard_spec[1]) == shard_spec[0]]
        summary.already_done = sum(1 for it in todo if it["id"] in done)
        todo = [it for it in todo if it["id"] not in done]
        if todo and backend is None:
            backend = load_backend(gen.backend, llm or cfg.model.llm, dtype=gen.dtype, device=gen.device,
                                   chat_template=gen.chat_template or cfg.model.chat_template,
                                   revision=cfg.model.llm_revision if llm is None else None,
                                   trust_remote_code=cfg.model.trust_remote_code)
        if todo:
            assert backend is not None
            info = {**backend.describe(), "sampling": params.to_dict(), "seed": gen.seed,
                    "system_prompt": gen.system_prompt}
            if kind == "self-output":
                info.update(samples=replay.samples, verifier=replay.verifier)
            if editor is not None:
                info["editor"] = editor.describe()
            seen_instructions = set()
            if kind == "pseudo":
                seen_instructions = {normalise_answer(_user_text(r)) for _, r in iter_jsonl(output_path)}
            bar = GenerationProgress(len(todo), f"replay {kind}", enabled=progress)
            try:
                for start in range(0, len(todo), gen.batch_size):
                    batch = todo[start:start + gen.batch_size]
                    rows, rejects, tokens = _run_batch(kind, batch, backend, editor, cfg, params, verifier,
                                                       seen_instructions)
                    for row in rows:
                        writer.write({**row, "kind": kind, "generator": info})
                        summary.written += 1
                    for item, reason in rejects:
                        rejected_writer.write({**_public(item), "kind": kind, "reason": reason})
                        summary.rejected[reason] += 1
                    summary.generated_tokens += tokens
                    bar.update(len(batch), tokens)
            finally:
                summary.wall_seconds = bar.seconds
                bar.close()
    finally:
        writer.close()
        rejected_writer.close()
    return summary


def _public(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if not k.startswith("_")}


def _user_text(row: dict[str, Any]) -> str:
    users = [m.get("content", "") for m in row.get("messages", []) if m.get("role") == "user"]
    return users[-1] if users else ""


def _run_batch(kind, batch, backend, editor, cfg: RunConfig, params: SamplingParams, verifier,
               seen_instructions: set[str]):
    """Rows written and ``(item, reason)`` rejects for one batch, and the tokens generated."""
    gen = cfg.generation
    rows: list[dict[str, Any]] = []
    rejects: list[tuple[dict[str, Any], str]] = []
    tokens = 0
    system = gen.system_prompt

    if kind == "pseudo":
        template = pre_query_template(backend, system)
        sampling = SamplingParams(max_new_tokens=cfg.replay.instruction_max_new_tokens, temperature=1.0)
        drawn = backend.generate([template.prefix] * len(batch), sampling,
                                 seeds=[row_seed(gen.seed, it["id"]) for it in batch],
                                 stop_token_ids=list(template.stop_token_ids))
        tokens += sum(len(c.token_ids) for c in drawn)
        accepted = []
        for item, c in zip(batch, drawn, strict=True):
            text = c.text
            end = template.turn_end.strip()
            if end and end in text:  # templates whose turn end is plain text, not one token
                text = text[:text.index(end)]
            text = text.strip()
            key = normalise_answer(text)
            if not key:
                rejects.append((item, "empty instruction"))
            elif c.finish_reason == "length":
                rejects.append((item, "unfinished instruction"))
            elif key in seen_instructions:
                rejects.append((item, "duplicate instruction"))
            else:
                seen_instructions.add(key)
                accepted.append({**item, "instruction": text})
        batch = accepted
        if not batch:
            return rows, rejects, tokens

    messages = [text_messages(it["instruction"], system) for it in batch]
    if kind == "paraphrase":
        asks = [text_messages(PARAPHRASE_PROMPT.format(instruction=it["instruction"], answer=it["answer"]), system)
                for it in batch]
    else:
        asks = messages
    prompts = [backend.render(m) for m in asks]

    if kind == "self-output":
        k = cfg.replay.samples
        flat_prompts = [p for p in prompts for _ in range(k)]
        seeds = [row_seed(gen.seed, f"{it['id']}#{j}") for it in batch for j in range(k)]
        outs = backend.generate(flat_prompts, params, seeds=seeds)
        tokens += sum(len(c.token_ids) for c in outs)
        for i, (item, msgs, prompt) in enumerate(zip(batch, messages, prompts, strict=True)):
            samples = outs[i * k:(i + 1) * k]
            chosen = None
            for j, c in enumerate(samples):
                if c.text.strip() and (verifier is None or verifier(item["instruction"], c.text, item)):
                    chosen = (j, c)
                    break
            if chosen is None:
                rejects.append((item, "no sample accepted" if verifier else "empty response"))
                continue
            j, c = chosen
            rows.append({**_public(item), "messages": msgs, "prompt": prompt, "response": c.text,
                         "finish_reason": c.finish_reason, "accepted_sample": j})
        return rows, rejects, tokens

    seeds = [row_seed(gen.seed, it["id"]) for it in batch]
    outs = backend.generate(prompts, params, seeds=seeds)
    tokens += sum(len(c.token_ids) for c in outs)
    if kind == "minimum-change":
        edit_prompts = [
            EDIT_PROMPT.format(instruction=it["instruction"], answer=c.text,
                               reference=f"Reference answer: {it['answer']}\n\n" if it.get("answer") else "")
            for it, c in zip(batch, outs, strict=True)
        ]
        edits = editor.edit(edit_prompts)
        for item, msgs, prompt, base, edited in zip(batch, messages, prompts, outs, edits, strict=True):
            if not edited.strip():
                rejects.append((item, "empty edit"))
                continue
            rows.append({**_public(item), "messages": msgs, "prompt": prompt, "response": edited.strip(),
                         "base_response": base.text, "finish_reason": base.finish_reason})
        return rows, rejects, tokens

    for item, msgs, prompt, c in zip(batch, messages, prompts, outs, strict=True):
        if not c.text.strip():
            rejects.append((item, "empty response"))
            continue
        row = {**_public(item), "messages": msgs, "prompt": prompt, "response": c.text,
               "finish_reason": c.finish_reason}
        if kind == "paraphrase":
            row["gold_answer"] = item["answer"]
        rows.append(row)
    return rows, rejects, tokens
