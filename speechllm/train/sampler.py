"""The batch sampler: duration bucketing, replay mixing, source weights, rank split, exact resume.

Every rank computes the same epoch plan from ``(seed, epoch)`` and takes every ``world``-th batch,
so ranks agree without communicating. The number of batches is padded to a multiple of the world
size (the first batches are repeated), so every rank runs the same number of steps: uneven data
never leaves one rank waiting in a collective. ``state_dict`` holds the epoch and the batches
consumed on this rank; a resumed sampler yields exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

POOL_BATCHES = 50  # batches per sorting pool: large enough to group, small enough to stay random


class BucketingBatchSampler:
    """Yields lists of dataset indices for this rank.

    ``costs[i]``: the length of main row ``i`` in LLM positions (audio span + text tokens);
    ``replay`` holds the dataset indices of replay rows (mixed in at ``replay_ratio`` of every
    batch, spread evenly: the share is exact over any window of batches); ``sources[i]`` and
    ``source_weights`` resample the main rows per epoch (epoch size stays the number of rows).
    """

    def __init__(self, costs: Sequence[float], *, batch_size: int, seed: int = 0,
                 bucket_by_length: bool = True, replay: Sequence[int] = (), replay_ratio: float = 0.0,
                 sources: Sequence[int] | None = None, source_weights: Sequence[float] | None = None,
                 rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if replay_ratio and not replay:
            raise ValueError("replay_ratio > 0 but no replay rows were given (data.replay)")
        self.costs = np.asarray(costs, dtype=np.float64)
        self.batch_size = batch_size
        self.seed = seed
        self.bucket_by_length = bucket_by_length
        self.replay = np.asarray(list(replay), dtype=np.int64)
        self.replay_ratio = replay_ratio if len(self.replay) else 0.0
        self.sources = np.asarray(sources if sources is not None else [0] * len(self.costs), dtype=np.int64)
        self.source_weights = list(source_weights) if source_weights is not None else None
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.position = 0  # batches of this epoch already consumed on this rank

    # ------------------------------------------------------------------ plan

    def _epoch_rows(self, rng: np.random.Generator) -> np.ndarray:
        n = len(self.costs)
        if self.source_weights is None:
            return rng.permutation(n)
        weights = np.asarray(self.source_weights, dtype=np.float64)
        if len(weights) != int(self.sources.max()) + 1 or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"data.train_weights {self.source_weights}: one non-negative weight per file")
        shares = weights / weights.sum()
        picked = []
        for src, share in enumerate(shares):
            members = np.flatnonzero(self.sources == src)
            want = int(round(share * n))
            if want == 0 or len(members) == 0:
                continue
            reps = math.ceil(want / len(members))  # oversample a small file by cycling it
            cycle = np.concatenate([rng.permutation(members) for _ in range(reps)])
            picked.append(cycle[:want])
        return rng.permutation(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)

    def _replay_counts(self, num_batches: int) -> list[int]:
        # Replay slots per batch such that after batch i the total is round(rho * B * (i + 1)).
        b, rho = self.batch_size, self.replay_ratio
        totals = [int(math.floor(rho * b * (i + 1) + 0.5)) for i in range(num_batches)]
        return [t - (totals[i - 1] if i else 0) for i, t in enumerate(totals)]

    def global_plan(self, epoch: int) -> list[list[int]]:
        """Every rank's batches of ``epoch`` in order (identical on all ranks)."""
        rng = np.random.default_rng([self.seed, epoch])
        rows = self._epoch_rows(rng)
        main_per_batch = self.batch_size * (1.0 - self.replay_ratio)
        num_batches = max(1, math.ceil(len(rows) / max(main_per_batch, 1e-9))) if len(rows) else 0
        replay_counts = self._replay_counts(num_batches)
        sizes = [self.batch_size - k for k in replay_counts]
        if self.bucket_by_length and len(rows):
            # Sort within pools of ~50 batches: similar lengths share a batch (less padding)
            # while the order across pools stays random.
            pool = self.batch_size * POOL_BATCHES
            rows = np.concatenate([
                rows[i:i + pool][np.argsort(self.costs[rows[i:i + pool]], kind="stable")]
                for i in range(0, len(rows), pool)
            ])
        batches: list[list[int]] = []
        cursor = 0
        for size in sizes:
            chunk = rows[cursor:cursor + size].tolist()
            cursor += size
            if chunk:
                batches.append(chunk)
        replay_counts = replay_counts[:len(batches)]
        if len(self.replay):
            order = np.concatenate([rng.permutation(self.replay) for _ in
                                    range(math.ceil(sum(replay_counts) / len(self.replay)) or 1)])
            k = 0
            for batch, count in zip(batches, replay_counts):
                batch.extend(order[k:k + count].tolist())
                k += count
        if self.bucket_by_length:
            perm = rng.permutation(len(batches))
            batches = [batches[i] for i in perm]
        # Pad to a multiple of the world size so every rank runs the same number of batches.
        if batches and len(batches) % self.world_size:
            extra = self.world_size - len(batches) % self.world_size
            batches += [list(batches[i % len(batches)]) for i in range(extra)]
        return batches

    def rank_plan(self, epoch: int) -> list[list[int]]:
        return self.global_plan(epoch)[self.rank::self.world_size]

    # ------------------------------------------------------------------ iteration

    def __len__(self) -> int:
        return len(self.rank_plan(self.epoch))

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch = epoch
            self.position = 0

    def __iter__(self) -> Iterator[list[int]]:
        plan = self.rank_plan(self.epoch)
        start = self.position
        yield from plan[start:]

    def advance(self, n: int = 1) -> None:
        """Record that ``n`` more batches of this epoch were consumed (the trainer calls this;
        a DataLoader prefetching ahead must not move the resume point)."""
        self.position += n

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("world_size", self.world_size) != self.world_size:
            raise ValueError(
                f"the checkpoint was written with {state['world_size']} processes, this run has "
                f"{self.world_size}; resume with the same number of processes"
            )
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.seed = int(state.get("seed", self.seed))
