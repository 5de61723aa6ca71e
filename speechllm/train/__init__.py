"""Training: data (lazy rows, bucketing sampler, batch layout), objectives, forgetting controls,
checkpoints with exact resume, the feature cache and post-hoc merging. See ``docs/training.md``."""

from __future__ import annotations

__all__ = ["train", "Trainer", "TrainResult", "TrainingDivergedError"]


def __getattr__(name: str):
    if name in __all__:
        from speechllm.train import trainer

        return getattr(trainer, name)
    raise AttributeError(name)
