"""Backends: lab and hf agree token for token; openai: is tested against a real `transformers serve`
process on 127.0.0.1 serving the exported model, and its retry and secrecy rules against a local
HTTP server."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from moelab.errors import MoelabError
from moelab.probe.backends import HFBackend, LabBackend, OpenAIBackend, Request, cut_at_stop
from moelab.probe.prompts import ProbeSettings
from moelab.probe.runner import read_samples, run_probe
from moelab.probe.tasks import knowledge_task
from moelab.runs.weights import load_run

WORDS = {1: "v1", 2: "v2", 3: "attr0", 9: "<eos>"}


def decode(ids):
    return " ".join(WORDS[i] for i in ids if i != 9)


@pytest.mark.parametrize("generated, stop, expected", [
    ([1, 2, 3, 1], ("attr0",), ("v1 v2", 3, True)),  # the stop word's token counts
    ([1, 9, 2], ("attr0",), ("v1", 2, True)),  # end of sequence
    ([1, 2], ("attr0",), ("v1 v2", 2, False)),  # budget reached
    ([1, 2, 1], ("v2",), ("v1", 2, True)),
])
def test_cut_at_stop(generated, stop, expected):
    assert cut_at_stop(generated, {9}, decode, stop) == expected


def _task(run_dir, **kwargs):
    cfg, kb, _ = load_run(run_dir)
    return knowledge_task(kb, **kwargs)


@pytest.mark.slow
def test_lab_greedy_answers_reproduce_the_recall_metric(probe_run, tmp_path):
    run_dir, metrics = probe_run
    m = run_probe(LabBackend(run_dir), _task(run_dir), tmp_path, ProbeSettings())
    # Budgets are the values' lengths, so exact match is teacher-forced recall over every question.
    assert m["answerable"]["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-6)  # float32 mean
    assert 0.3 < metrics["accuracy"] < 0.95  # the model knows some facts and not others
    assert m["unanswerable"]["n"] > 0


@pytest.mark.slow
def test_lab_and_exported_hf_give_the_same_answers(probe_run, probe_hf, tmp_path):
    run_dir, _ = probe_run
    task = _task(run_dir, composed=6)  # composed questions answered by parts, as every backend can
    settings = ProbeSettings(context_lengths=(0, 40), depths=(0.0, 1.0))
    lab = run_probe(LabBackend(run_dir), task, tmp_path / "lab", settings)
    hf = run_probe(HFBackend(probe_hf), task, tmp_path / "hf", settings)
    lab_samples = {s["key"]: s for s in read_samples(tmp_path / "lab" / "samples.jsonl")}
    hf_samples = {s["key"]: s for s in read_samples(tmp_path / "hf" / "samples.jsonl")}
    invented = sum(not q.answerable for q in task.questions)  # no needle: one padded prompt, not two
    assert lab_samples.keys() == hf_samples.keys() and len(lab_samples) == len(task.questions) * 3 - invented
    for key, s in lab_samples.items():
        assert (s["output"], s["grade"], s["output_tokens"]) == (
            hf_samples[key]["output"], hf_samples[key]["grade"], hf_samples[key]["output_tokens"]), key
    assert lab["context_rot"] == hf["context_rot"]
    assert hf["model_info"]["architecture"] == "moe"
    assert hf["model_info"]["p_total"] == lab["model_info"]["p_total"]
    assert hf["model_info"]["p_active"] == lab["model_info"]["p_active"]


def test_lab_backend_refuses_words_outside_its_vocabulary(probe_run):
    backend = LabBackend(probe_run[0])
    with pytest.raises(MoelabError, match="'What' is not in the model's vocabulary"):
        backend.complete([Request("What is the capital of France?", 4)], lambda i, c: None)


def test_hf_backend_never_downloads(tmp_path):
    pytest.importorskip("transformers")
    with pytest.raises(MoelabError, match="never downloads"):
        HFBackend(tmp_path / "Qwen3-0.6B")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(probe_hf):
    """`transformers serve` on the exported model, on 127.0.0.1."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    port = _free_port()
    command = [sys.executable, "-c", "from transformers.cli.transformers import main; main()",
               "serve", str(probe_hf), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/models", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"transformers serve did not start: {server.stderr.read()[-2000:]}")
                time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_openai_backend_against_transformers_serve_matches_lab(served, probe_run, tmp_path):
    run_dir, _ = probe_run
    task = _task(run_dir, n_people=30, n_invented=3)
    backend = OpenAIBackend(served, None, api="completions", concurrency=4)  # the server's only model
    served_metrics = run_probe(backend, task, tmp_path / "served", ProbeSettings())
    lab_metrics = run_probe(LabBackend(run_dir), task, tmp_path / "lab", ProbeSettings())
    served_samples = {s["key"]: s for s in read_samples(tmp_path / "served" / "samples.jsonl")}
    for s in read_samples(tmp_path / "lab" / "samples.jsonl"):
        assert (s["output"], s["grade"], s["output_tokens"]) == (
            served_samples[s["key"]]["output"], served_samples[s["key"]]["grade"],
            served_samples[s["key"]]["output_tokens"]), s["key"]
    assert served_metrics["errors"] == 0 and served_metrics["n"] == lab_metrics["n"] == 33 * 2
    assert served_metrics["accuracy"] == lab_metrics["accuracy"]


@pytest.mark.slow
def test_difficulty_and_selective_context_through_transformers_serve_match_lab(served, probe_run, tmp_path):
    """The probe v2 settings on every backend: composed questions by parts, closed book, full and
    selective context, through a real server, answer for answer as the lab model does."""
    run_dir, _ = probe_run
    task = _task(run_dir, n_people=8, n_invented=1, composed=4)
    settings = ProbeSettings(context_lengths=(0, 60), depths=(0.5,), retrieve=2)
    backend = OpenAIBackend(served, None, api="completions", concurrency=4)
    served_metrics = run_probe(backend, task, tmp_path / "served", settings)
    lab_metrics = run_probe(LabBackend(run_dir), task, tmp_path / "lab", settings)
    served_samples = {s["key"]: s for s in read_samples(tmp_path / "served" / "samples.jsonl")}
    lab_samples = read_samples(tmp_path / "lab" / "samples.jsonl")
    assert len(lab_samples) == len(served_samples) == 3 * len(task.questions)  # closed, full, selective
    for s in lab_samples:
        mine = served_samples[s["key"]]
        assert (s["output"], s["grade"], s["output_tokens"], s.get("parts")) == (
            mine["output"], mine["grade"], mine["output_tokens"], mine.get("parts")), s["key"]
    assert served_metrics["errors"] == 0
    assert list(served_metrics["by_difficulty"]) == ["easy", "medium", "hard"]
    assert served_metrics["by_difficulty"] == lab_metrics["by_difficulty"]
    assert served_metrics["selective_context"] == lab_metrics["selective_context"]
    assert served_metrics["settings"] == lab_metrics["settings"]
    header = json.loads((tmp_path / "served" / "probe.json").read_text())
    assert header["settings"]["retrieve"] == 2 and header["settings"]["composed"] == "parts"


class _Flaky(BaseHTTPRequestHandler):
    """Fails twice with 503, then answers; a 401 echoes the Authorization header back."""

    calls: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append((body, self.headers.get("Authorization")))
        if body["prompt"] == "unauthorised":
            self._send(401, {"error": f"bad key {self.headers.get('Authorization')}"})
        elif len([c for c in type(self).calls if c[0]["prompt"] == "flaky"]) < 3:
            self._send(503, {"error": "busy"})
        else:
            self._send(200, {"choices": [{"text": " Paris. And more", "index": 0}],
                             "usage": {"completion_tokens": 5, "prompt_tokens": 3,
                                       "completion_tokens_details": {"reasoning_tokens": 2}}})

    def _send(self, code, payload):
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky_server():
    _Flaky.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_openai_backend_retries_cuts_at_stop_and_reads_usage(flaky_server, monkeypatch):
    monkeypatch.setenv("MOELAB_TEST_KEY", "sk-secret-123")
    backend = OpenAIBackend(flaky_server, "m", api="completions", key_env="MOELAB_TEST_KEY", backoff=0.01)
    results = {}
    backend.complete([Request("flaky", 8, stop=(".",))], results.__setitem__)
    c = results[0]
    assert (c.text, c.output_tokens, c.prompt_tokens, c.reasoning_tokens, c.error) == ("Paris", 5, 3, 2, None)
    assert len(_Flaky.calls) == 3 and _Flaky.calls[-1][1] == "Bearer sk-secret-123"
    assert "stop" not in _Flaky.calls[-1][0]  # sent only with server_stop


def test_openai_backend_never_reveals_the_key(flaky_server, monkeypatch):
    monkeypatch.setenv("MOELAB_TEST_KEY", "sk-secret-123")
    backend = OpenAIBackend(flaky_server, "m", api="completions", key_env="MOELAB_TEST_KEY", backoff=0.01)
    results = {}
    backend.complete([Request("unauthorised", 8)], results.__setitem__)
    assert "HTTP 401" in results[0].error and "sk-secret-123" not in results[0].error
    assert "***" in results[0].error


def test_openai_backend_gives_up_with_a_clear_error():
    backend = OpenAIBackend(f"http://127.0.0.1:{_free_port()}/v1", "m", retries=1, backoff=0.01, timeout=2)
    results = {}
    backend.complete([Request("q", 4)], results.__setitem__)
    assert "after 2 attempts" in results[0].error


def test_hf_backend_uses_a_chat_template_when_the_tokenizer_has_one(probe_run, probe_hf, tmp_path):
    import shutil

    folder = tmp_path / "chat"
    shutil.copytree(probe_hf, folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = "{{ messages[-1]['content'] }}"  # the user turn only: our vocabulary has no roles
    config_path.write_text(json.dumps(config))
    backend = HFBackend(folder)
    assert backend.chat
    task = _task(probe_run[0], n_people=10, n_invented=1)
    chat = run_probe(backend, task, tmp_path / "chat-out", ProbeSettings())
    plain = run_probe(LabBackend(probe_run[0]), task, tmp_path / "lab-out", ProbeSettings())
    assert chat["correct"] == plain["correct"] and chat["incorrect"] == plain["incorrect"]


def test_the_judge_never_gets_the_models_key_on_another_host(monkeypatch):
    from moelab.probe.backends import judge_key_env

    same, other = "openai:http://127.0.0.1:8000/v1", "openai:https://judge.example:443/v1"
    assert judge_key_env(same, "openai:http://127.0.0.1:8000/v2", "MODEL_KEY", None) == "MODEL_KEY"
    assert judge_key_env(same, other, "MODEL_KEY", "JUDGE_KEY") == "JUDGE_KEY"
    for model in (same, "lab:runs/x", "hf:models/y"):
        with pytest.raises(MoelabError, match="--judge-api-key-env"):
            judge_key_env(model, other, "MODEL_KEY", None)


def test_probe_cli_refuses_a_judge_elsewhere_before_sending_anything(flaky_server, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from moelab.cli import app

    monkeypatch.setenv("OPENAI_API_KEY", "sk-model-secret")
    task = tmp_path / "t.jsonl"
    task.write_text(json.dumps({"id": "q", "question": "flaky", "answer": "Paris"}) + "\n")
    judge = f"openai:http://localhost:{_free_port()}/v1"
    result = CliRunner().invoke(app, ["probe", f"openai:{flaky_server}", str(task), "--model-name", "m",
                                      "--api", "completions", "--judge", judge, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--judge-api-key-env" in result.output
    assert _Flaky.calls == [] and "sk-model-secret" not in result.output


def test_the_judge_sends_its_own_key(flaky_server, monkeypatch):
    from moelab.probe.backends import judge_key_env, make_backend

    monkeypatch.setenv("MODEL_KEY", "sk-model")
    monkeypatch.setenv("JUDGE_KEY", "sk-judge")
    env = judge_key_env("lab:runs/x", f"openai:{flaky_server}", "MODEL_KEY", "JUDGE_KEY")
    judge = make_backend(f"openai:{flaky_server}", model_name="j", api="completions", key_env=env)
    judge.complete([Request("unauthorised", 4)], lambda i, c: None)
    assert _Flaky.calls[-1][1] == "Bearer sk-judge"
