"""Model backends for the probe: `lab:DIR`, `hf:DIR` and `openai:URL`.

Every backend answers `Request`s with greedy (temperature 0) completions and the same stop rule:
an answer ends at the end-of-sequence token, at the output budget, or where the decoded text first
contains a stop string (the text is cut there; the token that completed the stop string counts
as an output token, as servers count it). lab and hf apply that rule to the same token ids, so an
exported lab model gets the same answers, token for token, as its checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from moelab.config import run_key
from moelab.errors import MoelabError
from moelab.models.params import unused_expert_params


@dataclass(frozen=True)
class Request:
    prompt: str  # a raw completion prompt, or the user message in chat mode
    max_tokens: int
    stop: tuple[str, ...] = ()
    system: str | None = None  # used in chat mode only

    def messages(self) -> list[dict]:
        """The request as chat messages: the system prompt (if any), then the user's."""
        return ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": self.prompt}]


@dataclass
class Completion:
    text: str
    output_tokens: int
    prompt_tokens: int | None = None
    reasoning_tokens: int | None = None  # where the backend reports them
    error: str | None = None  # set when the backend failed for this request (after retries)


OnDone = Callable[[int, Completion], None]


class Backend(Protocol):
    spec: str
    chat: bool  # whether prompts are sent as chat messages (with a system prompt)
    device: str  # where answers are computed: a torch device, or "remote server"

    def settings(self) -> dict:
        """Everything about the backend that can change its answers (never a secret): a probe
        resumes into a folder only when these are the same."""

    def complete(self, requests: list[Request], on_done: OnDone) -> None:
        """Answer every request, calling `on_done(index, completion)` as each one finishes."""

    def describe(self) -> dict:
        """What is known about the model: p_total, p_active, architecture, open_weights (None if unknown)."""


def cut_text_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """`text` up to its first stop string, and whether it had one."""
    hits = [text.find(s) for s in stop if s in text]
    return (text[: min(hits)], True) if hits else (text, False)


def cut_at_stop(generated: list[int], eos: set[int], decode: Callable[[list[int]], str],
                stop: tuple[str, ...]) -> tuple[str, int, bool]:
    """The answer text in `generated` token ids, how many tokens it used, and whether it ended."""
    for n in range(1, len(generated) + 1):
        if generated[n - 1] in eos:
            return decode(generated[: n - 1]).strip(), n, True
        text, stopped = cut_text_at_stop(decode(generated[:n]), stop)
        if stopped:
            return text.strip(), n, True
    return decode(generated).strip(), len(generated), False


def _groups(requests: list[Request], lengths: list[int], batch_size: int) -> list[list[int]]:
    """Request indices batched by equal prompt length, budget and stop strings (no padding)."""
    by_key = defaultdict(list)
    for i, r in enumerate(requests):
        by_key[(lengths[i], r.max_tokens, r.stop)].append(i)
    return [idx[s:s + batch_size] for idx in by_key.values() for s in range(0, len(idx), batch_size)]


class LabBackend:
    """A moelab run folder; prompts are whitespace-separated words of its knowledge base's vocabulary."""

    chat = False

    def __init__(self, run_dir: str | Path, device: str = "cpu", batch_size: int = 64):
        from moelab.runs.weights import load_run

        self.spec, self.run_dir = f"lab:{run_dir}", Path(run_dir)
        self.cfg, self.kb, self.model = load_run(run_dir, device)
        self.device, self.batch_size = str(torch.device(device)), batch_size
        self.special = {self.kb.vocab.bos, self.kb.vocab.eos}

    def settings(self) -> dict:
        return {"kind": "lab", "run_dir": str(self.run_dir), "run_key": run_key(self.cfg),
                "weights_sha256": file_sha256(self.run_dir / "model.safetensors"), "device": self.device}

    def encode(self, prompt: str) -> list[int]:
        words = prompt.split()
        unknown = [w for w in words if w not in self.kb.vocab.ids]
        if unknown:
            raise MoelabError(f"{self.spec}: word {unknown[0]!r} is not in the model's vocabulary; a lab "
                              "model answers in its training format (generate a task with kb:RUN_DIR)")
        return self.kb.vocab.encode(words)

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.kb.vocab.decode([i for i in ids if i not in self.special]))

    @torch.no_grad()
    def complete(self, requests: list[Request], on_done: OnDone) -> None:
        encoded = [self.encode(r.prompt) for r in requests]
        eos = {self.kb.vocab.eos}
        for group in _groups(requests, [len(e) for e in encoded], self.batch_size):
            r = requests[group[0]]
            tokens = torch.tensor([encoded[i] for i in group], device=self.device)
            prompt_len = tokens.shape[1]
            tokens, _ = self.model.generate(tokens, r.max_tokens, stop=lambda new, r=r: all(
                cut_at_stop(row, eos, self.decode, r.stop)[2] for row in new.tolist()))
            for i, row in zip(group, tokens[:, prompt_len:].tolist()):
                text, used, _ = cut_at_stop(row, eos, self.decode, r.stop)
                on_done(i, Completion(text, used, prompt_tokens=prompt_len))

    def describe(self) -> dict:
        from moelab.runs.folder import read_metrics

        metrics_path = self.run_dir / "metrics.json"
        m = read_metrics(metrics_path) if metrics_path.exists() else {}
        return {"model": self.run_dir.name, "p_total": m.get("p_total"), "p_active": m.get("p_active"),
                "architecture": "moe" if self.cfg.model.is_moe else "dense", "open_weights": True}


class HFBackend:
    """A local transformers model folder. Never downloads: a missing folder is an error."""

    def __init__(self, folder: str | Path, device: str = "cpu", batch_size: int = 16):
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise MoelabError("the hf: backend needs transformers: pip install 'moelab[hf]'") from None
        self.spec, self.folder = f"hf:{folder}", Path(folder)
        if not (self.folder / "config.json").exists():
            raise MoelabError(f"{self.spec}: no config.json there; hf: takes a local model folder "
                              "(moelab never downloads models)")
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(self.folder, local_files_only=True).to(device).eval()
        self.chat = bool(getattr(self.tokenizer, "chat_template", None))
        self.device, self.batch_size = str(torch.device(device)), batch_size
        eos = self.model.generation_config.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos]) - {None}

    def settings(self) -> dict:
        return {"kind": "hf", "folder": str(self.folder), "config_sha256": file_sha256(self.folder / "config.json"),
                "chat_template": self.chat, "device": self.device}

    def encode(self, r: Request) -> list[int]:
        if not self.chat:
            return self.tokenizer(r.prompt)["input_ids"]
        text = self.tokenizer.apply_chat_template(r.messages(), add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _stopping(self, prompt_len: int, stop: tuple[str, ...]):
        """Our stop rule as a transformers stopping criterion. (transformers' own stop strings
        tokenize probe text, which a word-level tokenizer without an unknown token cannot do.)"""
        from transformers import StoppingCriteria

        backend = self

        class StopRule(StoppingCriteria):
            def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
                return torch.tensor([cut_at_stop(row[prompt_len:].tolist(), backend.eos, backend.decode, stop)[2]
                                     for row in input_ids], device=input_ids.device)

        return StopRule()

    @torch.no_grad()
    def complete(self, requests: list[Request], on_done: OnDone) -> None:
        encoded = [self.encode(r) for r in requests]
        pad = next(iter(self.eos)) if self.eos else 0
        for group in _groups(requests, [len(e) for e in encoded], self.batch_size):
            r = requests[group[0]]
            inputs = torch.tensor([encoded[i] for i in group], device=self.device)
            out = self.model.generate(inputs, attention_mask=torch.ones_like(inputs), do_sample=False,
                                      max_new_tokens=r.max_tokens, pad_token_id=pad,
                                      stopping_criteria=[self._stopping(inputs.shape[1], r.stop)])
            for i, row in zip(group, out[:, inputs.shape[1]:].tolist()):
                text, used, _ = cut_at_stop(row, self.eos, self.decode, r.stop)
                on_done(i, Completion(text, used, prompt_tokens=inputs.shape[1]))

    def describe(self) -> dict:
        config = self.model.config
        total = sum(p.numel() for p in self.model.parameters())
        n_experts = getattr(config, "num_experts", None) or getattr(config, "n_routed_experts", None)
        top_k = getattr(config, "num_experts_per_tok", None)
        active = total
        if n_experts and top_k:  # a token uses k of the E routed experts
            expert = sum(p.numel() for name, p in self.model.named_parameters() if ".experts." in name)
            active = total - unused_expert_params(expert, n_experts, top_k)
        return {"model": self.folder.name, "p_total": total, "p_active": active,
                "architecture": "moe" if n_experts else "dense", "open_weights": True}


class OpenAIBackend:
    """An OpenAI-compatible HTTP server (vLLM, llama.cpp server, `transformers serve`, hosted APIs).

    The API key is read from the environment variable `key_env` (none is sent if it is unset) and
    never appears in errors, logs or results. Requests run `concurrency` at a time, each with a
    timeout, retried with exponential backoff on connection errors, 408, 429 and 5xx.
    Stop strings are always applied to the returned text; they are also sent to the server only
    with `server_stop` (some servers cannot take them: the OpenAI API takes at most 4, and
    `transformers serve` fails on them with word-level tokenizers), so without it a completion
    runs to its output budget or end-of-sequence and its reported tokens count all of that.
    """

    RETRYABLE = {408, 409, 429, 500, 502, 503, 504}

    def __init__(self, base_url: str, model: str | None, api: str = "chat", key_env: str = "OPENAI_API_KEY",
                 timeout: float = 120.0, retries: int = 4, concurrency: int = 4, backoff: float = 1.0,
                 server_stop: bool = False):
        if api not in ("chat", "completions"):
            raise MoelabError(f"--api must be 'chat' or 'completions', not {api!r}")
        if not base_url.startswith(("http://", "https://")):
            raise MoelabError(f"openai:{base_url}: the URL must start with http:// or https://")
        self.spec, self.base_url = f"openai:{base_url}", base_url.rstrip("/")
        self.model, self.api, self.chat = model, api, api == "chat"
        self.key_env, self.timeout, self.retries = key_env, timeout, retries
        self.concurrency, self.backoff, self.server_stop = concurrency, backoff, server_stop
        if self.model is None:
            self.model = self._only_model()

    device = "remote server"

    def settings(self) -> dict:
        return {"kind": "openai", "base_url": self.base_url, "model": self.model, "api": self.api,
                "server_stop": self.server_stop}

    @property
    def _key(self) -> str | None:
        return os.environ.get(self.key_env) or None

    def _redact(self, text: str) -> str:
        key = self._key
        return text.replace(key, "***") if key else text

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        """One HTTP exchange with retries; raises MoelabError with a redacted message on failure."""
        url = f"{self.base_url}{path}"
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(self.retries + 1):
            try:
                request = urllib.request.Request(url, data=data, headers=headers, method=method)
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as e:
                detail = self._redact(e.read()[:300].decode(errors="replace"))
                problem, retry_after = f"HTTP {e.code}: {detail}", e.headers.get("Retry-After")
                if e.code not in self.RETRYABLE:
                    raise MoelabError(f"{url}: {problem}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError) as e:
                problem, retry_after = self._redact(str(getattr(e, "reason", e))), None
            if attempt < self.retries:
                wait = float(retry_after) if retry_after and retry_after.isdigit() else self.backoff * 2**attempt
                time.sleep(wait)
        raise MoelabError(f"{url}: {problem} (after {self.retries + 1} attempts)")

    def _only_model(self) -> str:
        models = [m["id"] for m in self._call("GET", "/models").get("data", [])]
        if len(models) != 1:
            raise MoelabError(f"{self.spec} serves {len(models)} models ({', '.join(models[:5])}); "
                              "name one with --model-name")
        return models[0]

    def _one(self, r: Request) -> Completion:
        body = {"model": self.model, "max_tokens": r.max_tokens, "temperature": 0}
        if self.server_stop and r.stop:
            body["stop"] = list(r.stop)
        if self.chat:
            body["messages"] = r.messages()
        else:
            body["prompt"] = r.prompt
        try:
            reply = self._call("POST", "/chat/completions" if self.chat else "/completions", body)
            choice = reply["choices"][0]
            text = (choice["message"].get("content") if self.chat else choice["text"]) or ""
        except MoelabError as e:
            return Completion("", 0, error=str(e))
        except (KeyError, IndexError, TypeError):
            return Completion("", 0, error=f"{self.spec}: unexpected response shape {str(reply)[:200]}")
        text, _ = cut_text_at_stop(text, r.stop)
        usage = reply.get("usage") or {}
        details = usage.get("completion_tokens_details") or {}
        return Completion(text.strip(), int(usage.get("completion_tokens") or 0), usage.get("prompt_tokens"),
                          details.get("reasoning_tokens"))

    def complete(self, requests: list[Request], on_done: OnDone) -> None:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = {pool.submit(self._one, r): i for i, r in enumerate(requests)}
            for future in as_completed(futures):
                on_done(futures[future], future.result())

    def describe(self) -> dict:
        return {"model": self.model, "p_total": None, "p_active": None, "architecture": None,
                "open_weights": False}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def host_of(spec: str) -> str | None:
    """The scheme and host:port an openai: spec talks to; None for local backends."""
    kind, _, target = spec.partition(":")
    if kind != "openai":
        return None
    url = urllib.parse.urlsplit(target)
    return f"{url.scheme}://{url.netloc}".lower()


def judge_key_env(model_spec: str, judge_spec: str, model_key_env: str, judge_key_env: str | None) -> str:
    """The environment variable whose key the judge sends. The model's key goes only to the model's
    own host: a judge anywhere else must name its own variable (an unset one sends no key)."""
    if judge_key_env is not None:
        return judge_key_env
    if host_of(judge_spec) is not None and host_of(judge_spec) == host_of(model_spec):
        return model_key_env
    raise MoelabError(f"--judge {judge_spec} is not on the model's host, and the model's key "
                      f"(${model_key_env}) is never sent elsewhere: name the judge's key with "
                      "--judge-api-key-env VAR (an unset variable sends no key)")


def make_backend(spec: str, device: str = "cpu", model_name: str | None = None, api: str = "chat",
                 key_env: str = "OPENAI_API_KEY", concurrency: int = 4, timeout: float = 120.0,
                 server_stop: bool = False) -> Backend:
    """The backend a spec names: lab:RUN_DIR, hf:MODEL_DIR or openai:BASE_URL."""
    kind, _, target = spec.partition(":")
    if kind == "lab":
        return LabBackend(target, device)
    if kind == "hf":
        return HFBackend(target, device)
    if kind == "openai":
        return OpenAIBackend(target, model_name, api, key_env, timeout=timeout, concurrency=concurrency,
                             server_stop=server_stop)
    raise MoelabError(f"model {spec!r}: expected lab:RUN_DIR, hf:MODEL_DIR or openai:BASE_URL")

