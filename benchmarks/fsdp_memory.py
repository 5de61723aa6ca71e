"""Model-state memory per GPU: data parallel vs FSDP2 (``train.engine``), computed, not measured.

For the DeSTA2.5 recipe (Whisper-large-v3 encoder, 6-layer Q-Former) with Llama-3-8B and with a
Llama-3-70B LLM on G GPUs, bf16 frozen weights (2 bytes), the trained adapter in fp32 with AdamW
(weights + gradient + two moments = 16 bytes per parameter). Parameter counts come from the
published shapes (below) by the formula in :func:`llama_params`; the adapter's from the project's
own Q-Former built on the meta device with the recipe's settings (no download).

Per GPU:

    data parallel   2·P_llm + 2·P_enc + 16·P_adapter
    FSDP2           2·P_llm/G + 2·(P_root + 2·P_layer) + 2·P_enc + 16·P_adapter

``P_root`` (embeddings, final norm, LM head) is gathered from the first LLM forward of a step until
its backward (FSDP2 keeps the root unit unsharded between them); ``2·P_layer``: one decoder layer
gathered for compute and the next one prefetched. The encoder and the adapter are not sharded.
Activations (batch- and length-dependent) and the CUDA context (~0.5-1 GB) come on top.

    python benchmarks/fsdp_memory.py [--gpus 8]
"""

from __future__ import annotations

import argparse

GB = 1e9

LLMS = {  # published config.json shapes
    "Llama-3-8B": dict(hidden=4096, layers=32, ffn=14336, heads=32, kv_heads=8, vocab=128256, tied=False),
    "Llama-3-70B": dict(hidden=8192, layers=80, ffn=28672, heads=64, kv_heads=8, vocab=128256, tied=False),
}
WHISPER_LARGE_V3 = dict(d_model=1280, layers=32, ffn=5120, heads=20, mels=128, positions=1500)


def llama_params(hidden: int, layers: int, ffn: int, heads: int, kv_heads: int, vocab: int,
                 tied: bool) -> dict[str, int]:
    """Parameters of one decoder layer, of the root unit (embeddings + final norm + LM head) and
    in total: attention q,o (h·h each), k,v (h·kv_dim each), SwiGLU MLP (3·h·ffn), two RMSNorms."""
    kv_dim = hidden // heads * kv_heads
    layer = 2 * hidden * hidden + 2 * hidden * kv_dim + 3 * hidden * ffn + 2 * hidden
    root = vocab * hidden * (1 if tied else 2) + hidden
    return {"layer": layer, "root": root, "total": layers * layer + root}


def whisper_encoder_params(d_model: int, layers: int, ffn: int, heads: int, mels: int, positions: int) -> int:
    """Whisper encoder: two convolutions, positions, per layer attention (4·d² + biases), MLP
    (2·d·ffn + biases) and two LayerNorms, and the closing LayerNorm."""
    conv = mels * d_model * 3 + d_model + d_model * d_model * 3 + d_model
    layer = 4 * d_model * d_model + 3 * d_model + 2 * d_model * ffn + ffn + d_model + 4 * d_model
    return conv + positions * d_model + layers * layer + 2 * d_model


def qformer_params(llm_dim: int) -> int:
    """The DeSTA2.5 recipe's adapter (6-layer Q-Former over 4 taps of Whisper-large-v3), built on
    the meta device by the project's own code."""
    import torch

    from speechllm.config import RunConfig, load_config
    from speechllm.models.adapters import AdapterSpec, build_adapter

    cfg = load_config(RunConfig, "recipes/desta25_whisper-large-v3_llama3.1-8b-instruct.yaml").model
    spec = AdapterSpec(encoder_dim=WHISPER_LARGE_V3["d_model"], encoder_heads=WHISPER_LARGE_V3["heads"],
                       num_taps=len(cfg.encoder_layers), llm_dim=llm_dim)
    with torch.device("meta"):
        adapter = build_adapter(cfg.adapter, spec, cfg)
    return sum(p.numel() for p in adapter.parameters())


def per_gpu(llm: dict[str, int], enc: int, adapter: int, gpus: int) -> dict[str, float]:
    """Bytes per GPU (formula in the module docstring), in GB."""
    fixed = 2 * enc + 16 * adapter
    dp = 2 * llm["total"] + fixed
    fsdp = 2 * llm["total"] / gpus + 2 * (llm["root"] + 2 * llm["layer"]) + fixed
    return {"llm_dp": 2 * llm["total"] / GB, "llm_fsdp_shard": 2 * llm["total"] / gpus / GB,
            "gathered": 2 * (llm["root"] + 2 * llm["layer"]) / GB, "encoder": 2 * enc / GB,
            "adapter_adam": 16 * adapter / GB, "dp": dp / GB, "fsdp": fsdp / GB}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpus", type=int, default=8)
    args = parser.parse_args()
    enc = whisper_encoder_params(**WHISPER_LARGE_V3)
    print(f"Whisper-large-v3 encoder: {enc / 1e6:.0f} M parameters; {args.gpus} GPUs; bf16 frozen weights; "
          "fp32 adapter + AdamW")
    print("| LLM | LLM params | adapter params | DP: LLM | FSDP2: LLM shard + gathered | encoder | "
          "adapter + AdamW | **DP total** | **FSDP2 total** |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, shape in LLMS.items():
        llm = llama_params(**shape)
        adapter = qformer_params(shape["hidden"])
        m = per_gpu(llm, enc, adapter, args.gpus)
        print(f"| {name} | {llm['total'] / 1e9:.2f} B | {adapter / 1e6:.0f} M | {m['llm_dp']:.1f} GB | "
              f"{m['llm_fsdp_shard']:.1f} + {m['gathered']:.1f} GB | {m['encoder']:.1f} GB | "
              f"{m['adapter_adam']:.1f} GB | **{m['dp']:.1f} GB** | **{m['fsdp']:.1f} GB** |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
