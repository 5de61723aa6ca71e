"""The editor of minimum-change replay: a local HF model or an OpenAI-compatible endpoint.

Both take finished edit requests (plain user messages) and return the edited answers, greedily.
The endpoint is called with the standard library (``urllib``); its API key is read from the
environment variable the config names, never from a file or the command line.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any, Protocol

from speechllm.generate.backend import GenerationBackend, GenerationError, SamplingParams


class Editor(Protocol):
    def edit(self, requests: list[str]) -> list[str]:
        """One edited answer per request (a user message holding question + answer)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What edited, for the rows' ``generator`` record."""
        ...


class LocalEditor:
    """An editor backed by a generation backend (its own chat template, greedy decoding)."""

    def __init__(self, backend: GenerationBackend, *, max_new_tokens: int = 256, batch_size: int = 16):
        self.backend = backend
        self.params = SamplingParams(max_new_tokens=max_new_tokens)
        self.batch_size = batch_size

    def edit(self, requests: list[str]) -> list[str]:
        prompts = [self.backend.render([{"role": "user", "content": r}]) for r in requests]
        out: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            out += [c.text for c in self.backend.generate(prompts[start:start + self.batch_size], self.params)]
        return out

    def describe(self) -> dict[str, Any]:
        return {"type": "local", **self.backend.describe(), "sampling": self.params.to_dict()}


class EndpointEditor:
    """An OpenAI-compatible ``/chat/completions`` endpoint (temperature 0)."""

    def __init__(self, url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY",
                 max_tokens: int = 256, timeout: float = 120.0):
        self.url = url.rstrip("/")
        if not self.url.endswith("/chat/completions"):
            self.url += "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.max_tokens = max_tokens
        self.timeout = timeout

    def _one(self, request: str) -> str:
        body = json.dumps({"model": self.model, "temperature": 0, "max_tokens": self.max_tokens,
                           "messages": [{"role": "user", "content": request}]}).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                payload = json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            raise GenerationError(f"editor endpoint {self.url}: HTTP {e.code} ({e.reason}); check the URL, "
                                  f"the model name and ${self.api_key_env}") from None
        except (urllib.error.URLError, TimeoutError) as e:
            raise GenerationError(f"editor endpoint {self.url}: unreachable ({e})") from None
        try:
            return str(payload["choices"][0]["message"]["content"] or "")
        except (KeyError, IndexError, TypeError):
            raise GenerationError(f"editor endpoint {self.url}: unexpected reply (no choices[0].message.content)") from None

    def edit(self, requests: list[str]) -> list[str]:
        return [self._one(r) for r in requests]

    def describe(self) -> dict[str, Any]:
        return {"type": "endpoint", "url": self.url, "model": self.model, "temperature": 0,
                "max_tokens": self.max_tokens}


def load_editor(replay: Any, *, max_new_tokens: int = 256, batch_size: int = 64, dtype: str = "auto",
                device: str = "auto") -> Editor:
    """The editor named by a :class:`~speechllm.config.schema.ReplayConfig`: ``editor_url``
    (+ ``editor_model``) or ``editor``; ``max_new_tokens`` (``sampling``) bounds an edit."""
    if replay.editor_url:
        if not replay.editor_model:
            raise GenerationError("an editor endpoint needs a model name: --editor-model NAME")
        return EndpointEditor(replay.editor_url, replay.editor_model, api_key_env=replay.editor_api_key_env,
                              max_tokens=max_new_tokens)
    if replay.editor:
        from speechllm.generate.backend import load_backend

        backend = load_backend("hf", replay.editor, dtype=dtype, device=device)
        return LocalEditor(backend, max_new_tokens=max_new_tokens, batch_size=batch_size)
    raise GenerationError("minimum-change replay needs an editor: --editor MODEL (a stronger local model) "
                          "or --editor-url URL --editor-model NAME (an OpenAI-compatible endpoint)")
