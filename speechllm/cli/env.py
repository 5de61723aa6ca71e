"""``speechllm env``: what a bug report needs (versions, machine, devices, threads, tools, cache, assets)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("env", help="print versions, CPU and memory, devices, threads, TTS/sox tools, cache dir and installed assets")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_run)


def collect_environment() -> dict:
    """Versions of Python and the key libraries, devices, threads, cache dir, installed assets."""
    import importlib.metadata as md
    import os
    import platform

    from speechllm import __version__
    from speechllm.utils.hardware import cpu_counts, cpu_model, external_tools, memory_gib

    cores = cpu_counts()
    memory = memory_gib()
    info: dict = {
        "speechllm": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_cores": f"{cores['usable']} usable of {cores['logical']}",
        "memory_gib": f"{memory['total']} total, {memory['available']} available" if memory else None,
    }
    for dist in ("torch", "transformers", "peft", "accelerate", "safetensors", "librosa",
                 "soundfile", "soxr", "numpy", "gguf", "silero-vad", "openai-whisper", "vllm",
                 "torchaudio"):
        try:
            info[dist] = md.version(dist)
        except md.PackageNotFoundError:
            info[dist] = None
    try:
        import torch

        devices = ["cpu"]
        if torch.cuda.is_available():
            devices += [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            devices.append("mps")
        info["devices"] = devices
        info["torch_threads"] = torch.get_num_threads()
        from speechllm.utils.hardware import cpu_has_fast_bf16

        info["cpu_fast_bf16"] = cpu_has_fast_bf16()
    except ImportError:
        info["devices"] = []
    info["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS")
    info["SPEECHLLM_NUM_THREADS"] = os.environ.get("SPEECHLLM_NUM_THREADS")
    info["tools"] = {name: version for name, version in external_tools().items()}
    from speechllm.assets import cache_dir, list_assets

    info["cache_dir"] = str(cache_dir())
    info["assets"] = {a.name: a.is_installed() for a in list_assets()}
    return info


def _run(args: argparse.Namespace) -> int:
    info = collect_environment()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        if key == "tools":
            value = "; ".join(f"{k}: {v or 'not found (apt-get install ' + k + ')'}" for k, v in value.items())
        elif isinstance(value, dict):
            value = ", ".join(f"{k} ({'installed' if v else 'not installed'})" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(value)
        print(f"{key:<{width}}  {value if value is not None else '-'}")
    return 0
