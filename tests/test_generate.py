"""Target generation: row format, chat layout, decode loop, resume after SIGKILL, shards, seeds,
bad inputs, faithfulness, and the real SmolLM2 on a few described rows (integration)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from speechllm.config import RunConfig
from speechllm.errors import SpeechLLMError
from speechllm.generate import (
    DESTA2_INSTRUCTION,
    GenerationError,
    PromptPoolError,
    SamplingParams,
    degeneracy,
    faithfulness_summary,
    format_faithfulness_table,
    read_prompt_pool,
)
from speechllm.generate.prompts import instruction_source
from speechllm.utils.jsonl import read_jsonl

REPO = Path(__file__).resolve().parents[1]

QA = [
    ("Is the speaker male or female?", "The speaker is female."),
    ("What is the gender of the speaker?", "The speaker is male."),
    ("How fast is the speaker talking?", "The speaker talks slowly."),
    ("What does the speaker say?", "These days are long gone."),
    ("Name a color.", "Blue."),
    ("What is two plus two?", "Four."),
    ("Describe the voice.", "A high voice."),
    ("What accent does the speaker have?", "A Scottish accent."),
]


def train_chatty_llm(src: Path, out: Path) -> Path:
    """The tiny random Llama at ``src`` trained for 60 steps on eight short chats, so that it
    writes short texts and ends its turns (a random model only emits newlines under greedy
    decoding). About 3 s on one CPU thread."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src)
    texts = [tok.apply_chat_template([{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                                     tokenize=False) for q, a in QA]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(60):
        model(**enc, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def chatty_llm_dir(tiny_llm_dir, tmp_path_factory) -> Path:
    return train_chatty_llm(tiny_llm_dir, tmp_path_factory.mktemp("chatty") / "model")


@pytest.fixture(scope="session")
def chatty_backend(chatty_llm_dir):
    from speechllm.generate import load_backend

    return load_backend("hf", str(chatty_llm_dir), dtype="fp32")


def write_described(path: Path, n: int, *, without_description: tuple[int, ...] = ()) -> list[dict]:
    """``n`` described rows (DeSTA2 descriptions from the describe renderer), labelled genders."""
    from speechllm.describe.renderer import render_description

    sentences = ["These days are long gone.", "The birch canoe slid on the smooth planks.",
                 "Glue the sheet to the dark blue background.", "It's easy to tell the depth of a well."]
    rows = []
    for i in range(n):
        gender = "female" if i % 2 else "male"
        row = {"id": f"utt{i:03d}", "audio": f"wav/utt{i:03d}.wav", "duration": 1.5 + (i % 5),
               "transcript": sentences[i % 4] * (1 + i % 3), "corpus": "test",
               "attributes": {"gender": gender, "speaking_rate": ["slow", "normal", "fast"][i % 3]},
               "provenance": {"gender": "corpus", "speaking_rate": "annotator:speaking_rate"}}
        if i not in without_description:
            row["description"] = render_description(row)
            row["description_template"] = "desta2-v1"
        rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return rows


def config(**settings) -> RunConfig:
    """A RunConfig with each setting put in the section that has it (generation, sampling, replay)."""
    cfg = RunConfig()
    cfg.generation.dtype = "fp32"
    cfg.sampling.max_new_tokens = 12
    cfg.generation.batch_size = 4
    for k, v in settings.items():
        section = next(s for s in (cfg.generation, cfg.sampling, cfg.replay) if k in vars(s))
        setattr(section, k, v)
    return cfg


# ----------------------------------------------------------------------------------------------


def test_rows_keep_input_and_add_prompt_messages_response_generator(tmp_path, chatty_backend):
    from speechllm.generate import generate_targets
    from speechllm.models.chat_layout import prepare_messages, render_text

    src = tmp_path / "described.jsonl"
    rows = write_described(src, 7, without_description=(3,))
    out = tmp_path / "targets.jsonl"
    cfg = config(prompt_pool="builtin:attributes", system_prompt="Answer briefly.")
    summary = generate_targets(src, out, cfg, backend=chatty_backend, progress=False)
    got = {r["id"]: r for r in read_jsonl(out)}
    assert sorted(got) == sorted(r["id"] for r in rows if r["id"] != "utt003")
    assert summary.written == 6 and summary.no_description == 1 and summary.no_description_examples == ["utt003"]
    pool = read_prompt_pool("builtin:attributes")
    for row in rows:
        if row["id"] == "utt003":
            continue
        g = got[row["id"]]
        for key, value in row.items():  # input fields kept unchanged
            assert g[key] == value
        system, user = g["messages"]
        assert system == {"role": "system", "content": "Answer briefly."}
        locator, instruction = user["content"].split("\n", 1)
        assert locator == "<|AUDIO|>" and instruction in pool
        # The LLM read the description exactly where training puts the audio span.
        trained = render_text(chatty_backend.tokenizer, prepare_messages(g["messages"], 1, cfg.model),
                              add_generation_prompt=True)
        assert g["prompt"] == trained.replace("<|AUDIO|>", row["description"])
        assert "<start_audio>" + row["description"] + "<end_audio>\n" + instruction in g["prompt"]
        assert g["finish_reason"] in ("stop", "length")
        assert isinstance(g["response"], str) and g["degenerate"] in (None, "empty", "loop")
        gen = g["generator"]
        assert gen["backend"] == "hf" and gen["dtype"] == "fp32" and gen["revision"].startswith("sha256:")
        assert gen["sampling"] == {"max_new_tokens": 12, "temperature": 0.0, "repetition_penalty": 1.0}
        assert gen["prompt_pool"] == "builtin:attributes" and gen["chat_template"].startswith("sha256:")
    assert summary.truncated == sum(g["finish_reason"] == "length" for g in got.values())
    side = json.loads((tmp_path / "targets.summary.json").read_text())
    assert side["written"] == 6 and side["no_description"] == 1
    faith = json.loads((tmp_path / "targets.faithfulness.json").read_text())
    # gender is a corpus label (counted); speaking_rate comes from an annotator (not counted)
    assert faith["attributes"]["gender"]["labelled"] == 6
    assert faith["attributes"]["speaking_rate"]["labelled"] == 0


def test_context_prompt_is_seen_by_the_generator_but_not_stored(tmp_path, chatty_backend):
    from speechllm.generate import generate_targets

    src = tmp_path / "described.jsonl"
    rows = write_described(src, 2)
    out = tmp_path / "targets.jsonl"
    cfg = config(context_prompt="builtin:describe", system_prompt="Answer briefly.")
    generate_targets(src, out, cfg, backend=chatty_backend, progress=False)
    for row, got in zip(rows, read_jsonl(out)):
        assert got["messages"][0] == {"role": "system", "content": "Answer briefly."}
        note = "The text between <start_audio> and <end_audio> describes an audio clip. Answer from it."
        assert "Answer briefly.\n" + note in got["prompt"] and row["description"] in got["prompt"]
        assert got["generator"]["context_prompt"] == "Answer briefly.\n" + note


def test_no_speech_context_adds_the_answer_form_to_the_generator_only(tmp_path, chatty_backend):
    from speechllm.generate import generate_targets
    from speechllm.generate.prompts import NO_SPEECH_ANSWER_NOTE

    src = tmp_path / "described.jsonl"
    write_described(src, 1)
    out = tmp_path / "targets.jsonl"
    generate_targets(src, out, config(context_prompt="builtin:describe-no-speech"), backend=chatty_backend, progress=False)
    got = read_jsonl(out)[0]
    note = "The text between <start_audio> and <end_audio> describes an audio clip. Answer from it."
    assert got["generator"]["context_prompt"] == f"{note} {NO_SPEECH_ANSWER_NOTE}"
    assert NO_SPEECH_ANSWER_NOTE in got["prompt"]
    assert all(NO_SPEECH_ANSWER_NOTE not in m["content"] for m in got["messages"])  # not trained on
    with pytest.raises(SpeechLLMError, match="unknown 'builtin:describe-nospeech'; built-in: builtin:describe"):
        generate_targets(src, tmp_path / "typo.jsonl", config(context_prompt="builtin:describe-nospeech"),
                         backend=chatty_backend, progress=False)


def test_output_rows_are_in_input_order_although_they_finish_out_of_order(tmp_path, chatty_backend):
    """The contract users join on: targets.jsonl lists rows in the input's order. Decoding sorts
    by prompt length and rows finish at different steps, so without the re-ordering the file
    lists them in finishing order (seen: utt001 before utt000)."""
    from speechllm.generate import generate_targets

    src = tmp_path / "described.jsonl"
    rows = write_described(src, 11)  # transcripts of 1-3 sentences: prompts of different lengths
    out = tmp_path / "targets.jsonl"
    generate_targets(src, out, config(batch_size=2), backend=chatty_backend, progress=False)
    assert [r["id"] for r in read_jsonl(out)] == [r["id"] for r in rows]


def test_in_input_order_yields_each_position_once_as_soon_as_possible():
    from speechllm.generate.targets import in_input_order

    arrivals = [(2, "c"), (0, "a"), (3, "d"), (1, "b"), (4, "e")]
    seen_at = []
    def tracked():
        for n, item in enumerate(arrivals):
            seen_at.append(n)
            yield item
    released = []
    for position, value in in_input_order(tracked()):
        released.append((position, value, seen_at[-1]))
    # 0 is released on the 2nd arrival, 1 on the 4th (with 2 and 3 waiting behind it), 4 last.
    assert released == [(0, "a", 1), (1, "b", 3), (2, "c", 3), (3, "d", 3), (4, "e", 4)]
    with pytest.raises(RuntimeError, match="without position 0"):
        list(in_input_order(iter([(1, "b")])))


def test_prompt_pool_draw_is_per_id_and_seeded():
    src = instruction_source(DESTA2_INSTRUCTION, "builtin:attributes", seed=3)
    draws = [src.instruction_for(f"id{i}") for i in range(40)]
    assert draws == [src.instruction_for(f"id{i}") for i in range(40)]  # same id, same draw
    assert len(set(draws)) > 5
    other = instruction_source(DESTA2_INSTRUCTION, "builtin:attributes", seed=4)
    assert draws != [other.instruction_for(f"id{i}") for i in range(40)]
    assert instruction_source(DESTA2_INSTRUCTION, None, 0).instruction_for("x") == DESTA2_INSTRUCTION


def test_decode_loop_equals_hf_generate_row_by_row(chatty_backend):
    import torch

    b = chatty_backend
    prompts = [b.render([{"role": "user", "content": q * (1 + i % 3)}]) for i, (q, _) in enumerate(QA[:7])]
    params = SamplingParams(max_new_tokens=10)
    batched = b.generate(prompts, params)
    assert {c.finish_reason for c in batched} == {"stop", "length"}  # rows leave the batch at different steps
    # Continuous batching (2 rows at a time, refilled as rows finish) gives the same rows.
    refilled = b.generate_ids([b.encode(p) for p in prompts], params, batch_size=2)
    assert [c.token_ids for c in refilled] == [c.token_ids for c in batched]
    for prompt, got in zip(prompts, batched, strict=True):
        ids = torch.tensor([b.encode(prompt)])
        ref = b.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
                               pad_token_id=b.pad_id)[0, ids.shape[1]:].tolist()
        stop_at = next((i for i, t in enumerate(ref) if t in b.eos_ids), None)
        assert got.token_ids == ref[:stop_at]
        assert got.finish_reason == ("length" if stop_at is None else "stop")


def test_sampling_is_seeded_per_row_independent_of_batch(chatty_backend):
    b = chatty_backend
    prompts = [b.render([{"role": "user", "content": q}]) for q, _ in QA[:4]]
    params = SamplingParams(max_new_tokens=8, temperature=1.0, top_p=0.95, top_k=50, repetition_penalty=1.1)
    a = b.generate(prompts, params, seeds=[11, 12, 13, 14])
    again = b.generate(prompts[::-1], params, seeds=[14, 13, 12, 11])[::-1]
    assert [c.token_ids for c in a] == [c.token_ids for c in again]
    streamed = dict(b.generate_stream(prompts, params, seeds=[11, 12, 13, 14], batch_size=3))
    assert [streamed[i].token_ids for i in range(4)] == [c.token_ids for c in a]
    other = b.generate(prompts, params, seeds=[21, 22, 23, 24])
    assert [c.token_ids for c in a] != [c.token_ids for c in other]


def test_shards_merged_equal_one_run_and_merge_checks_ids(tmp_path, chatty_backend):
    from speechllm.generate import MergeError, generate_targets, merge_shards

    src = tmp_path / "described.jsonl"
    write_described(src, 9)
    cfg = config(temperature=0.8, seed=5)  # sampled, so equality is not trivially all-same text
    generate_targets(src, tmp_path / "full.jsonl", cfg, backend=chatty_backend, progress=False)
    cfg.generation.batch_size = 3
    for i in range(3):
        generate_targets(src, tmp_path / f"s{i}.jsonl", cfg, shard=f"{i}/3", backend=chatty_backend,
                         progress=False, faithfulness=False)
    shards = [tmp_path / f"s{i}.jsonl" for i in range(3)]
    report = merge_shards(shards, tmp_path / "merged.jsonl", expected=src)
    assert report.ok and report.rows == 9
    full = {r["id"]: r["response"] for r in read_jsonl(tmp_path / "full.jsonl")}
    merged = {r["id"]: r["response"] for r in read_jsonl(tmp_path / "merged.jsonl")}
    assert merged == full
    n0 = len(read_jsonl(shards[0]))
    with pytest.raises(MergeError, match=f"duplicate ids: {n0} "):
        merge_shards([shards[0], shards[0]], tmp_path / "bad.jsonl")
    with pytest.raises(MergeError, match="missing ids"):
        merge_shards(shards[:2], tmp_path / "bad.jsonl", expected=src)
    assert not (tmp_path / "bad.jsonl").exists()


def test_resume_after_sigkill_gives_every_id_once(tmp_path, tiny_llm_dir):
    from speechllm.generate import generate_targets

    src = tmp_path / "described.jsonl"
    rows = write_described(src, 120)
    out = tmp_path / "targets.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "speechllm", "generate", str(src), str(out), "--llm", str(tiny_llm_dir),
           "--dtype", "fp32", "--batch-size", "1", "--max-new-tokens", "24", "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lines_before = out.read_bytes().count(b"\n")
    assert 3 <= lines_before < 120, "the run should have been killed part way"
    with open(out, "ab") as f:  # what a kill in the middle of a write leaves behind
        f.write(b'{"id": "utt119", "response": "torn')
    generate_targets(src, out, config(batch_size=16, max_new_tokens=24), llm=str(tiny_llm_dir), progress=False)
    data = out.read_bytes()
    assert data.endswith(b"\n")
    ids = [json.loads(line)["id"] for line in data.splitlines()]
    assert sorted(ids) == sorted(r["id"] for r in rows)


def test_cli_generate_and_merge(tmp_path, chatty_llm_dir, capsys):
    from speechllm.cli import main

    src = tmp_path / "described.jsonl"
    write_described(src, 5)
    for i in range(2):
        rc = main(["generate", str(src), str(tmp_path / f"t{i}.jsonl"), "--llm", str(chatty_llm_dir), "--dtype", "fp32",
                   "--max-new-tokens", "6", "--shard", f"{i}/2", "--instruction", "Is the speaker male or female?",
                   "--no-progress"])
        assert rc == 0
    printed = capsys.readouterr().out
    assert "faithfulness to labelled attributes" in printed and "gender" in printed
    assert main(["generate", "merge", str(tmp_path / "t0.jsonl"), str(tmp_path / "t1.jsonl"),
                 "--output", str(tmp_path / "all.jsonl"), "--expect", str(src)]) == 0
    rows = read_jsonl(tmp_path / "all.jsonl")
    assert len(rows) == 5 and all(r["messages"][-1]["content"].endswith("Is the speaker male or female?") for r in rows)
    assert (tmp_path / "t0.config.yaml").is_file()
    assert main(["generate", str(src), str(tmp_path / "x.jsonl"), "--llm", str(chatty_llm_dir),
                 "--shard", "2/2"]) == 2
    assert "need 0 <= i < N" in capsys.readouterr().err


def test_bad_inputs(tmp_path, chatty_llm_dir, chatty_backend):
    from speechllm.generate import InputRowError, generate_targets, load_backend

    src = tmp_path / "described.jsonl"
    write_described(src, 4, without_description=(2,))
    with pytest.raises(InputRowError, match=r"described.jsonl:3: row 'utt002' has no 'description'"):
        generate_targets(src, tmp_path / "o.jsonl", config(strict=True), backend=chatty_backend, progress=False)
    with pytest.raises(PromptPoolError, match="no such file"):
        generate_targets(src, tmp_path / "o.jsonl", config(prompt_pool=str(tmp_path / "nope.txt")),
                         backend=chatty_backend, progress=False)
    empty_pool = tmp_path / "pool.txt"
    empty_pool.write_text("# only a comment\n\n")
    with pytest.raises(PromptPoolError, match="holds no instruction"):
        read_prompt_pool(empty_pool)
    with pytest.raises(PromptPoolError, match="builtin:attributes"):
        read_prompt_pool("builtin:nope")
    with pytest.raises(SpeechLLMError, match="need 0 <= i < N"):
        generate_targets(src, tmp_path / "o.jsonl", config(), shard="3/3", backend=chatty_backend)
    dup = tmp_path / "dup.jsonl"
    dup.write_text(src.read_text().splitlines()[0] + "\n" + src.read_text().splitlines()[0] + "\n")
    with pytest.raises(InputRowError, match="dup.jsonl:2: duplicate id 'utt000'"):
        generate_targets(dup, tmp_path / "o.jsonl", config(), backend=chatty_backend)
    # An LLM without a chat template: a clear error, and --chat-template fixes it.
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(chatty_llm_dir, bare)
    cfg_file = bare / "tokenizer_config.json"
    tok_cfg = json.loads(cfg_file.read_text())
    tok_cfg.pop("chat_template", None)
    cfg_file.write_text(json.dumps(tok_cfg))
    for extra in bare.glob("chat_template.*"):
        extra.unlink()
    with pytest.raises(GenerationError, match="has no chat template; pass --chat-template FILE"):
        load_backend("hf", str(bare), dtype="fp32")
    from speechllm.testing.tiny import CHATML_TEMPLATE

    template = tmp_path / "chatml.jinja"
    template.write_text(CHATML_TEMPLATE)
    assert load_backend("hf", str(bare), dtype="fp32", chat_template=str(template)).render(
        [{"role": "user", "content": "hi"}]).endswith("<|im_start|>assistant\n")
    # vLLM is optional: a clear install message, not an ImportError
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(GenerationError, match=r"pip install 'speechllm\[vllm\]'"):
            load_backend("vllm", str(chatty_llm_dir))


def test_drop_degenerate_moves_rows_aside_and_resume_counts_them(tmp_path, tiny_llm_dir):
    from speechllm.generate import generate_targets

    src = tmp_path / "described.jsonl"
    write_described(src, 4)
    out = tmp_path / "t.jsonl"
    # the random tiny model answers with newlines only: every response is empty
    s = generate_targets(src, out, config(drop_degenerate=True, max_new_tokens=4), llm=str(tiny_llm_dir), progress=False)
    assert s.written == 0 and s.dropped == {"empty": 4} and s.degenerate == {"empty": 4}
    assert len(read_jsonl(tmp_path / "t.dropped.jsonl")) == 4 and out.read_text() == ""
    again = generate_targets(src, out, config(drop_degenerate=True), llm=str(tiny_llm_dir), progress=False)
    assert again.already_done == 4 and again.written == 0


def test_degeneracy():
    assert degeneracy("   ") == "empty"
    assert degeneracy("The speaker is male. " * 5) == "loop"
    assert degeneracy("ha" * 40) == "loop"
    assert degeneracy("The speaker is a woman with a calm, low voice. She speaks slowly.") is None
    assert degeneracy("no, no, no") is None


def test_faithfulness_reads_accent_is_english_as_british():
    from speechllm.generate.faithfulness import faithfulness_summary

    rows = [{"id": "a", "attributes": {"accent": "British"}, "provenance": {"accent": "corpus"},
             "response": "The speaker is female, and the accent is English."},
            {"id": "b", "attributes": {"accent": "British"}, "provenance": {"accent": "corpus"},
             "response": "The speaker speaks English."}]
    assert faithfulness_summary(rows)["attributes"]["accent"]["states"] == 1


def test_faithfulness_summary_counts_statements_and_contradictions():
    def row(attrs, response, prov="corpus", transcript=None):
        return {"attributes": attrs, "provenance": {k: prov for k in attrs}, "response": response,
                "transcript": transcript}

    rows = [
        row({"gender": "female"}, "The speaker is female."),
        row({"gender": "Female"}, "A man is speaking."),                      # contradicts
        row({"gender": "female"}, 'She says "he went home".', transcript=None),  # quote ignored
        row({"gender": "male"}, "The speaker is a male with a deep voice."),
        row({"gender": "male"}, "A song from 1975 by a band."),                # neither
        row({"gender": "male"}, "The speaker is female.", prov="annotator:gender"),  # not counted
        row({"accent": "Scottish English", "speaking_rate": "slow"}, "A Scottish man speaks quickly."),
        row({"emotion": "happy", "pitch": "high"}, "She sounds sad, with a high-pitched voice."),
        row({"volume": "quiet"}, "The voice is loud."),
    ]
    s = faithfulness_summary(rows)
    g = s["attributes"]["gender"]
    assert (g["labelled"], g["states"], g["contradicts"]) == (5, 3, 1)
    assert g["values"]["female"] == {"labelled": 3, "states": 2, "contradicts": 1,
                                     "states_share": 0.6667, "contradicts_share": 0.3333}
    assert s["attributes"]["accent"]["states"] == 1 and s["attributes"]["accent"]["contradicts"] == 0
    assert s["attributes"]["speaking_rate"]["contradicts"] == 1
    assert s["attributes"]["emotion"]["contradicts"] == 1 and s["attributes"]["pitch"]["states"] == 1
    assert s["attributes"]["volume"]["contradicts"] == 1 and s["attributes"]["volume"]["states"] == 0
    table = format_faithfulness_table(s)
    assert "gender" in table and "60.0%" in table


# ----------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_smollm2_names_the_labelled_gender(tmp_path, offline_smollm2):
    from speechllm.generate import description_system_prompt, generate_targets

    question = "What is the gender of the speaker?"
    assert question in read_prompt_pool("builtin:attributes")
    src = tmp_path / "described.jsonl"
    rows = write_described(src, 6)
    cfg = config(instruction=question, max_new_tokens=40, batch_size=6, dtype="auto")
    cfg.generation.system_prompt = description_system_prompt(cfg.model)
    summary = generate_targets(src, tmp_path / "t.jsonl", cfg, llm=str(offline_smollm2), progress=False)
    out = read_jsonl(tmp_path / "t.jsonl")
    assert summary.written == len(rows) == len(out)
    assert all(r["response"].strip() for r in out)
    faith = faithfulness_summary(out)["attributes"]["gender"]
    assert faith["labelled"] == 6 and faith["states"] >= 4, [r["response"] for r in out]


def test_an_output_made_with_other_settings_is_not_continued(tmp_path, chatty_backend):
    from speechllm.generate import generate_targets

    src = tmp_path / "described.jsonl"
    write_described(src, 4)
    out = tmp_path / "targets.jsonl"
    generate_targets(src, out, config(prompt_pool="builtin:attributes"), backend=chatty_backend, progress=False,
                     faithfulness=False)
    before = out.read_text()
    # The same settings: a finished output is a no-op.
    again = generate_targets(src, out, config(prompt_pool="builtin:attributes"), backend=chatty_backend,
                             progress=False, faithfulness=False)
    assert again.written == 0 and out.read_text() == before
    # Another pool, or other sampling: refused, naming what changed; the file is untouched.
    with pytest.raises(SpeechLLMError, match="prompt_pool.*builtin:attributes.*builtin:speaker"):
        generate_targets(src, out, config(prompt_pool="builtin:speaker"), backend=chatty_backend, progress=False)
    with pytest.raises(SpeechLLMError, match="sampling"):
        generate_targets(src, out, config(prompt_pool="builtin:attributes", max_new_tokens=5),
                         backend=chatty_backend, progress=False)
    assert out.read_text() == before


def test_slot_decoder_equals_the_merging_decoder(chatty_backend, monkeypatch):
    """The slot-cache decoder (shared-prefix prefill, in-place KV writes, slots refilled as rows
    finish, cache re-laid out every 2 steps here) gives the rows of the cat-and-merge decoder."""
    from speechllm.generate import hf_backend

    b = chatty_backend
    assert b.slot_cache  # a plain Llama on CPU takes the slot path
    system = {"role": "system", "content": "You answer questions about capitals briefly and correctly."}
    prompts = [b.render([system, {"role": "user", "content": q * (1 + i % 3)}]) for i, (q, _) in enumerate(QA[:7])]
    ids = [b.encode(p) for p in prompts]
    decoder = hf_backend._SlotDecoder(b, SamplingParams(max_new_tokens=12), None, None)
    prefix_len, _ = decoder._shared_prefix(ids)
    assert prefix_len >= hf_backend._SlotDecoder.MIN_SHARED_PREFIX  # the system turn is prefilled once
    monkeypatch.setattr(hf_backend._SlotDecoder, "CACHE_CHUNK", 2)
    greedy = SamplingParams(max_new_tokens=12)
    sampled = SamplingParams(max_new_tokens=12, temperature=1.0, top_k=20, repetition_penalty=1.3)
    seeds = list(range(100, 107))
    slot_rows = [b.generate_ids(ids, p, seeds=seeds, batch_size=3) for p in (greedy, sampled)]
    monkeypatch.setattr(b, "slot_cache", False)
    merged_rows = [b.generate_ids(ids, p, seeds=seeds, batch_size=3) for p in (greedy, sampled)]
    for got, want in zip(slot_rows, merged_rows, strict=True):
        assert [c.token_ids for c in got] == [c.token_ids for c in want]
        assert [c.finish_reason for c in got] == [c.finish_reason for c in want]
    assert {c.finish_reason for c in slot_rows[0]} == {"stop", "length"}
    monkeypatch.setattr(b, "slot_cache", True)
    assert b.generate_ids([], greedy) == []


def test_grouped_decode_attention_matches_sdpa():
    import torch

    from speechllm.models.decode_attention import grouped_decode_attention

    g = torch.Generator().manual_seed(0)
    q = torch.randn(4, 6, 1, 16, generator=g)
    k, v = torch.randn(4, 2, 9, 16, generator=g), torch.randn(4, 2, 9, 16, generator=g)
    mask = torch.ones(4, 1, 1, 9, dtype=torch.bool)
    mask[0, ..., :5] = False  # left padding
    mask[1, ..., 2:4] = False  # a gap (shared prefix, then a shorter row's own suffix)
    got, _ = grouped_decode_attention(torch.nn.Module(), q, k, v, mask, scaling=0.25)
    want = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(3, dim=1), v.repeat_interleave(3, dim=1), attn_mask=mask, scale=0.25)
    assert got.shape == (4, 1, 6, 16)
    torch.testing.assert_close(got, want.transpose(1, 2), rtol=1e-5, atol=1e-5)
