"""The ``describe`` stage: annotate every row of a manifest and render its seed description.

Per row the audio is decoded once and shared by every annotator (:class:`AudioClip`); models are
loaded once per process. Rows go through a pool of ``jobs`` worker processes in input order; the
parent writes each finished row through :class:`ResumableJsonlWriter`, so a killed run restarts
where it stopped and every id ends up in the output exactly once (a resume with another config,
or a second process writing the same output, is refused). Rows whose audio cannot be used
are written to ``OUT.skipped.jsonl`` with the error kind (never dropped silently) and count as done
on resume: delete that file to retry them.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechllm.audio import AudioError, load_audio
from speechllm.config.describe import DescribeConfig
from speechllm.data.manifest import Utterance, iter_manifest
from speechllm.describe.annotators.base import Annotator, AudioClip, build_annotators
from speechllm.describe.renderer import get_template, render_description
from speechllm.errors import SpeechLLMError
from speechllm.utils.jsonl import ResumableJsonlWriter, shard_of

log = logging.getLogger(__name__)


@dataclass
class DescribeSummary:
    """What a run did: rows written, skipped (by error kind), annotator failures, speed."""

    total: int = 0
    already_done: int = 0
    written: int = 0
    skipped: Counter = field(default_factory=Counter)
    annotator_errors: Counter = field(default_factory=Counter)
    #: ASR windows left out of transcripts because their text was degenerate, by reason.
    asr_windows_dropped: Counter = field(default_factory=Counter)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def times_real_time(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def lines(self) -> list[str]:
        """Human-readable summary."""
        out = [
            f"rows in shard: {self.total}; already done: {self.already_done}; "
            f"written now: {self.written}; skipped now: {sum(self.skipped.values())}",
            f"audio: {self.audio_seconds:.1f} s in {self.wall_seconds:.1f} s "
            f"({self.times_real_time:.1f}x real time)",
        ]
        if self.skipped:
            out.append("skipped (audio error kind): "
                       + ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())))
        if self.annotator_errors:
            out.append("annotator failures (row kept without that attribute): "
                       + ", ".join(f"{k}={v}" for k, v in sorted(self.annotator_errors.items())))
        if self.asr_windows_dropped:
            out.append("ASR windows left out of transcripts, degenerate text (each row's transcript_dropped "
                       "lists them): " + ", ".join(f"{k}={v}" for k, v in sorted(self.asr_windows_dropped.items())))
        return out


class UtteranceDescriber:
    """Annotators built and loaded once; :meth:`describe` fills one row."""

    def __init__(self, config: DescribeConfig):
        self.config = config
        self.template = get_template(config.template).id
        self.annotators: list[Annotator] = build_annotators(list(config.annotators), config)
        for annotator in self.annotators:
            annotator.load()

    def describe(self, utt: Utterance) -> tuple[Utterance, float, list[str]]:
        """Annotate ``utt`` in place and render its description.

        Returns (utt, audio seconds, names of annotators that failed). An unusable audio file
        raises :class:`AudioError`.
        """
        path = utt.audio_path
        if path is None:
            from speechllm.audio import MissingAudioError

            raise MissingAudioError(f"<row {utt.id}>", "row has no audio path")
        wave = load_audio(path, offset=utt.offset, duration=utt.duration)
        clip = AudioClip(wave=wave, sample_rate=16_000)
        failed = []
        for annotator in self.annotators:
            if annotator.requires_speech and utt.attributes.get("contains_speech") is False:
                continue
            try:
                annotator.annotate(utt, clip)
            except SpeechLLMError:
                raise  # bad audio (counted by the caller) or a setup the user must fix
            except Exception as e:  # one annotator's failure must not lose the row
                log.debug("%s: annotator %s failed: %s", utt.id, annotator.name, e)
                failed.append(annotator.name)
        utt.extra["description"] = render_description(
            utt, self.template, self.config.description_attributes or None
        )
        utt.extra["description_template"] = self.template
        return utt, clip.seconds, failed


# --- worker processes -------------------------------------------------------------------------
_WORKER: UtteranceDescriber | None = None


def _init_worker(config: DescribeConfig, num_threads: int) -> None:
    """Per-process setup: thread count first (torch reads it at import), then the models."""
    import sys

    global _WORKER
    os.environ["OMP_NUM_THREADS"] = str(num_threads)
    _WORKER = UtteranceDescriber(config)
    if "torch" in sys.modules:  # only model-backed annotators import torch
        sys.modules["torch"].set_num_threads(num_threads)


def _describe_row(item: tuple[dict[str, Any], str]) -> dict[str, Any]:
    row, base_dir = item
    assert _WORKER is not None
    return _describe_with(_WORKER, row, base_dir)


def _describe_with(describer: UtteranceDescriber, row: dict[str, Any], base_dir: str) -> dict[str, Any]:
    utt = Utterance.from_dict(row, base_dir=Path(base_dir), where=f"row {row.get('id')}")
    try:
        utt, seconds, failed = describer.describe(utt)
    except AudioError as e:
        return {"id": utt.id, "skipped": e.kind, "error": str(e)}
    return {"id": utt.id, "utt": utt, "seconds": seconds, "failed": failed}


def _pending_rows(in_path: Path, done: set[str], shard: tuple[int, int],
                  summary: DescribeSummary) -> Iterator[tuple[dict[str, Any], str]]:
    index, count = shard
    base = str(in_path.resolve().parent)
    for utt in iter_manifest(in_path):
        if count > 1 and shard_of(utt.id, count) != index:
            continue
        summary.total += 1
        if utt.id in done:
            summary.already_done += 1
            continue
        yield utt.to_dict(), base


def _count_pending(in_path: Path, done: set[str], shard: tuple[int, int]) -> int:
    """Rows left to do (a fast pass over ids only, for the progress bar's total)."""
    from speechllm.utils.jsonl import iter_jsonl

    index, count = shard
    n = 0
    for _, row in iter_jsonl(in_path):
        rid = str(row.get("id"))
        if (count == 1 or shard_of(rid, count) == index) and rid not in done:
            n += 1
    return n


def settings_record_path(out_path: str | os.PathLike) -> Path:
    """``OUT.jsonl`` -> ``OUT.describe.yaml``: the resolved config the rows were described with."""
    out_path = Path(out_path)
    return out_path.with_name(f"{out_path.stem}.describe.yaml")


def describe_manifest(
    in_path: str | os.PathLike,
    out_path: str | os.PathLike,
    config: DescribeConfig | None = None,
    *,
    jobs: int = 1,
    shard: tuple[int, int] = (0, 1),
    resume: bool = True,
    progress: bool = True,
    threads_per_job: int = 1,
) -> DescribeSummary:
    """Describe the rows of ``in_path`` (those of shard ``i/N``) into ``out_path``.

    Audio paths in the output are relative to its folder when the audio lies under it, absolute
    otherwise. The resolved config is written to ``OUT.describe.yaml``; resuming an output
    described with another config raises :class:`~speechllm.utils.jsonl.SettingsChangedError`,
    and an output that is the input raises :class:`~speechllm.utils.fs.SameFileError`. Returns a
    :class:`DescribeSummary`.
    """
    from speechllm.config import to_dict
    from speechllm.utils.fs import refuse_same_file
    from speechllm.utils.progress import progress_bar

    config = config or DescribeConfig()
    in_path, out_path = Path(in_path), Path(out_path)
    refuse_same_file(in_path, out_path)
    out_base = out_path.resolve().parent
    skipped_path = out_path.with_name(out_path.name + ".skipped.jsonl")
    get_template(config.template)  # fail before any work on a bad template id
    build_annotators(list(config.annotators), config)  # ... or an unknown annotator

    summary = DescribeSummary()
    start = time.perf_counter()
    # The resolved config is the settings record: written beside the output, and a resume with
    # another config (annotators, thresholds, template, ASR model) is refused before any work.
    with ResumableJsonlWriter(out_path, resume=resume, settings=to_dict(config),
                              settings_path=settings_record_path(out_path)) as writer, \
            ResumableJsonlWriter(skipped_path, resume=resume) as skipped_writer:
        if writer.torn_bytes:
            log.warning("%s: removed a torn last line (%d bytes) left by an interrupted run",
                        out_path, writer.torn_bytes)
        done = writer.done_ids | skipped_writer.done_ids
        pending = _count_pending(in_path, done, shard) if progress else None
        rows = _pending_rows(in_path, done, shard, summary)
        bar = progress_bar(pending, "describe", "utt", enabled=progress)

        def handle(result: dict[str, Any]) -> None:
            if "skipped" in result:
                summary.skipped[result["skipped"]] += 1
                skipped_writer.write({"id": result["id"], "kind": result["skipped"],
                                      "error": result["error"]})
            else:
                writer.write(result["utt"].to_dict(out_base))
                summary.written += 1
                summary.audio_seconds += result["seconds"]
                for name in result["failed"]:
                    summary.annotator_errors[name] += 1
                for window in result["utt"].extra.get("transcript_dropped") or []:
                    summary.asr_windows_dropped[str(window.get("reason"))] += 1
            elapsed = time.perf_counter() - start
            bar.update()
            if summary.audio_seconds and elapsed > 0:
                bar.set_postfix_str(f"xRT={summary.audio_seconds / elapsed:.0f}, "
                                    f"RTF={elapsed / summary.audio_seconds:.4f}", refresh=False)

        try:
            if jobs <= 1:
                describer = UtteranceDescriber(config)
                for row, base in rows:
                    handle(_describe_with(describer, row, base))
            else:
                import multiprocessing as mp

                # spawn: torch's thread pools do not survive fork reliably.
                ctx = mp.get_context("spawn")
                with ctx.Pool(jobs, initializer=_init_worker, initargs=(config, threads_per_job)) as pool:
                    for result in pool.imap(_describe_row, rows, chunksize=4):
                        handle(result)
        finally:
            bar.close()
            summary.wall_seconds = time.perf_counter() - start
    return summary
