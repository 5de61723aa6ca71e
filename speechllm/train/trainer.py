"""The training loop: ``train(config)`` runs one process (or one rank of ``accelerate launch``).

One optimiser step = ``grad_accum`` micro-batches per rank. Before any backward pass the target
counts of all micro-batches of the step are summed over ranks, and every loss is divided by that
global count: two micro-batches of unequal length give the gradient of one big batch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from speechllm.config import RunConfig, save_resolved_config
from speechllm.errors import ConfigError, SpeechLLMError
from speechllm.train import checkpointing as ckpt
from speechllm.train import objectives as obj
from speechllm.train import resume_settings
from speechllm.train.batch import BatchBuilder, TrainBatch
from speechllm.train.data import RowIndex, TrainingDataset, collate_examples
from speechllm.train.distributed import (
    DistInfo,
    all_reduce_gradients,
    all_reduce_sum,
    barrier,
    broadcast_from_main,
    gather_objects,
    llm_parameter_bytes,
    resolve_engine,
    setup_distributed,
    shard_frozen_llm,
)
from speechllm.train.forgetting import ForgettingControls
from speechllm.train.precision import attention_context, autocast_context, setup_memory_levers
from speechllm.train.run_folder import StopFlag, environment
from speechllm.train.sampler import BucketingBatchSampler

log = logging.getLogger(__name__)


class TrainingDivergedError(SpeechLLMError):
    """The loss or gradient became NaN/inf; the last good state was saved."""


@dataclass
class StepResult:
    """One optimiser step's forward and backward, before the update: the logged (globally
    normalised) losses and penalties, the objective weights, the global target counts, this
    rank's batches, and the global sample, position and audio-second counts."""

    losses: dict[str, float]
    penalties: dict[str, torch.Tensor]
    weights: dict[str, float]
    counts: dict[str, float]
    batches: list[TrainBatch]
    samples: float
    positions: float
    audio_seconds: float


@dataclass
class TrainResult:
    """What a run did: ``status`` is ``finished``, ``stopped`` (stop_at_step or a signal)."""

    status: str
    step: int
    output_dir: Path
    final_checkpoint: Path | None
    losses: list[dict[str, float]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


def lr_lambda(kind: str, warmup: int, total: int):
    """Linear warmup, then cosine / linear decay to zero, or constant."""

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "constant" or total <= warmup:
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress)) if kind == "cosine" else 1.0 - progress

    return f


class Trainer:
    """Builds the model, data, optimiser; runs steps; saves and resumes. See ``docs/training.md``."""

    def __init__(self, config: RunConfig, *, model=None, dist_info: DistInfo | None = None):
        if config.train.init_from and model is None:
            config = with_checkpoint_model(config, config.train.init_from)
        self.cfg = config
        self.tc = config.train
        self.dist = dist_info or setup_distributed()
        self.engine = resolve_engine(self.tc.engine, self.dist.world_size)
        self.sharded = self.engine == "fsdp2"
        if self.sharded and self.tc.stm_tau is not None:
            raise ConfigError("train.stm_tau with train.engine fsdp2: STM's base-model passes differ between "
                              "ranks (sharded layers need the same forwards on every rank); use engine ddp")
        if config.model.prefix_tuning.num_tokens and (self.sharded or self.tc.gradient_checkpointing):
            raise ConfigError("model.prefix_tuning with train.gradient_checkpointing or engine fsdp2: the prefix lives "
                              "in the KV cache, which checkpointed layers drop; turn those off or use prompt tuning")
        self.weights = dict(self.tc.objectives)
        unknown = set(self.weights) - set(obj.OBJECTIVES)
        if unknown:
            raise ConfigError(f"train.objectives: unknown {sorted(unknown)}; known: {', '.join(obj.OBJECTIVES)}")
        if self.tc.precision == "fp16" and not self.dist.device.startswith("cuda"):
            log.warning("fp16 on CPU: autocast runs, the grad scaler is off (CPU has no fp16 speed-up)")
        torch.manual_seed(self.tc.seed + self.dist.rank)
        if model is None:
            from speechllm.models import SpeechLLM

            dtype = "fp32" if self.tc.precision == "fp32" else None
            # FSDP2: only the main rank reads the LLM, into CPU memory (a 70B LLM does not fit
            # one GPU); shard_frozen_llm moves the shards to the GPUs and fills the others'.
            llm_device = None
            if self.sharded and self.tc.fsdp_rank0_load:
                llm_device = "cpu" if self.dist.is_main else "meta"
            if self.tc.init_from:
                model = SpeechLLM.from_pretrained(self.tc.init_from, device=self.dist.device, dtype=dtype,
                                                  trainable=True, llm_device=llm_device)
            else:
                model = SpeechLLM.from_config(config.model, device=self.dist.device, dtype=dtype,
                                              seed=self.tc.seed, llm_device=llm_device)
        self.model = model
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.trainable_named = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if not self.trainable:
            raise ConfigError("nothing to train: the model has no trainable parameters")
        if not self.sharded:
            broadcast_from_main(self.trainable, self.dist)
        setup_memory_levers(model, self.tc, self.dist.device)
        self._llm_loaded_bytes = llm_parameter_bytes(model)[0]  # what this rank read before any sharding
        if self.sharded:
            shard_frozen_llm(model, self.dist, self.tc.precision)
            # Meta parameters were replaced by real ones: take the trained ones again.
            self.trainable = [p for p in model.parameters() if p.requires_grad]
            self.trainable_named = {n: p for n, p in model.named_parameters() if p.requires_grad}
            broadcast_from_main(self.trainable, self.dist)
            # Every forward must reach the sharded layers' backward on every rank, also a
            # text-only micro-batch (no adapter vector in its input): the LLM's input embeddings
            # always require a gradient in training (no weight gets one; only activations).
            model.llm.get_input_embeddings().register_forward_hook(_embeddings_need_grad)
        self.need_text = bool(self.weights.get("kl") or self.weights.get("diva") or self.tc.stm_tau)
        self.prefix_kv = None
        # Not with sharded layers: the prefix cache runs the LLM when a rank first meets a prefix.
        if (self.tc.reuse_prefix_kv and not self.tc.gradient_checkpointing and not self.llm_trainable()
                and not self.sharded):
            from speechllm.train.prefix_kv import FrozenPrefixKV

            base = model.base_causal_lm()
            self.prefix_kv = FrozenPrefixKV(base.get_decoder(), base.config)
        self._setup_data()
        from speechllm.train.frame_stats import fit_frame_norm

        fit_frame_norm(model, self.dataset, feature_cache=self.feature_cache, max_rows=config.model.frame_norm_rows)
        self._stand_in = self._find_stand_in() if self.sharded else None
        self.optimizer = torch.optim.AdamW(self.trainable, lr=self.tc.lr, betas=tuple(self.tc.betas),
                                           weight_decay=self.tc.weight_decay)
        self.total_steps = self._total_steps()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(self.tc.scheduler, self.tc.warmup_steps, self.total_steps))
        use_scaler = self.tc.precision == "fp16" and self.dist.device.startswith("cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.step = 0
        self.forgetting = ForgettingControls(model, self.tc, self.llm_trainable())
        self.out_dir = Path(self.tc.output_dir)
        self.writer = None
        self.metrics_path = self.out_dir / "metrics.jsonl"

    # ------------------------------------------------------------------ setup

    def llm_trainable(self) -> dict[str, torch.nn.Parameter]:
        """Trained parameters inside the LLM (LoRA, unfrozen layers, prompt-tuning virtual tokens,
        prefix-tuning keys/values):
        what L2-SP/EWC regularise."""
        return {n: p for n, p in self.trainable_named.items() if n.startswith("llm.") or n in ("prompt_embeddings", "prefix_kv")}

    def _setup_data(self) -> None:
        dc = self.cfg.data
        if not dc.train:
            raise ConfigError("data.train is empty: name at least one targets.jsonl from `speechllm generate`")
        self.rows = RowIndex(dc.train)
        self.replay_rows = RowIndex(dc.replay, replay=True) if dc.replay else None
        if dc.replay_ratio and self.replay_rows is None:
            raise ConfigError("data.replay_ratio > 0 but data.replay names no file")
        self.feature_cache = None
        if dc.feature_cache:
            from speechllm.train.feature_cache import FeatureCache, build_cache

            if dc.build_feature_cache and self.dist.is_main:
                files = list(dc.train) + ([dc.valid] if dc.valid else [])
                log.info("feature cache %s: %s", dc.feature_cache, build_cache(self.model, files, dc.feature_cache))
            barrier(self.dist)

            self.feature_cache = FeatureCache.open_for(dc.feature_cache, self.model)
        self.dataset = TrainingDataset(self.rows, self.replay_rows, self.model.config, self.model.tokenizer,
                                       need_text_view=self.need_text, load_waves=self.feature_cache is None,
                                       max_seconds=dc.max_audio_seconds)
        from speechllm.models.chat_layout import SAMPLE_RATE, adapter_output_length

        costs = [adapter_output_length(max(1, int(r.seconds * SAMPLE_RATE)), self.model.config) + r.text_tokens
                 for r in self.rows.refs]
        n_main = len(self.rows)
        replay_idx = list(range(n_main, n_main + len(self.replay_rows))) if self.replay_rows is not None else []
        self.sampler = BucketingBatchSampler(
            costs, batch_size=self.tc.batch_size, seed=self.tc.seed, bucket_by_length=dc.bucket_by_length,
            replay=replay_idx, replay_ratio=dc.replay_ratio if replay_idx else 0.0, sources=self.rows.sources(),
            source_weights=dc.train_weights, rank=self.dist.rank, world_size=self.dist.world_size)
        self.builder = BatchBuilder(self.model, dc.max_length, feature_cache=self.feature_cache,
                                    need_text=self.need_text)

    def _total_steps(self) -> int:
        if self.tc.max_steps is not None:
            return int(self.tc.max_steps)
        per_epoch = math.ceil(len(self.sampler.rank_plan(0)) / self.tc.grad_accum)
        return max(1, per_epoch * self.tc.epochs)

    def _loader(self):
        from torch.utils.data import DataLoader

        # A private generator: creating the loader must not draw from the global RNG (exact resume).
        return DataLoader(self.dataset, batch_sampler=self.sampler, collate_fn=collate_examples,
                          num_workers=self.cfg.data.num_workers, generator=torch.Generator(),
                          persistent_workers=False)

    def _micro_batches(self):
        """Endless (epoch-advancing) stream of (items, epoch) on this rank."""
        while True:
            for items in self._loader():
                self.sampler.advance()
                yield items
            self.sampler.set_epoch(self.sampler.epoch + 1)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "skipped": self.builder.skipped.state_dict(),
            **self.forgetting.state_dict(),  # stm_masks, stm_counts, fisher
        }

    def save(self, *, name: str | None = None) -> Path | None:
        rngs = gather_objects(ckpt.rng_state(), self.dist)
        # Each rank counts the rows it skipped: all of them are saved, or a resumed run's summary
        # would count the main rank's rows twice and lose the others'.
        skips = gather_objects(self.builder.skipped.state_dict(), self.dist)
        path = None
        if self.dist.is_main:
            state = self.state_dict()
            state["rng"] = rngs
            state["skipped_per_rank"] = skips
            state["world_size"] = self.dist.world_size
            path = ckpt.save_checkpoint(self.out_dir, self.step, self.model, state, self.tc.keep_last, name=name)
            # The settings this state belongs to: `--resume` compares the next command's with them.
            save_resolved_config(self.cfg, path, name=resume_settings.CONFIG_FILE)
            log.info("saved %s", path)
        barrier(self.dist)
        return path

    def load(self, folder: Path) -> None:
        state = ckpt.load_state(folder)
        if state.get("world_size", 1) != self.dist.world_size:
            raise ckpt.ResumeError(f"{folder}: written by {state.get('world_size')} processes; this run has "
                                   f"{self.dist.world_size}. Resume with the same number of processes")
        ckpt.load_trained_weights(self.model, folder)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        # Checkpoints written before skipped_per_rank held the main rank's counts only.
        self.builder.skipped.load_state_dict(state.get("skipped_per_rank", [state["skipped"]] * self.dist.world_size)
                                             [self.dist.rank])
        self.forgetting.load_state_dict(state)
        self.step = int(state["step"])
        if self.dist.is_main:  # the steps after the checkpoint run again: list them once
            ckpt.truncate_run_logs(self.out_dir, self.step)
        ckpt.set_rng_state(state["rng"][self.dist.rank])
        log.info("resumed from %s at step %d", folder, self.step)

    # ------------------------------------------------------------------ objectives

    def micro_losses(self, batch: TrainBatch, *, teacher_anyway: bool = False,
                     base_anyway: bool = False) -> dict[str, torch.Tensor]:
        """Summed (not yet normalised) objective values of one micro-batch. ``teacher_anyway`` /
        ``base_anyway`` (sharded LLM): another rank runs the teacher / the replay base forward in
        this micro-batch, so this rank runs one on its stand-in row too (and discards it)."""
        model = self.model
        sums: dict[str, torch.Tensor] = {}
        with autocast_context(self.tc.precision, self.dist.device), \
                attention_context(self.tc.attention, self.dist.device):
            student = model.response_forward(batch.speech, prefix=self.prefix_kv)
            if self.weights.get("ce"):
                sums["ce"] = obj.ce_sum(student)
            teacher = None
            if batch.text is not None and (self.weights.get("kl") or self.weights.get("diva")):
                teacher = obj.teacher_forward(model, batch.text, prefix=self.prefix_kv)
            if self.weights.get("kl"):
                s_logits = obj.rows_logits(student, batch.text_rows) if teacher is not None else student.logits[:0]
                t_logits = teacher.logits if teacher is not None else s_logits.detach()
                sums["kl"] = obj.kl_sum(s_logits, t_logits, self.tc.kl_temperature)
            if self.weights.get("diva"):
                sums["diva"] = (obj.diva_terms(model, batch, student, teacher, self.tc.diva_num_align)[0]
                                if teacher is not None else student.logits.sum() * 0.0)
            if teacher is None and teacher_anyway:
                obj.teacher_forward(model, self._stand_in_batch().text)
            replay_kl = self.forgetting.replay_kl(batch, student)
            if replay_kl is not None:
                sums["replay_kl"] = replay_kl
            elif base_anyway:
                with torch.no_grad():
                    model.response_forward(self._stand_in_batch().speech, disable_lora=True)
        return sums

    def _find_stand_in(self) -> list[Any]:
        """Items of one training row that builds (with a text view when an objective needs one):
        the stand-in a rank runs, with weight 0, when its micro-batch lost every row (sharded
        LLM: every rank must run every forward). The same row on every rank."""
        for i in range(min(len(self.dataset), 256)):
            item = self.dataset[i]
            batch = self._stand_in_builder().build([item])
            if batch is not None and (batch.text is not None or not self.need_text):
                return [item]
        raise ConfigError(f"data.train: none of the first 256 rows builds a batch (bad audio or too long for "
                          f"data.max_length={self.cfg.data.max_length}); check the data with speechllm validate")

    def _stand_in_builder(self) -> BatchBuilder:
        # A builder of its own: the stand-in row never counts as skipped or trained.
        return BatchBuilder(self.model, self.cfg.data.max_length, feature_cache=self.feature_cache,
                            need_text=self.need_text)

    def _stand_in_batch(self) -> TrainBatch:
        batch = self._stand_in_builder().build(list(self._stand_in))
        assert batch is not None  # it built in _find_stand_in
        return batch

    def _forward_flags(self, batch: TrainBatch) -> list[float]:
        """Whether this micro-batch runs the teacher forward and the replay base forward."""
        base = bool(self.tc.replay_kl_weight and self.forgetting.llm_params and any(batch.replay))
        teacher = batch.text is not None and bool(self.weights.get("kl") or self.weights.get("diva"))
        return [float(teacher), float(base)]

    def _counts(self, batch: TrainBatch) -> dict[str, float]:
        labels = batch.speech.labels[:, 1:] != -100
        replay_tokens = sum(int(labels[r].sum()) for r, rep in enumerate(batch.replay) if rep)
        kl_tokens = sum(int(labels[r].sum()) for r in batch.text_rows)
        return {"ce": float(labels.sum()), "kl": float(kl_tokens), "diva": float(len(batch.text_rows)),
                "replay_kl": float(replay_tokens)}

    def _fisher_batches(self, num_batches: int = 8):
        """Up to ``num_batches`` batches for the EWC Fisher: replay rows (else the training rows),
        drawn with the run's seed, through a builder of their own (skip counts stay the run's)."""
        builder = BatchBuilder(self.model, self.cfg.data.max_length, feature_cache=self.feature_cache,
                               need_text=self.need_text)
        rng = torch.Generator().manual_seed(self.tc.seed)
        pool = (list(range(len(self.rows), len(self.dataset))) if self.replay_rows is not None
                else list(range(len(self.rows))))
        order = torch.randperm(len(pool), generator=rng).tolist()[: num_batches * self.tc.batch_size]
        for k in range(0, len(order), self.tc.batch_size):
            batch = builder.build([self.dataset[pool[i]] for i in order[k:k + self.tc.batch_size]])
            if batch is not None:
                yield batch

    # ------------------------------------------------------------------ step

    def train_step(self, micro_items: list[list[Any]]) -> dict[str, float]:
        """One optimiser step over this rank's micro-batches."""
        t0 = time.perf_counter()
        return self._finish_step(t0, self.accumulate_gradients(micro_items))

    def accumulate_gradients(self, micro_items: list[list[Any]]) -> StepResult:
        """Forward + backward of every micro-batch with losses divided by the global target
        count, then the gradient all-reduce: afterwards ``p.grad`` is the step's gradient."""
        self.model.train()
        built = [self.builder.build(items) for items in micro_items]
        stand_ins: set[int] = set()
        if self.sharded:
            # Sharded layers gather their weights in every forward: a rank whose micro-batch lost
            # all its rows runs the stand-in row (weight 0) instead of sitting the forward out.
            stand_ins = {j for j, b in enumerate(built) if b is None}
            batches = [self._stand_in_batch() if b is None else b for b in built]
        else:
            batches = [b for b in built if b is not None]
        if self.tc.stm_tau is not None:
            for b in batches:
                self.forgetting.apply_stm(b)
        local = {"ce": 0.0, "kl": 0.0, "diva": 0.0, "replay_kl": 0.0}
        stats = [0.0, 0.0, 0.0]  # samples, positions, audio seconds
        flags = [f for b in batches for f in self._forward_flags(b)] if self.sharded else []
        for j, b in enumerate(batches):
            if j in stand_ins:
                continue
            for k, v in self._counts(b).items():
                local[k] += v
            stats[0] += len(b.ids)
            stats[1] += b.num_positions
            stats[2] += b.audio_seconds
        keys = list(local)
        reduced = all_reduce_sum([local[k] for k in keys] + stats + flags, self.dist)
        global_counts = dict(zip(keys, reduced[:len(keys)]))
        g_samples, g_positions, g_seconds = reduced[len(keys):len(keys) + 3]
        anyone = [v > 0 for v in reduced[len(keys) + 3:]]  # per micro-batch: teacher, base forward
        weights = dict(self.weights)
        if self.tc.replay_kl_weight:
            weights["replay_kl"] = self.tc.replay_kl_weight
        logged = {k: 0.0 for k in weights}
        for j, b in enumerate(batches):
            sums = (self.micro_losses(b, teacher_anyway=anyone[2 * j], base_anyway=anyone[2 * j + 1])
                    if self.sharded else self.micro_losses(b))
            total = None
            for name, value in sums.items():
                norm = max(global_counts.get(name, 0.0), 1.0)
                term = weights.get(name, 0.0) * value / norm
                if j in stand_ins:
                    term = term * 0.0  # the backward runs (collectives), the stand-in adds nothing
                else:
                    logged[name] = logged.get(name, 0.0) + float(value.detach()) / norm
                total = term if total is None else total + term
            if total is not None:
                self.scaler.scale(total).backward()
        penalties = self.forgetting.penalties()
        if penalties:
            # Each rank adds 1/world of the penalty; the gradient all-reduce sums them.
            pen = sum(penalties.values()) / self.dist.world_size
            self.scaler.scale(pen).backward()
            for k, v in penalties.items():
                logged[k] = float(v.detach())
        names = sorted(logged)
        summed = all_reduce_sum([logged[k] for k in names if k not in penalties], self.dist)
        logged.update(dict(zip([k for k in names if k not in penalties], summed)))
        for p in self.trainable:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        all_reduce_gradients(self.trainable, self.dist)
        return StepResult(losses=logged, penalties=penalties, weights=weights, counts=global_counts,
                          batches=batches, samples=g_samples, positions=g_positions, audio_seconds=g_seconds)

    def _finish_step(self, t0: float, r: StepResult) -> dict[str, float]:
        logged, penalties, weights = r.losses, r.penalties, r.weights
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.trainable, self.tc.max_grad_norm if self.tc.max_grad_norm > 0 else float("inf"))
        loss_total = sum(weights.get(k, 1.0) * v for k, v in logged.items() if k in weights) + sum(
            float(v.detach()) for v in penalties.values())  # a number for the log: no autograd
        finite = math.isfinite(loss_total) and bool(torch.isfinite(grad_norm))
        if not finite and not self.scaler.is_enabled():
            self.optimizer.zero_grad(set_to_none=True)
            ids = [i for b in r.batches for i in b.ids]
            path = self.save(name=f"last-good-step-{self.step:08d}")
            raise TrainingDivergedError(
                f"step {self.step + 1}: loss {loss_total} / grad norm {float(grad_norm)} is not finite "
                f"(batch ids on rank {self.dist.rank}: {ids[:16]}); the last good state is saved in {path}. "
                "Lower train.lr, use bf16 instead of fp16, or check these rows"
            )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        self.step += 1
        dt = time.perf_counter() - t0
        record = {"step": self.step, "loss": loss_total, **{f"loss_{k}": v for k, v in logged.items()},
                  "lr": lr, "grad_norm": float(grad_norm), "samples_per_s": r.samples / dt,
                  "tokens_per_s": r.positions / dt, "audio_s_per_s": r.audio_seconds / dt,
                  "target_tokens": r.counts["ce"], "tokens": r.positions, "samples": r.samples}
        return record

    # ------------------------------------------------------------------ logging

    def _log(self, record: dict[str, float]) -> None:
        if not self.dist.is_main:
            return
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.step % max(1, self.tc.log_every) and self.step != self.total_steps:
            return
        mem = _peak_memory_mb(self.dist.device)
        record = {**record, "peak_memory_mb": mem}
        if self.writer is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.writer.add_scalar(f"train/{k}", v, self.step)
        log.info("step %d/%d loss %.4f lr %.2e grad %.3f %.1f samples/s %.0f tok/s %.1f audio-s/s mem %.0f MB",
                 self.step, self.total_steps, record["loss"], record["lr"], record["grad_norm"],
                 record["samples_per_s"], record["tokens_per_s"], record["audio_s_per_s"], mem)

    def _open_run_folder(self) -> None:
        # Every rank's resident LLM bytes (a collective: before the main-rank-only part).
        local, total = llm_parameter_bytes(self.model)
        per_rank = gather_objects((local, self._llm_loaded_bytes, _peak_memory_mb(self.dist.device)), self.dist)
        self._engine_record = {"engine": self.engine, "world_size": self.dist.world_size,
                               "llm_parameter_bytes_total": total,
                               "llm_parameter_bytes_per_rank": [int(r[0]) for r in per_rank],
                               # LLM parameter bytes each rank held before sharding (the whole LLM
                               # unless it was built on the meta device) and its peak memory so far.
                               "llm_parameter_bytes_loaded_per_rank": [int(r[1]) for r in per_rank],
                               "setup_peak_memory_mb_per_rank": [round(r[2], 1) for r in per_rank]}
        if not self.dist.is_main:
            return
        from speechllm.config import save_resolved_config
        from speechllm.utils.fs import atomic_write_text

        self.out_dir.mkdir(parents=True, exist_ok=True)
        save_resolved_config(self.cfg, self.out_dir)
        atomic_write_text(self.out_dir / "environment.json",
                          json.dumps({**environment(), **self._engine_record}, indent=2) + "\n")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out_dir / "tensorboard"))
        except ImportError:
            log.warning("tensorboard is not installed: logging to the console and metrics.jsonl only")

    # ------------------------------------------------------------------ validation

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """Mean CE on ``data.valid`` (main process) and a few sample generations."""
        # With a sharded LLM every rank runs the same validation forwards; the main one writes.
        if not self.cfg.data.valid or not (self.dist.is_main or self.sharded):
            return {}
        rows = RowIndex([self.cfg.data.valid])
        ds = TrainingDataset(rows, None, self.model.config, self.model.tokenizer)
        builder = BatchBuilder(self.model, self.cfg.data.max_length, feature_cache=self.feature_cache)
        self.model.eval()
        total, count = 0.0, 0
        for k in range(0, len(ds), self.tc.batch_size):
            batch = builder.build([ds[i] for i in range(k, min(len(ds), k + self.tc.batch_size))])
            if batch is None:
                continue
            with autocast_context(self.tc.precision, self.dist.device):
                out = self.model.response_forward(batch.speech, prefix=self.prefix_kv)
                total += float(obj.ce_sum(out))
            count += out.targets.numel()
        samples = []
        if self.sharded and self.tc.num_sample_generations and self.dist.is_main and not self.step:
            log.info("no sample generations with train.engine fsdp2 (generation is not an FSDP forward); "
                     "run speechllm infer on a checkpoint")
        for i in range(0 if self.sharded else min(self.tc.num_sample_generations, len(ds))):
            row = rows.read(i)
            item = ds[i]
            if getattr(item, "wave", None) is None:
                continue
            text = self.model.generate(row["messages"], [item.wave],
                                       [item.transcript] if item.transcript is not None else None,
                                       max_new_tokens=48)
            samples.append({"step": self.step, "id": row.get("id"), "reference": row["response"], "generated": text})
        self.model.train()
        result = {"step": self.step, "valid_loss": total / max(1, count), "valid_tokens": count}
        if not self.dist.is_main:
            return result
        with open(self.out_dir / "valid.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({**result, "samples": samples}) + "\n")
        if self.writer is not None:
            self.writer.add_scalar("valid/loss", result["valid_loss"], self.step)
            for s in samples:
                self.writer.add_text(f"samples/{s['id']}", s["generated"], self.step)
        log.info("step %d valid loss %.4f (%d tokens)", self.step, result["valid_loss"], count)
        return result

    # ------------------------------------------------------------------ run

    def run(self, *, resume: str | None = None, stop_at_step: int | None = None) -> TrainResult:
        """Train until ``total_steps`` (or ``stop_at_step``, or a signal); save and return."""
        folder = ckpt.resolve_resume(self.out_dir, resume)
        # Refuse changed settings before config.yaml is rewritten with them.
        changes = resume_settings.check_resume_settings(self.cfg, folder) if folder is not None else {}
        self._open_run_folder()
        if folder is not None:
            self.load(folder)
            if self.dist.is_main:
                resume_settings.record_resume_changes(self.out_dir, folder, self.step, changes)
        elif resume is None and self.step == 0 and ckpt.list_checkpoints(self.out_dir) and self.dist.is_main:
            log.warning("%s already holds checkpoints; starting from step 0 (use --resume auto to continue)",
                        self.out_dir)
        if self.forgetting.needs_fisher():
            # Before any step: the estimate uses (and then clears) the trained weights' gradients.
            with torch.random.fork_rng(devices=[]):
                self.forgetting.fisher = self.forgetting.estimate_fisher(self._fisher_batches())
        records: list[dict[str, float]] = []
        stream = self._micro_batches()
        status = "finished"
        progress = None
        if self.dist.is_main:
            from speechllm.utils.progress import progress_bar

            progress = progress_bar(self.total_steps, "train", "step", initial=self.step)
        with StopFlag() as stop, contextlib.ExitStack() as closing:
            if progress is not None:
                closing.callback(progress.close)
            while self.step < self.total_steps:
                micro = [next(stream) for _ in range(self.tc.grad_accum)]
                record = self.train_step(micro)
                records.append(record)
                self._log(record)
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(loss=f"{record['loss']:.3f}", sps=f"{record['samples_per_s']:.1f}")
                signalled = all_reduce_sum([1.0 if stop.raised else 0.0], self.dist)[0] > 0
                if self.step < self.total_steps and (
                        signalled or (stop_at_step is not None and self.step >= stop_at_step)):
                    self.save()
                    status = "stopped"
                    break
                if self.tc.save_every and self.step % self.tc.save_every == 0 and self.step < self.total_steps:
                    self.save()
                if self.tc.eval_every and self.step % self.tc.eval_every == 0 and self.step < self.total_steps:
                    self.validate()
        final = None
        if status == "finished":
            self.save()
            self.validate()
            if self.dist.is_main:
                final = self.out_dir / "final"
                self.model.save_pretrained(final)
        barrier(self.dist)
        skipped: dict[str, int] = {}
        for counts in gather_objects(dict(self.builder.skipped.counts), self.dist):  # every rank's rows
            for k, v in counts.items():
                skipped[k] = skipped.get(k, 0) + v
        if self.dist.is_main:
            if skipped:
                log.warning("skipped rows: %s (first: %s)", skipped, self.builder.skipped.examples[:3])
            summary = {"status": status, "step": self.step, "skipped": skipped,
                       "stm_masked_share": self.forgetting.stm_masked_share}
            (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
            from speechllm.train.curves import plot_training_curves

            plot_training_curves(self.out_dir)  # plots/training_curves.png: loss and validation loss
            if self.writer is not None:
                self.writer.close()
        # Every rank leaves together: a rank that returned while the main one still wrote its
        # summary and plot could tear the process group down under it (a gloo abort was seen).
        barrier(self.dist)
        return TrainResult(status=status, step=self.step, output_dir=self.out_dir, final_checkpoint=final,
                           losses=records, skipped=skipped)


def _peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train(config: RunConfig, *, resume: str | None = None, stop_at_step: int | None = None,
          model=None) -> TrainResult:
    """Train per ``config`` (see :class:`Trainer`)."""
    if config.train.init_from:
        config = with_checkpoint_model(config, config.train.init_from)
    if resume is not None:
        # Check the resume's settings before the models load (minutes for an 8B LLM); the run
        # resumes from this very folder.
        folder = ckpt.resolve_resume(config.train.output_dir, resume)
        if folder is not None:
            resume_settings.check_resume_settings(config, folder)
            if not (folder / ckpt.STATE_JSON).is_file():
                ckpt.load_state(folder)  # an old pickled state: refused now if crafted, not after the load
            resume = str(folder)
    from speechllm.train.run_folder import training_lock

    with training_lock(config.train.output_dir):
        return Trainer(config, model=model).run(resume=resume, stop_at_step=stop_at_step)


def with_checkpoint_model(config: RunConfig, checkpoint: str) -> RunConfig:
    """``config`` with the model section of ``checkpoint`` (``train.init_from``): its weights only
    fit the settings they were trained (or converted) with. Recipe values that differ are named
    in a warning, not silently dropped."""
    import dataclasses

    from speechllm.models.checkpoint import checkpoint_model_config

    model = checkpoint_model_config(checkpoint)
    differ = [f"{f.name} {getattr(config.model, f.name)!r} -> {getattr(model, f.name)!r}"
              for f in dataclasses.fields(model)
              if f.name != "lora" and getattr(config.model, f.name) != getattr(model, f.name)]
    if differ:
        log.warning("train.init_from %s: the model settings are the checkpoint's; the recipe's differ in: %s",
                    checkpoint, "; ".join(differ))
    return dataclasses.replace(config, model=model)


def _embeddings_need_grad(module, inputs, output):
    """Forward hook (sharded LLM, training): the input embeddings require a gradient, so every
    rank's backward runs through every sharded layer (their backward gathers the weights too)."""
    if torch.is_grad_enabled() and not output.requires_grad:
        return output.requires_grad_()
    return output
