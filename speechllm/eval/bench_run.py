"""Run one benchmark: check audio, predict in resumable batches, score, aggregate.

Files under ``OUT/<benchmark>/``:

- ``predictions.jsonl``: one row per answered item (id, category, prompt, response, reference,
  choices), appended through
  :class:`~speechllm.utils.jsonl.ResumableJsonlWriter`: a killed run continues where it stopped;
- ``judgments.jsonl``: judge verdicts for open-ended items (resumable too);
- ``scores.jsonl``: one score row per item (rewritten from the two files above on every run);
- ``missing_audio.txt``: items skipped because an audio file does not exist;
- ``skipped.jsonl``: every item not answered, with the reason (missing, unreadable or too long
  audio, a prompt that does not fit the chat layout, ...) and the error.

A failure that concerns one item (:data:`ITEM_ERRORS`) never ends the run: the batch is retried
item by item, the bad item is counted and listed under ``skipped`` in the report, and a rerun
tries it again (it is not written to ``predictions.jsonl``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from speechllm.audio.io import AudioError
from speechllm.eval.items import KIND_OPEN, BenchItem, BenchmarkError
from speechllm.eval.judge import Judge, judge_answers
from speechllm.eval.loaders import Benchmark
from speechllm.eval.predictors import Predictor, make_request
from speechllm.eval.scoring_profiles import aggregate, score_item
from speechllm.models.chat_layout import ChatLayoutError
from speechllm.utils.fs import refuse_same_file
from speechllm.utils.jsonl import ResumableJsonlWriter, iter_jsonl, write_jsonl

log = logging.getLogger(__name__)

#: Errors raised by one item's audio (unreadable, too long for the model, ...) or by its prompt
#: (more audio locators than audios, ...): that item is skipped and counted, the run goes on.
ITEM_ERRORS: tuple[type[Exception], ...] = (AudioError, ChatLayoutError)


def skip_reason(error: Exception) -> str:
    """The report's name for why an item was skipped: ``<kind>_audio`` for an audio error
    (``unreadable_audio``, ``too_long_audio``, ...), ``bad_prompt_layout`` for a layout error."""
    if isinstance(error, AudioError):
        return f"{error.kind}_audio"
    return "bad_prompt_layout"


def split_runnable(items: Sequence[BenchItem], needs_audio: bool) -> tuple[list[BenchItem], dict[str, list]]:
    """Items the predictor can answer, and the skipped ones by reason: ``missing_audio`` (a file
    that does not exist, for a predictor that hears) or ``no_text_stand_in`` (an audio item
    without description/transcript, for a text-only predictor)."""
    runnable: list[BenchItem] = []
    skipped: dict[str, list] = {"missing_audio": [], "no_text_stand_in": []}
    for item in items:
        if needs_audio:
            missing = item.missing_audios()
            if missing:
                skipped["missing_audio"].append({"id": item.id, "paths": missing})
                continue
        elif item.audios and not item.audio_text:
            skipped["no_text_stand_in"].append({"id": item.id})
            continue
        runnable.append(item)
    return runnable, skipped


def predict_resumable(predictor: Predictor, items: Sequence[BenchItem], path: Path, *,
                      batch_size: int = 8, resume: bool = True, progress: bool = True,
                      desc: str = "predict", failed: list[dict[str, str]] | None = None) -> dict[str, str]:
    """Answer every item not yet in ``path``; returns ``{id: response}`` for the answered items.
    Items that fail on their own (:data:`ITEM_ERRORS`) are appended to ``failed`` (id, reason,
    error message) instead of ending the run."""
    from speechllm.utils.progress import progress_bar

    failed = failed if failed is not None else []

    with ResumableJsonlWriter(path, resume=resume) as writer:
        pending = [i for i in items if i.id not in writer.done_ids]
        if writer.done_ids:
            log.info("%s: %d of %d items already answered, resuming", path, len(items) - len(pending), len(items))
        bar = progress_bar(len(pending), desc, "item", enabled=progress)
        for b in range(0, len(pending), batch_size):
            batch = pending[b:b + batch_size]
            for item, req, resp in _predict_batch(predictor, batch, failed):
                # The reference beside the answer, so the file can be read (or re-scored) alone.
                row = {"id": item.id, "category": item.category, "prompt": req.text, "response": resp,
                       "reference": item.reference}
                if item.choices:
                    row["choices"] = list(item.choices)
                if hasattr(predictor, "model_input"):
                    row["model_input"] = predictor.model_input(req)
                writer.write(row)
            bar.update(len(batch))
        bar.close()
    wanted = {i.id for i in items}
    return {str(r["id"]): str(r.get("response", "")) for _, r in iter_jsonl(path) if str(r["id"]) in wanted}


def _predict_batch(predictor: Predictor, batch: Sequence[BenchItem], failed: list[dict[str, str]]):
    """(item, request, response) for a batch; on an item error the batch is retried item by
    item so that only the bad items are dropped (and counted in ``failed``), whatever the batch
    size, a batch of one included."""
    requests = [make_request(i) for i in batch]
    try:
        responses = predictor.predict(requests)
    except ITEM_ERRORS as e:
        if len(batch) == 1:
            log.debug("%s: skipped (%s)", batch[0].id, e)
            failed.append({"id": batch[0].id, "reason": skip_reason(e), "error": str(e)})
            return []
        out = []
        for item in batch:
            out.extend(_predict_batch(predictor, [item], failed))
        return out
    if len(responses) != len(batch):
        raise RuntimeError(f"predictor returned {len(responses)} answers for {len(batch)} requests")
    return list(zip(batch, requests, responses, strict=True))


def judge_open_items(judge: Judge | None, items: Sequence[BenchItem], responses: dict[str, str],
                     path: Path, *, swap: bool = False, batch_size: int = 16,
                     resume: bool = True) -> dict[str, dict[str, Any]]:
    """Judge verdicts for the open items (cached in ``path``); empty without a judge."""
    open_items = [i for i in items if i.kind == KIND_OPEN and i.id in responses]
    if judge is None or not open_items:
        return {}
    with ResumableJsonlWriter(path, resume=resume) as writer:
        pending = [i for i in open_items if i.id not in writer.done_ids]
        for b in range(0, len(pending), batch_size):
            batch = pending[b:b + batch_size]
            verdicts = judge_answers(
                judge,
                [i.instruction or (i.audio_text or "") for i in batch],
                [responses[i.id] for i in batch],
                [i.reference for i in batch],
                [i.audio_text for i in batch],
                swap=swap,
                protocols=[i.metadata.get("judge_protocol") for i in batch],
            )
            for item, v in zip(batch, verdicts, strict=True):
                writer.write({"id": item.id, "score": v.score, "unparsable": v.unparsable, "raw": v.raw})
    return {str(r["id"]): r for _, r in iter_jsonl(path)}


def _check_same_model(out: Path, predictor: Predictor, resume: bool) -> None:
    """Refuse to resume predictions that another model wrote (``model.json`` beside them)."""
    marker = out / "model.json"
    desc = json.loads(json.dumps(predictor.describe(), default=str))
    if resume and marker.is_file() and (out / "predictions.jsonl").is_file():
        previous = json.loads(marker.read_text(encoding="utf-8"))
        if previous != desc:
            raise BenchmarkError(
                f"{out}: predictions.jsonl was written by another model or setting ({previous}); "
                "use a new --out, or --no-resume to start over")
    marker.write_text(json.dumps(desc, indent=2) + "\n", encoding="utf-8")


def _skip_section(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """A skip reason in the report: the count, the first 50 ids, and the first error message."""
    section: dict[str, Any] = {"count": len(entries), "ids": [s["id"] for s in entries[:50]]}
    if entries[0].get("error"):
        section["example_error"] = entries[0]["error"]
    return section


def _write_skipped(path: Path, skipped: dict[str, list]) -> None:
    """Every skipped item of this run, one row each (id, reason, error or paths); no file when
    nothing was skipped (a stale list from an earlier run is removed)."""
    rows = [{"id": s["id"], "reason": reason, **{k: v for k, v in s.items() if k not in ("id", "reason")}}
            for reason, entries in skipped.items() for s in entries]
    if rows:
        write_jsonl(path, rows)
    else:
        path.unlink(missing_ok=True)


def run_benchmark(predictor: Predictor, bench: Benchmark, out_dir: str | Path, *, batch_size: int = 8,
                  judge: Judge | None = None, judge_swap: bool = False, resume: bool = True,
                  limit: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Predict, score and aggregate one benchmark; returns its report section."""
    out = Path(out_dir) / bench.name
    for written in ("predictions.jsonl", "judgments.jsonl", "scores.jsonl", "skipped.jsonl"):
        refuse_same_file(bench.source, out / written)
    out.mkdir(parents=True, exist_ok=True)
    _check_same_model(out, predictor, resume)
    items = bench.items[:limit] if limit else list(bench.items)
    runnable, skipped = split_runnable(items, getattr(predictor, "needs_audio", True))
    if skipped["missing_audio"]:
        lines = [f"{s['id']}\t{' '.join(s['paths'])}" for s in skipped["missing_audio"]]
        (out / "missing_audio.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        log.warning("%s: %d items skipped, audio missing (listed in %s)", bench.name, len(lines), out / "missing_audio.txt")
    if skipped["no_text_stand_in"]:
        log.warning("%s: %d audio items have no description/transcript for a text-only model; skipped",
                    bench.name, len(skipped["no_text_stand_in"]))
    failed: list[dict[str, str]] = []
    start = time.monotonic()
    responses = predict_resumable(predictor, runnable, out / "predictions.jsonl", batch_size=batch_size,
                                  resume=resume, progress=progress, desc=bench.name, failed=failed)
    for fail in failed:
        skipped.setdefault(fail["reason"], []).append(fail)
    if failed:
        log.warning("%s: %d items skipped by their own error (e.g. %s: %s); listed in %s", bench.name,
                    len(failed), failed[0]["id"], failed[0]["error"], out / "skipped.jsonl")
    _write_skipped(out / "skipped.jsonl", skipped)
    runnable = [i for i in runnable if i.id in responses]
    verdicts = judge_open_items(judge, runnable, responses, out / "judgments.jsonl", swap=judge_swap,
                                resume=resume)
    rows = []
    for item in runnable:
        row = score_item(item, responses[item.id], bench.scoring)
        if item.kind == KIND_OPEN and item.id in verdicts:
            row["score"] = verdicts[item.id].get("score")
            row["unparsable"] = verdicts[item.id].get("unparsable", 0)
        rows.append(row)
    write_jsonl(out / "scores.jsonl", rows)
    metrics = aggregate(rows, bench.breakdown_keys)
    has_open = any(i.kind == KIND_OPEN for i in runnable)
    seconds = time.monotonic() - start
    return {
        "name": bench.name,
        "source": bench.source,
        "items": len(items),
        "answered": len(rows),
        "skipped": {k: _skip_section(v) for k, v in skipped.items() if v},
        "seconds": round(seconds, 2),
        "judge": (judge.describe() if judge is not None else None) if has_open else None,
        "judge_swap": judge_swap if has_open and judge is not None else None,
        **metrics,
    }
