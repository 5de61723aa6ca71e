"""Estimate the adapter's frame normalisation (``model.frame_norm: global``) from training audio.

Run once when training starts from a fresh adapter: the first ``model.frame_norm_rows`` audio
rows of the training files (in file order, so every rank and every restart computes the same
statistics) go through the frozen encoder, or come from the feature cache, and their real frames
are summed per tap and dimension. A resumed run restores the statistics from its checkpoint.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

BATCH = 16


def fit_frame_norm(model, dataset, *, feature_cache=None, max_rows: int = 256) -> int | None:
    """Fit ``model.adapter.frame_norm`` when it exists and is not fitted yet. ``dataset`` is a
    :class:`speechllm.train.data.TrainingDataset`. Returns the number of frames used, or None
    when there was nothing to do. Rows with unusable audio are passed over."""
    from speechllm.train.data import Skipped

    norm = getattr(model.adapter, "frame_norm", None)
    if norm is None or norm.fitted:
        return None
    if max_rows < 1:
        raise ValueError(f"model.frame_norm_rows must be >= 1, got {max_rows}")
    rows_used = 0
    pending = []

    def flush() -> None:
        if not pending:
            return
        if feature_cache is not None:
            encoded, _ = feature_cache.encoded([e.id for e in pending], "cpu")
        else:
            encoded = model.encoder.encode([e.wave for e in pending])
        norm.accumulate(encoded.taps, encoded.valid_frames)
        pending.clear()

    for i in range(dataset.num_audio):
        if rows_used >= max_rows:
            break
        item = dataset[i]
        if isinstance(item, Skipped):
            continue
        if feature_cache is not None and feature_cache.problem(item.id, item.audio_key) is not None:
            continue
        pending.append(item)
        rows_used += 1
        if len(pending) == BATCH:
            flush()
    flush()
    if rows_used == 0:
        raise ValueError("model.frame_norm=global: no training row has usable audio to estimate statistics from")
    frames = norm.finish()
    log.info("frame_norm: statistics from %d rows (%d frames)", rows_used, frames)
    return frames
