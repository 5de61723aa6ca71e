"""Process-group helpers and the two distributed engines. ``accelerate launch`` and ``torchrun``
both set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR``/``MASTER_PORT``; the trainer
joins that group (gloo on CPU, NCCL on CUDA) and averages the *trainable* gradients itself with
one all-reduce per step. The trainable part (adapter, LoRA) is small, and an explicit all-reduce
works with batches that differ between ranks, or a rank whose micro-batch lost all its rows to bad
audio, where DDP's hooks would wait forever.

Engines (``train.engine``, :func:`resolve_engine`): ``ddp`` keeps the whole frozen LLM on every
rank; ``fsdp2`` shards the frozen LLM's weights over the ranks with FSDP2's ``fully_shard`` (one
unit per decoder layer, the embeddings / final norm / LM head in the root unit) while the trained
weights stay whole on every rank, outside FSDP (``ignored_params``), and keep the explicit
all-reduce above. A sharded layer all-gathers its weights in every forward (and again in the
backward), so under ``fsdp2`` every rank must run the same sequence of LLM forwards: the trainer
makes sure of that (:meth:`speechllm.train.trainer.Trainer.accumulate_gradients`).

Under ``fsdp2`` only the main rank reads the LLM's weights (``train.fsdp_rank0_load``, the
default), into CPU memory: the other ranks build it on the meta device, and
:func:`shard_frozen_llm` fills their shards from the main rank's full state, one tensor at a time,
so no rank but the main one ever holds the whole LLM, and no GPU does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from speechllm.errors import ConfigError

ENGINES = ("ddp", "fsdp2")


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(prefer_cuda: bool = True) -> DistInfo:
    """Join the process group described by the environment (no-op for one process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = prefer_cuda and torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("1", "true")
    device = f"cuda:{local}" if use_cuda else "cpu"
    if use_cuda:
        torch.cuda.set_device(local)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=device)


def leave_distributed() -> None:
    """Leave the process group (no-op without one), every rank together, before the process exits:
    a gloo group still alive at interpreter exit can abort a rank (``terminate called without an
    active exception``) after its run finished, which fails the launch."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    """Element-wise sum over ranks (float64 on CPU for gloo, on the device for NCCL)."""
    if not info.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=info.device if info.device != "cpu" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_reduce_gradients(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    """Sum the gradients of ``params`` over ranks in one flat buffer (the losses are already
    divided by the global token count, so the sum is the global mean)."""
    if not info.enabled:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).to(p.dtype)
        offset += n


def broadcast_from_main(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    """Give every rank the main rank's values of ``params`` (what DDP does when it wraps a model):
    weights drawn from the global RNG at start-up (peft's LoRA A) differ between ranks, whose
    seeds differ."""
    if not info.enabled:
        return
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=0)


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def resolve_engine(requested: str, world_size: int) -> str:
    """The engine a run uses: ``single`` (one process), ``ddp`` or ``fsdp2``.

    ``auto`` reads what the launcher says: ``accelerate launch`` with an FSDP config sets
    ``ACCELERATE_USE_FSDP=true`` and ``FSDP_VERSION``; with a DeepSpeed config
    ``ACCELERATE_USE_DEEPSPEED=true``. A launcher that names an engine this trainer does not run
    (FSDP version 1, DeepSpeed), or an explicit ``train.engine`` that contradicts the launcher, is
    refused rather than silently run as something else.
    """
    if requested not in ("auto", *ENGINES):
        raise ConfigError(f"train.engine: {requested!r} is not one of auto, {', '.join(ENGINES)}")
    if _env_true("ACCELERATE_USE_DEEPSPEED"):
        raise ConfigError("the launch config names DeepSpeed, which speechllm does not run; launch with "
                          "recipes/accelerate/fsdp.yaml (FSDP2 shards the frozen LLM) or multi_gpu_ddp.yaml")
    launcher = None
    if _env_true("ACCELERATE_USE_FSDP"):
        version = os.environ.get("FSDP_VERSION", "1")
        if version != "2":
            raise ConfigError(f"the launch config names FSDP version {version}; speechllm runs FSDP2 only: "
                              "set fsdp_config.fsdp_version: 2 (recipes/accelerate/fsdp.yaml)")
        launcher = "fsdp2"
    if launcher is not None and requested not in ("auto", launcher):
        raise ConfigError(f"train.engine={requested} but the launch config names {launcher}; "
                          f"drop train.engine (auto) or launch with a matching config")
    engine = launcher or (requested if requested != "auto" else "ddp")
    return engine if world_size > 1 else "single"


def shard_frozen_llm(model: torch.nn.Module, info: DistInfo, precision: str) -> None:
    """Shard the frozen LLM of ``model`` (a :class:`~speechllm.models.SpeechLLM`) over the ranks with
    FSDP2: one ``fully_shard`` unit per decoder layer and a root unit on the SpeechLLM holding the
    rest of the LLM (embeddings, final norm, LM head; tied or not). The encoder, the adapter and
    every trained parameter are ``ignored_params``: they stay whole on every rank and the trainer
    all-reduces their gradients itself (fp32, :func:`all_reduce_gradients`).

    ``SpeechLLM.response_forward`` is registered as an FSDP forward method, so the root unit
    gathers its weights around each call. bf16 runs compute the LLM in bf16
    (``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)``; no frozen weight has a
    gradient to reduce).

    Ranks whose LLM is on the meta device (``SpeechLLM.from_config(llm_device="meta")``) get
    real values after sharding: their shards and whole trained weights are allocated on the
    rank's device (``to_empty``; the main rank's whole tensors, on the CPU when it loaded the LLM
    there, are moved to it: ``fully_shard`` moves only the sharded ones), then filled from the main rank's full state dict
    (``set_model_state_dict(full_state_dict=True, broadcast_from_rank0=True)``: each tensor is
    broadcast and each rank keeps its shard), and every buffer is broadcast from the main rank,
    as non-persistent ones (rotary ``inv_freq``) are not in a state dict, and so are the base
    values of weights trained in place (``model.llm_base_values``: after ``train.init_from`` they
    differ from the weights).
    The caller must re-read its references to the LLM's parameters: ``to_empty`` replaces
    meta parameter objects."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import (
        MixedPrecisionPolicy,
        fully_shard,
        register_fsdp_forward_method,
    )

    device_type = "cuda" if info.device.startswith("cuda") else "cpu"
    mesh = init_device_mesh(device_type, (info.world_size,))
    mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
          if precision == "bf16" else MixedPrecisionPolicy())
    llm = model.llm
    meta_here = any(t.is_meta for t in (*llm.parameters(), *llm.buffers()))
    if info.is_main and meta_here:
        raise ConfigError("train.fsdp_rank0_load: the main rank's LLM is on the meta device; it must load the "
                          "real weights (SpeechLLM.from_config(llm_device=None or 'cpu') on rank 0)")
    any_meta = all_reduce_sum([float(meta_here)], info)[0] > 0
    # The main rank's full state (references to its tensors, no copy) is what it broadcasts.
    full_state = llm.state_dict() if any_meta and info.is_main else {}
    llm_ids = {id(p) for p in model.llm.parameters()}
    ignored = {p for p in model.parameters() if p.requires_grad or id(p) not in llm_ids}
    layers = model.base_causal_lm().get_decoder().layers
    for layer in layers:
        fully_shard(layer, mesh=mesh, mp_policy=mp, ignored_params=ignored & set(layer.parameters()))
    fully_shard(model, mesh=mesh, mp_policy=mp, ignored_params=ignored)
    register_fsdp_forward_method(model, "response_forward")
    if any_meta:
        _fill_from_main(model, full_state, info)


def _fill_from_main(model: torch.nn.Module, full_state: dict[str, torch.Tensor], info: DistInfo) -> None:
    """The meta ranks' half of :func:`shard_frozen_llm`: allocate, then receive every LLM tensor."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    llm = model.llm
    if any(t.is_meta for t in (*llm.parameters(), *llm.buffers())):
        llm.to_empty(device=info.device)
    device = torch.device(info.device)
    with torch.no_grad():
        for module in llm.modules():
            for p in module.parameters(recurse=False):
                if not hasattr(p, "to_local") and p.device != device:
                    p.data = p.data.to(device)  # the same Parameter: the caller's references hold
            for name, buf in module.named_buffers(recurse=False):
                if buf.device != device:
                    module._buffers[name] = buf.to(device)
    set_model_state_dict(llm, full_state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    full_state.clear()  # the main rank's full tensors can go as soon as its own shards are filled
    with torch.no_grad():
        for buf in llm.buffers():
            dist.broadcast(buf, src=0)
        if getattr(model, "llm_base_values", None):
            model.llm_base_values = {n: torch.empty_like(v, device=device) if v.is_meta else v.to(device)
                                     for n, v in model.llm_base_values.items()}
            for v in model.llm_base_values.values():
                dist.broadcast(v, src=0)


def llm_parameter_bytes(model: torch.nn.Module) -> tuple[int, int]:
    """(bytes of the LLM's parameters resident on this rank, bytes of the whole LLM): a sharded
    parameter counts its local shard (``DTensor.to_local``), a whole one its full size, one on
    the meta device nothing."""
    local = total = 0
    for p in model.llm.parameters():
        size = p.element_size()
        total += p.numel() * size
        data = p.to_local() if hasattr(p, "to_local") else p
        local += 0 if data.is_meta else data.numel() * size
    return local, total
