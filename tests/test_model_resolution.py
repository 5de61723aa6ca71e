"""Model references (issue 14 item 16): a missing local folder is named as such before any hub
look-up, and with HF_HUB_OFFLINE=1 the hub is never asked. One resolver serves every loader."""

from __future__ import annotations

import pytest

from speechllm.assets import resolve_model
from speechllm.errors import ModelResolutionError


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


@pytest.mark.parametrize("ref", ["exp/nosuchmodel", "./nosuchmodel", "../nosuchmodel", "exp/run1/final",
                                 "~/nosuch-speechllm-model"])
def test_a_missing_local_folder_is_no_such_folder_even_online(tmp_path, monkeypatch, online, ref):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp").mkdir()  # the first part of exp/nosuchmodel exists: a path, not a hub id
    with pytest.raises(ModelResolutionError) as err:
        resolve_model(ref)
    msg = str(err.value)
    assert msg.startswith(f"model {ref!r}: no such folder") and "offline:NAME" in msg


def test_exp_slash_name_message_says_why_it_is_taken_for_a_path(tmp_path, monkeypatch, online):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp").mkdir()
    with pytest.raises(ModelResolutionError) as err:
        resolve_model("exp/nosuchmodel")
    assert str(err.value) == (
        f"model 'exp/nosuchmodel': no such folder ({tmp_path / 'exp' / 'nosuchmodel'} does not exist, and "
        "exp/ is a folder here, so this is a path, not a hub id); give an existing model folder, "
        "offline:NAME for an offline model (`speechllm assets list`), or a hub id owner/name")


def test_online_hub_ids_pass_through(tmp_path, monkeypatch, online):
    monkeypatch.chdir(tmp_path)  # no folder called openai here
    assert resolve_model("openai/whisper-small") == "openai/whisper-small"
    assert resolve_model("gpt2") == "gpt2"


def test_offline_never_asks_the_hub_for_an_uncached_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelResolutionError) as err:
        resolve_model("someorg/somemodel")
    assert str(err.value) == (
        "model 'someorg/somemodel' is neither a local folder nor in the offline Hugging Face cache "
        f"({tmp_path / 'hub'}), and HF_HUB_OFFLINE=1 forbids asking the hub; build an offline model with "
        "`speechllm assets install NAME` and pass offline:NAME (`speechllm assets list`), or download "
        "someorg/somemodel once while online")
    # An offline asset's bare name gets a hint.
    with pytest.raises(ModelResolutionError, match="did you mean offline:whisper-tiny.en"):
        resolve_model("whisper-tiny.en")
    # A model in the cache resolves (transformers then reads it from the cache, offline).
    snapshot = tmp_path / "hub" / "models--someorg--somemodel" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    assert resolve_model("someorg/somemodel") == "someorg/somemodel"


def test_every_loader_uses_the_resolver(tmp_path, monkeypatch):
    # Offline (as in every test), so a regression fails on the message instead of asking the hub.
    from speechllm.config import ModelConfig
    from speechllm.models.encoder import load_whisper
    from speechllm.models.speech_llm import load_llm

    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp").mkdir()
    with pytest.raises(ModelResolutionError, match="no such folder"):
        load_whisper("exp/nosuchwhisper")
    with pytest.raises(ModelResolutionError, match="no such folder"):
        load_llm(ModelConfig(), "exp/nosuchmodel", None)
