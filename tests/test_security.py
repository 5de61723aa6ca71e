"""No code runs from data or checkpoints: a crafted trainer state is refused without being
unpickled, and a model folder's own Python (``auto_map``) runs only when the person running the
command allows it (``--trust-remote-code`` / ``SPEECHLLM_TRUST_REMOTE_CODE=1``), never because a
checkpoint or recipe asks. Each attack writes a marker file that must not appear."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from train_fixtures import tiny_run_config, write_rows

from speechllm.cli import main

# ---------------------------------------------------------------- helpers


class _WritesMarker:
    """Unpickling this object calls ``open(marker, "w")``: the file appears iff code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _crafted_checkpoint(src_model: Path, step_dir: Path, marker: Path, *, raw_pickle: bool = False) -> Path:
    """A ``step-*`` folder with a real ``model/`` and a ``trainer_state.pt`` whose unpickling
    writes ``marker``."""
    step_dir.mkdir(parents=True)
    shutil.copytree(src_model, step_dir / "model")
    payload = {"step": 3, "optimizer": _WritesMarker(marker)}
    if raw_pickle:
        (step_dir / "trainer_state.pt").write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, step_dir / "trainer_state.pt")
    return step_dir


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    return write_rows(tmp_path_factory.mktemp("security_rows"), 4)


@pytest.fixture(scope="module")
def trained(tiny_llm_dir, tiny_whisper_dir, rows, tmp_path_factory):
    """A run stopped after step 2: ``checkpoints/step-00000002`` in the current format."""
    from speechllm.train import Trainer

    out = tmp_path_factory.mktemp("security_run") / "run"
    cfg = tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [rows], out, max_steps=4)
    result = Trainer(cfg).run(stop_at_step=2)
    assert result.status == "stopped"
    return out


def _recipe(tmp_path: Path, tiny_llm_dir, tiny_whisper_dir, rows, out: Path, **model) -> Path:
    cfg = {
        "model": {"encoder": str(tiny_whisper_dir), "llm": str(tiny_llm_dir), "dtype": "fp32", "num_queries": 8,
                  "qformer_layers": 1, "qformer_ffn_dim": 64, "use_vad": False, **model},
        "data": {"train": [str(rows)], "max_length": 256},
        "train": {"output_dir": str(out), "precision": "fp32", "batch_size": 4, "max_steps": 4, "warmup_steps": 2,
                  "lr": 3e-3, "save_every": 0, "eval_every": 0, "num_sample_generations": 0},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# ---------------------------------------------------------------- item 1: trainer state


@pytest.mark.parametrize("raw_pickle", [False, True], ids=["torch-save", "raw-pickle"])
def test_crafted_trainer_state_is_refused_and_runs_no_code(trained, tiny_llm_dir, tiny_whisper_dir, rows,
                                                           tmp_path, capsys, raw_pickle):
    out = tmp_path / "run"
    marker = tmp_path / "PWNED"
    crafted = _crafted_checkpoint(trained / "checkpoints" / "step-00000002" / "model",
                                  out / "checkpoints" / "step-00000003", marker, raw_pickle=raw_pickle)
    recipe = _recipe(tmp_path, tiny_llm_dir, tiny_whisper_dir, rows, out)
    for resume in (str(crafted), "auto"):
        rc = main(["train", "--config", str(recipe), "--resume", resume])
        err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # no progress bars
        assert not marker.exists(), "unpickling the trainer state ran code"
        assert rc == 2
        assert len(err) == 1 and err[0].startswith("speechllm train: error: "), err
        assert f"{crafted / 'trainer_state.pt'}: refused: not a plain-data trainer state" in err[0], err
        assert ("it asks for io.open" if not raw_pickle else "Unsupported operand") in err[0], err


def test_trainer_state_is_stored_without_pickle(trained):
    from speechllm.train import checkpointing as ckpt

    folder = trained / "checkpoints" / "step-00000002"
    names = {p.name for p in folder.iterdir()}
    assert {"model", "trainer_state.json", "trainer_state.safetensors"} <= names
    assert not [n for n in names if n.endswith((".pt", ".pkl", ".bin"))], names  # nothing pickled
    meta = json.loads((folder / "trainer_state.json").read_text())
    assert meta["format"] == "speechllm-trainer-state" and meta["state"]["step"] == 2
    state = ckpt.load_state(folder)
    assert state["step"] == 2 and isinstance(state["rng"][0]["python"], tuple)
    assert isinstance(next(iter(state["optimizer"]["state"])), int)  # param ids stay ints


def test_old_trainer_state_pt_resumes_exactly_without_unpickling_code(trained, tiny_llm_dir, tiny_whisper_dir,
                                                                      rows, tmp_path):
    """A checkpoint written before the format change (``torch.save`` of the same dict, numpy RNG
    state included) resumes with ``weights_only=True`` and gives the same losses."""
    from speechllm.train import Trainer
    from speechllm.train import checkpointing as ckpt

    new, old = tmp_path / "new", tmp_path / "old"
    shutil.copytree(trained, new)
    shutil.copytree(trained, old)
    folder = old / "checkpoints" / "step-00000002"
    torch.save(ckpt.load_state(folder), folder / "trainer_state.pt")
    (folder / "trainer_state.json").unlink()
    (folder / "trainer_state.safetensors").unlink()
    losses = []
    for out in (new, old):
        cfg = tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [rows], out, max_steps=4)
        result = Trainer(cfg).run(resume="auto")
        assert result.step == 4
        losses.append([r["loss"] for r in result.losses])
    assert len(losses[0]) == 2 and losses[0] == losses[1]


# ---------------------------------------------------------------- item 2: remote code

_EVIL = '''
from pathlib import Path

Path({marker!r}).write_text("ran")

from transformers import LlamaConfig, LlamaForCausalLM


class EvilConfig(LlamaConfig):
    model_type = "evil_llama"


class EvilForCausalLM(LlamaForCausalLM):
    config_class = EvilConfig
'''


def _evil_llm(tiny_llm_dir: Path, folder: Path, marker: Path, *, model_type: str = "llama") -> Path:
    """A copy of the tiny LLM whose config.json maps its classes to ``evil.py`` (which writes
    ``marker`` when imported)."""
    shutil.copytree(tiny_llm_dir, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = model_type
    cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilForCausalLM"}
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "evil.py").write_text(_EVIL.format(marker=str(marker)))
    return folder


@pytest.fixture
def modules_cache(tmp_path, monkeypatch):
    """HF copies remote code here before importing it: keep it out of the user's cache."""
    import transformers.dynamic_module_utils as dmu

    monkeypatch.setattr(dmu, "HF_MODULES_CACHE", str(tmp_path / "hf_modules"))
    monkeypatch.delenv("SPEECHLLM_TRUST_REMOTE_CODE", raising=False)
    yield
    from speechllm.utils.remote_code import allow_remote_code

    allow_remote_code(False)


@pytest.fixture(scope="module")
def checkpoint(tiny_whisper_dir, tiny_llm_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("security_ckpt") / "ckpt"
    assert main(["init-model", "--encoder", str(tiny_whisper_dir), "--llm", str(tiny_llm_dir), str(out),
                 "--lora", "dtype=fp32", "lora.r=2"]) == 0
    return out


def _checkpoint_asking_for_remote_code(checkpoint: Path, folder: Path, evil: Path) -> Path:
    shutil.copytree(checkpoint, folder)
    meta = json.loads((folder / "speechllm_config.json").read_text())
    meta["model"]["trust_remote_code"] = True
    meta["model"]["llm"] = str(evil)
    meta["llm"]["ref"] = meta["llm"]["resolved"] = str(evil)
    (folder / "speechllm_config.json").write_text(json.dumps(meta))
    return folder


def test_checkpoint_cannot_enable_remote_code(checkpoint, tiny_llm_dir, tmp_path, capsys, modules_cache):
    from speechllm.models import SpeechLLM
    from speechllm.utils.remote_code import RemoteCodeRefused

    marker = tmp_path / "PWNED"
    evil = _evil_llm(tiny_llm_dir, tmp_path / "evil_llm", marker)
    ckpt = _checkpoint_asking_for_remote_code(checkpoint, tmp_path / "ckpt", evil)
    with pytest.raises(RemoteCodeRefused, match="--trust-remote-code"):
        SpeechLLM.from_pretrained(ckpt)
    # merge only copies files and scales LoRA weights: it loads no model, and its output still asks.
    assert main(["merge", str(ckpt), str(tmp_path / "merged"), "--lambdas", "0.5"]) == 0
    merged = tmp_path / "merged" / "lambda-0.5"
    for folder, argv in ((ckpt, ["infer", "--model", str(ckpt), "--prompt", "hi", "--max-new-tokens", "2"]),
                         (ckpt, ["eval", "--model", str(ckpt), "--bench", "retention", "--base", str(tiny_llm_dir),
                                 "--limit", "1", "--out", str(tmp_path / "e")]),
                         (merged, ["infer", "--model", str(merged), "--prompt", "hi"])):
        capsys.readouterr()
        rc = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2, argv
        assert err == [f"speechllm {argv[0]}: error: {folder / 'speechllm_config.json'}: model.trust_remote_code "
                       f"is true, asking to run the Python code shipped with {evil}; a file cannot allow that, only "
                       "the person running the command can: rerun with --trust-remote-code (or "
                       "SPEECHLLM_TRUST_REMOTE_CODE=1) only if you trust that code"], err
    assert not marker.exists(), "a checkpoint ran its LLM folder's code"


def test_recipe_cannot_enable_remote_code(tiny_llm_dir, tiny_whisper_dir, rows, tmp_path, capsys, modules_cache):
    marker = tmp_path / "PWNED"
    evil = _evil_llm(tiny_llm_dir, tmp_path / "evil_llm", marker)
    recipe = _recipe(tmp_path, evil, tiny_whisper_dir, rows, tmp_path / "run", trust_remote_code=True)
    for argv in (["train", "--config", str(recipe)], ["cache-features", "--config", str(recipe),
                                                      "--out", str(tmp_path / "cache")]):
        rc = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and "--trust-remote-code" in err[0], err
    assert not marker.exists()


def test_model_needing_its_own_code_is_refused_with_how_to_allow(tiny_llm_dir, tmp_path, modules_cache):
    from speechllm.config import ModelConfig
    from speechllm.models.speech_llm import load_llm
    from speechllm.utils.remote_code import RemoteCodeRefused

    marker = tmp_path / "PWNED"
    evil = _evil_llm(tiny_llm_dir, tmp_path / "evil_llm", marker, model_type="evil_llama")
    from speechllm.eval.predictors import load_causal_lm

    for load in (lambda: load_llm(ModelConfig(), str(evil), torch.float32), lambda: load_causal_lm(str(evil))):
        with pytest.raises(RemoteCodeRefused) as info:
            load()
        assert str(info.value) == (f"{evil}: its config.json asks to run the model's own Python code (auto_map); it "
                                   "was not run: rerun with --trust-remote-code (or SPEECHLLM_TRUST_REMOTE_CODE=1) "
                                   "only if you trust that code")
    assert not marker.exists()


def test_the_user_can_allow_remote_code(checkpoint, tiny_llm_dir, tmp_path, monkeypatch, modules_cache, capsys):
    """The same checkpoint loads, and its code runs, once the user says so: the flag, or the
    environment variable."""
    from speechllm.models import SpeechLLM

    marker = tmp_path / "RAN"
    evil = _evil_llm(tiny_llm_dir, tmp_path / "evil_llm", marker)
    ckpt = _checkpoint_asking_for_remote_code(checkpoint, tmp_path / "ckpt", evil)
    assert main(["infer", "--model", str(ckpt), "--prompt", "hi", "--max-new-tokens", "1", "--trust-remote-code"]) == 0
    assert marker.exists()
    from speechllm.utils.remote_code import allow_remote_code

    allow_remote_code(False)
    monkeypatch.setenv("SPEECHLLM_TRUST_REMOTE_CODE", "1")
    marker = tmp_path / "RAN2"  # another folder: Python imports a module once per process
    evil = _evil_llm(tiny_llm_dir, tmp_path / "evil_llm2", marker)
    ckpt = _checkpoint_asking_for_remote_code(checkpoint, tmp_path / "ckpt2", evil)
    model = SpeechLLM.from_pretrained(ckpt)
    assert marker.exists() and type(model.base_causal_lm()).__name__ == "EvilForCausalLM"


def test_trust_remote_code_flag_is_accepted_by_model_loading_commands():
    from speechllm.cli import build_parser, parse_command_line

    parser = build_parser()
    for argv in (["infer", "--model", "m", "--prompt", "p"], ["eval", "--model", "m"], ["train"], ["init-model", "out"],
                 ["generate", "a", "b"], ["cache-features"], ["describe", "a", "b"],
                 ["generate-replay", "out", "--kind", "pseudo"]):
        args = parse_command_line(parser, [*argv, "--trust-remote-code"])
        assert args.trust_remote_code is True, argv


def test_generation_backend_obeys_the_same_rule(tiny_llm_dir, tmp_path, modules_cache):
    """`generate` / `generate-replay` load the LLM through load_backend: a config's request is
    refused, and a folder that needs its own code says how to allow it."""
    from speechllm.generate.backend import load_backend
    from speechllm.utils.remote_code import RemoteCodeRefused

    marker = tmp_path / "PWNED"
    asks = _evil_llm(tiny_llm_dir, tmp_path / "asks", marker)
    with pytest.raises(RemoteCodeRefused, match="model.trust_remote_code is true"):
        load_backend("hf", str(asks), device="cpu", trust_remote_code=True)
    needs = _evil_llm(tiny_llm_dir, tmp_path / "needs", marker, model_type="evil_llama")
    with pytest.raises(RemoteCodeRefused, match=r"asks to run the model's own Python code \(auto_map\); it was not run"):
        load_backend("hf", str(needs), device="cpu")
    assert not marker.exists()


# ---------------------------------------------------------------- recipes cannot name code or key destinations


def test_recipe_cannot_name_a_verifier_to_import_or_an_endpoint_for_the_key(tmp_path, capsys, monkeypatch):
    """generate-replay: a module:function verifier is imported and called, and editor_url receives
    $editor_api_key_env: a shared recipe may set neither; the person running the command may."""
    from speechllm.cli import main

    marker = tmp_path / "ran"
    (tmp_path / "evil_verifier.py").write_text(
        f"open({str(marker)!r}, 'w').write('x')\ndef check(i, r, item):\n    return True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    instructions = tmp_path / "qa.jsonl"
    instructions.write_text('{"id": "q", "instruction": "Hi?", "answer": "Hello"}\n')
    recipe = tmp_path / "r.yaml"
    recipe.write_text("generation:\n  verifier: evil_verifier:check\n")
    rc = main(["generate-replay", str(tmp_path / "out.jsonl"), "--kind", "self-output", "--config", str(recipe),
               "--instructions", str(instructions), "--llm", str(tmp_path / "no-model")])
    err = capsys.readouterr().err
    assert rc == 2 and not marker.exists()
    assert "names Python code to import and call" in err and "pass --verifier on the command line" in err

    recipe.write_text("generation:\n  editor_url: http://127.0.0.1:9/steal\n  editor_api_key_env: AWS_SECRET_ACCESS_KEY\n")
    rc = main(["generate-replay", str(tmp_path / "out2.jsonl"), "--kind", "minimum-change", "--config", str(recipe),
               "--instructions", str(instructions), "--llm", str(tmp_path / "no-model")])
    err = capsys.readouterr().err
    assert rc == 2 and "would receive the API key in $AWS_SECRET_ACCESS_KEY" in err

    # Given on the command line, the same settings pass this check (and fail later, on the missing model).
    from speechllm.cli.generate_replay import refuse_file_named_code_or_endpoint
    from speechllm.config import RunConfig, load_config

    cfg = load_config(RunConfig, str(recipe), [])
    refuse_file_named_code_or_endpoint(cfg, {"replay.editor_url"}, str(recipe))
