"""Text-only replay: the pre-query template, the four kinds, verifiers, editors, resume, bad input."""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from test_generate import QA, train_chatty_llm

from speechllm.config import RunConfig
from speechllm.generate.replay import (
    EDIT_PROMPT,
    ReplayError,
    generate_replay,
    load_verifier,
    pre_query_template,
    read_instructions,
)
from speechllm.utils.jsonl import read_jsonl


@pytest.fixture(scope="module")
def chatty_dir(tiny_llm_dir, tmp_path_factory) -> Path:
    return train_chatty_llm(tiny_llm_dir, tmp_path_factory.mktemp("chatty_replay") / "model")


@pytest.fixture(scope="module")
def backend(chatty_dir):
    from speechllm.generate import load_backend

    return load_backend("hf", str(chatty_dir), dtype="fp32")


@pytest.fixture()
def qa_file(tmp_path) -> Path:
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "instruction": q, "answer": a}) + "\n"
                            for i, (q, a) in enumerate(QA[:5])))
    return path


def config(**settings) -> RunConfig:
    """A RunConfig with each setting put in the section that has it (generation, sampling, replay)."""
    cfg = RunConfig()
    cfg.generation.dtype = "fp32"
    cfg.sampling.max_new_tokens = 10
    cfg.generation.batch_size = 4
    for k, v in settings.items():
        section = next(s for s in (cfg.generation, cfg.sampling, cfg.replay) if k in vars(s))
        setattr(section, k, v)
    return cfg


def assert_text_only(rows, kind, backend):
    for r in rows:
        assert r["kind"] == kind and "audio" not in r and "description" not in r
        assert r["messages"][-1]["role"] == "user" and "<|AUDIO|>" not in json.dumps(r["messages"])
        assert isinstance(r["response"], str) and r["response"].strip()
        assert r["finish_reason"] in ("stop", "length") and r["generator"]["backend"] == "hf"


def test_pre_query_template_is_cut_at_the_user_message(backend):
    t = pre_query_template(backend)
    assert t.prefix == "<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n<|im_start|>user\n"
    assert t.turn_end == "<|im_end|>\n"
    assert t.stop_token_ids == (backend.tokenizer.convert_tokens_to_ids("<|im_end|>"),)
    with_system = pre_query_template(backend, "Be brief.")
    assert with_system.prefix == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"


def test_pseudo_replay_every_attempt_once_and_resume(tmp_path, backend):
    out = tmp_path / "replay.jsonl"
    s = generate_replay(out, "pseudo", config(), num=8, backend=backend, progress=False)
    rows = read_jsonl(out)
    rejected = read_jsonl(tmp_path / "replay.rejected.jsonl")
    ids = [r["id"] for r in rows] + [r["id"] for r in rejected]
    assert sorted(ids) == [f"pseudo-{i:06d}" for i in range(8)]
    assert s.written == len(rows) >= 1 and sum(s.rejected.values()) == len(rejected)
    assert_text_only(rows, "pseudo", backend)
    for r in rows:
        assert r["messages"] == [{"role": "user", "content": r["instruction"]}]
        assert r["prompt"] == backend.render(r["messages"])
    instructions = [r["instruction"].lower() for r in rows]
    assert len(set(instructions)) == len(instructions)  # duplicates are rejected
    assert all(r["reason"] in ("empty instruction", "unfinished instruction", "duplicate instruction")
               for r in rejected)
    again = generate_replay(out, "pseudo", config(), num=10, backend=backend, progress=False)
    assert again.already_done == 8
    ids = [r["id"] for r in read_jsonl(out)] + [r["id"] for r in read_jsonl(tmp_path / "replay.rejected.jsonl")]
    assert sorted(ids) == [f"pseudo-{i:06d}" for i in range(10)]


def test_self_output_keeps_first_sample_the_verifier_accepts(tmp_path, backend, qa_file, monkeypatch):
    (tmp_path / "my_checks.py").write_text(
        "def short_answer(instruction, response, item):\n    return len(response.split()) <= 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "self.jsonl"
    cfg = config(samples=3, temperature=0.9, verifier="my_checks:short_answer")
    generate_replay(out, "self-output", cfg, instructions=qa_file, backend=backend, progress=False)
    rows = read_jsonl(out)
    rejected = read_jsonl(tmp_path / "self.rejected.jsonl")
    assert sorted(r["id"] for r in rows + rejected) == [f"q{i}" for i in range(5)]
    assert_text_only(rows, "self-output", backend)
    for r in rows:
        assert len(r["response"].split()) <= 3 and 0 <= r["accepted_sample"] < 3
        assert r["generator"]["samples"] == 3 and r["generator"]["verifier"] == "my_checks:short_answer"
    assert all(r["reason"] == "no sample accepted" for r in rejected)
    # Same seed: same rows.
    out2 = tmp_path / "self2.jsonl"
    generate_replay(out2, "self-output", cfg, instructions=qa_file, backend=backend, progress=False)
    assert [r["response"] for r in read_jsonl(out2)] == [r["response"] for r in rows]


def test_verifiers():
    item = {"id": "a", "answer": "Four."}
    assert load_verifier("exact")("q", "four", item) and not load_verifier("exact")("q", "It is four.", item)
    assert load_verifier("contains")("q", "It is four.", item) and not load_verifier("contains")("q", "fourteen", item)
    assert load_verifier("regex:^\\d+$")("q", "42", item) and not load_verifier("regex:^\\d+$")("q", "x42", item)
    assert load_verifier(None) is None
    with pytest.raises(ReplayError, match="expected exact, contains"):
        load_verifier("print(1)")
    with pytest.raises(ReplayError, match="cannot import"):
        load_verifier("no_such_module_xyz:check")
    with pytest.raises(ReplayError, match="bad regular expression"):
        load_verifier("regex:(")
    with pytest.raises(ReplayError, match="needs an 'answer'"):
        load_verifier("exact")("q", "x", {"id": "b", "answer": None})


def test_paraphrase_rewrites_gold_answers(tmp_path, backend, qa_file):
    out = tmp_path / "para.jsonl"
    generate_replay(out, "paraphrase", config(), instructions=qa_file, backend=backend, progress=False)
    rows = read_jsonl(out)
    rejected = read_jsonl(tmp_path / "para.rejected.jsonl")
    assert sorted(r["id"] for r in rows + rejected) == [f"q{i}" for i in range(5)] and rows
    assert_text_only(rows, "paraphrase", backend)
    for r in rows:
        assert r["messages"] == [{"role": "user", "content": r["instruction"]}]
        assert r["gold_answer"] == r["answer"] and f"Answer: {r['answer']}" in r["prompt"]
    bad = tmp_path / "noanswer.txt"
    bad.write_text("What is two plus two?\n")
    with pytest.raises(ReplayError, match="noanswer.txt:1: paraphrase replay needs an 'answer'"):
        generate_replay(tmp_path / "x.jsonl", "paraphrase", config(), instructions=bad, backend=backend)


def test_minimum_change_with_the_tiny_model_as_editor(tmp_path, backend, qa_file):
    from speechllm.generate.editor import LocalEditor

    out = tmp_path / "mc.jsonl"
    editor = LocalEditor(backend, max_new_tokens=10)
    generate_replay(out, "minimum-change", config(), instructions=qa_file, backend=backend, editor=editor,
                    progress=False)
    rows = read_jsonl(out)
    rejected = read_jsonl(tmp_path / "mc.rejected.jsonl")
    assert sorted(r["id"] for r in rows + rejected) == [f"q{i}" for i in range(5)] and rows
    assert_text_only(rows, "minimum-change", backend)
    for r in rows:
        base = backend.generate([r["prompt"]], editor.params)[0].text
        assert r["base_response"] == base
        request = EDIT_PROMPT.format(instruction=r["instruction"], answer=base,
                                     reference=f"Reference answer: {r['answer']}\n\n")
        assert r["response"] == editor.edit([request])[0].strip()
        assert r["generator"]["editor"]["type"] == "local"


class _EndpointHandler(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint serving the tiny model (greedy)."""

    backend = None
    requests: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        from speechllm.generate import SamplingParams

        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, self.headers.get("Authorization"), body))
        prompt = self.backend.render(body["messages"])
        text = self.backend.generate([prompt], SamplingParams(max_new_tokens=body["max_tokens"]))[0].text
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_minimum_change_through_an_openai_compatible_endpoint(tmp_path, backend, qa_file, monkeypatch):
    _EndpointHandler.backend = backend
    _EndpointHandler.requests = []
    server = HTTPServer(("127.0.0.1", 0), _EndpointHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("MY_KEY", "secret")
        cfg = config(editor_url=f"http://127.0.0.1:{server.server_port}/v1", editor_model="tiny",
                     editor_api_key_env="MY_KEY")
        out = tmp_path / "mc.jsonl"
        generate_replay(out, "minimum-change", cfg, instructions=qa_file, backend=backend, progress=False)
    finally:
        server.shutdown()
    rows = read_jsonl(out)
    assert len(_EndpointHandler.requests) == 5
    path, auth, body = _EndpointHandler.requests[0]
    assert path == "/v1/chat/completions" and auth == "Bearer secret" and body["model"] == "tiny"
    assert body["temperature"] == 0 and body["messages"][0]["content"].startswith("Below are a question")
    assert rows and rows[0]["generator"]["editor"] == {"type": "endpoint", "url": cfg.replay.editor_url
                                                       + "/chat/completions", "model": "tiny",
                                                       "temperature": 0, "max_tokens": 10}


def test_cli_generate_replay_and_bad_input(tmp_path, chatty_dir, qa_file, capsys):
    from speechllm.cli import main

    out = tmp_path / "mc.jsonl"
    rc = main(["generate-replay", str(out), "--llm", str(chatty_dir), "--kind", "minimum-change",
               "--instructions", str(qa_file), "--editor", str(chatty_dir), "--dtype", "fp32",
               "--max-new-tokens", "8", "--no-progress"])
    assert rc == 0 and "minimum-change:" in capsys.readouterr().out
    assert Counter(r["kind"] for r in read_jsonl(out)) == {"minimum-change": len(read_jsonl(out))}
    assert main(["generate-replay", str(tmp_path / "p.jsonl"), "--llm", str(chatty_dir), "--kind", "pseudo"]) == 2
    assert "--num N" in capsys.readouterr().err
    assert main(["generate-replay", str(tmp_path / "s.jsonl"), "--llm", str(chatty_dir), "--kind", "self-output",
                 "--instructions", str(qa_file), "--samples", "2"]) == 2
    assert "needs sampling" in capsys.readouterr().err
    assert main(["generate-replay", str(tmp_path / "m.jsonl"), "--llm", str(chatty_dir), "--kind", "minimum-change",
                 "--instructions", str(qa_file)]) == 2
    assert "needs an editor" in capsys.readouterr().err
    assert main(["generate-replay", str(tmp_path / "m.jsonl"), "--kind", "paraphrase"]) == 2
    assert "needs instructions" in capsys.readouterr().err


def test_read_instructions_formats(tmp_path):
    txt = tmp_path / "inst.txt"
    txt.write_text("# comment\nName a color.\n\nWhat is two plus two?\n")
    items = read_instructions(txt)
    assert [(i["id"], i["instruction"], i["answer"]) for i in items] == [
        ("inst-000002", "Name a color.", None), ("inst-000004", "What is two plus two?", None)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "x"}\n')
    with pytest.raises(ReplayError, match="bad.jsonl:1: no instruction"):
        read_instructions(bad)
