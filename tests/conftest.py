"""Shared fixtures: one torch thread, tiny random models, real offline assets, real audio."""

from __future__ import annotations

import os
from pathlib import Path

# One intra-op thread: on 2-core machines two threads run many times slower when the other
# core is busy. Set before torch is imported anywhere.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_AUDIO_DIR = REPO_ROOT / "tests" / "data" / "audio"


@pytest.fixture(scope="session")
def real_audio_dir() -> Path:
    """``tests/data/audio``: three LibriSpeech readers and a robin chirp (credits in CREDITS.md)."""
    return REAL_AUDIO_DIR


@pytest.fixture(scope="session")
def harvard_sentences() -> list[str]:
    """The 720 Harvard sentences shipped with the package."""
    from speechllm.data.synth import harvard_sentences as packaged

    return packaged()


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory) -> Path:
    """A tiny random Llama (hidden 64, 2 layers) with a trained BPE tokenizer + ChatML template."""
    from speechllm.testing import build_tiny_llm

    return build_tiny_llm(tmp_path_factory.mktemp("tiny_llm") / "model")


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory) -> Path:
    """A tiny random Whisper (d_model 64, 2+2 layers) with a feature extractor and tokenizer."""
    from speechllm.testing import build_tiny_whisper

    return build_tiny_whisper(tmp_path_factory.mktemp("tiny_whisper") / "model")


def _install_or_skip(name: str) -> Path:
    from speechllm.assets import get_asset, install_asset
    from speechllm.errors import AssetError

    asset = get_asset(name)
    try:
        asset.source_dirs()
    except AssetError as e:
        pytest.skip(str(e))
    return install_asset(name)


@pytest.fixture(scope="session")
def offline_whisper_tiny_en() -> Path:
    """The real Whisper tiny.en converted from CTranslate2 (installed once into the cache)."""
    return _install_or_skip("whisper-tiny.en")


@pytest.fixture(scope="session")
def offline_whisper_base() -> Path:
    """The real multilingual Whisper base converted from CTranslate2 (installed once into the cache)."""
    return _install_or_skip("whisper-base")


@pytest.fixture(scope="session")
def offline_smollm2() -> Path:
    """The real SmolLM2-135M-Instruct converted from GGUF (installed once into the cache)."""
    return _install_or_skip("smollm2-135m-instruct")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With ``SPEECHLLM_STRICT_SKIPS=1`` (CI sets it) any skipped test fails the run.

    A skip is allowed only for something a user can act on (an optional extra, a Debian package
    not installed); ``scripts/run_tests.sh`` installs all of it, so on CI a skip means an install
    step is missing, and must not pass silently.
    """
    if os.environ.get("SPEECHLLM_STRICT_SKIPS") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped:
        reporter.write_line(
            f"SPEECHLLM_STRICT_SKIPS=1: {len(skipped)} test(s) skipped; every dependency of the "
            "default suite must be installed (scripts/install.sh)", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
