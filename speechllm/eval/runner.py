"""Run one benchmark: check audio, predict in resumable batches, score, aggregate.

Files under ``OUT/<benchmark>/``:

- ``predictions.jsonl``: one row per answered item (id, prompt, response), appended through
  :class:`~speechllm.utils.jsonl.ResumableJsonlWriter`: a killed run continues where it stopped;
- ``judgments.jsonl``: judge verdicts for open-ended items (resumable too);
- ``scores.jsonl``: one score row per item (rewritten from the two files above on every run);
- ``missing_audio.txt``: items skipped because an audio file does not exist.
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
from speechllm.eval.scoring import aggregate, score_item
from speechllm.utils.jsonl import ResumableJsonlWriter, iter_jsonl, write_jsonl

log = logging.getLogger(__name__)


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
    Items whose audio cannot be decoded are appended to ``failed`` (id, kind, message)."""
    from tqdm.auto import tqdm

    failed = failed if failed is not None else []

    with ResumableJsonlWriter(path, resume=resume) as writer:
        pending = [i for i in items if i.id not in writer.done_ids]
        if writer.done_ids:
            log.info("%s: %d of %d items already answered, resuming", path, len(items) - len(pending), len(items))
        start = time.monotonic()
        bar = tqdm(total=len(pending), desc=desc, unit="item", disable=not progress)
        for b in range(0, len(pending), batch_size):
            batch = pending[b:b + batch_size]
            for item, req, resp in _predict_batch(predictor, batch, failed):
                row = {"id": item.id, "prompt": req.text, "response": resp}
                if hasattr(predictor, "model_input"):
                    row["model_input"] = predictor.model_input(req)
                writer.write(row)
            bar.update(len(batch))
            elapsed = time.monotonic() - start
            bar.set_postfix(items_per_s=f"{bar.n / elapsed:.2f}" if elapsed > 0 else "-")
        bar.close()
    wanted = {i.id for i in items}
    return {str(r["id"]): str(r.get("response", "")) for _, r in iter_jsonl(path) if str(r["id"]) in wanted}


def _predict_batch(predictor: Predictor, batch: Sequence[BenchItem], failed: list[dict[str, str]]):
    """(item, request, response) for a batch; on an audio error the batch is retried item by
    item so that only the bad items are dropped (and counted)."""
    requests = [make_request(i) for i in batch]
    try:
        responses = predictor.predict(requests)
    except AudioError:
        if len(batch) == 1:
            raise
        out = []
        for item in batch:
            try:
                out.extend(_predict_batch(predictor, [item], failed))
            except AudioError as e:
                failed.append({"id": item.id, "kind": e.kind, "error": str(e)})
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


def run_benchmark(predictor: Predictor, bench: Benchmark, out_dir: str | Path, *, batch_size: int = 8,
                  judge: Judge | None = None, judge_swap: bool = False, resume: bool = True,
                  limit: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Predict, score and aggregate one benchmark; returns its report section."""
    out = Path(out_dir) / bench.name
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
    if failed:
        skipped["unreadable_audio"] = failed
        log.warning("%s: %d items skipped, audio unreadable (e.g. %s)", bench.name, len(failed), failed[0]["error"])
    runnable = [i for i in runnable if i.id in responses]
    verdicts = judge_open_items(judge, runnable, responses, out / "judgments.jsonl", swap=judge_swap,
                                resume=resume)
    rows = []
    for item in runnable:
        row = score_item(item, responses[item.id])
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
        "skipped": {k: {"count": len(v), "ids": [s["id"] for s in v[:50]]} for k, v in skipped.items() if v},
        "seconds": round(seconds, 2),
        "judge": (judge.describe() if judge is not None else None) if has_open else None,
        "judge_swap": judge_swap if has_open and judge is not None else None,
        **metrics,
    }
