import json
import re

import pytest

from moelab.errors import MoelabError
from moelab.probe.backends import Completion
from moelab.probe.prompts import ProbeSettings, build_samples
from moelab.probe.runner import read_samples, run_probe
from moelab.probe.tasks import Question, Task

CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Peru": "Lima", "Kenya": "Nairobi"}


def capital_task() -> Task:
    questions = [Question(country, f"Capital of {country}?", city, domain="geo",
                          needle=f"The capital of {country} is {city}.") for country, city in CAPITALS.items()]
    questions.append(Question("Atlantis", "Capital of Atlantis?", None, domain="geo"))
    return Task("capitals", questions, [f"Filler sentence number {i} says nothing." for i in range(50)])


class Scripted:
    """A backend that answers from a table: what a real backend returns, without a model."""

    spec, chat, device = "scripted:", True, "cpu"

    def __init__(self, answers: dict[str, str], fail_on: set[str] = frozenset(), model: str = "m1"):
        self.answers, self.fail_on, self.prompts, self.model = answers, fail_on, [], model

    def settings(self):
        return {"kind": "scripted", "model": self.model}

    def complete(self, requests, on_done):
        for i, r in enumerate(requests):
            self.prompts.append(r)
            key = next(k for k in self.answers if k in r.prompt.split("\n\n")[-1])
            if key in self.fail_on:
                on_done(i, Completion("", 0, error="HTTP 503: busy (after 5 attempts)"))
            else:
                on_done(i, Completion(self.answers[key], 3, reasoning_tokens=1))

    def describe(self):
        return {"model": "scripted", "p_total": 8e9, "p_active": 1e9, "architecture": "moe", "open_weights": True}


ANSWERS = {"France": "Paris", "Japan": "Kyoto", "Peru": "I don't know", "Kenya": "Nairobi", "Atlantis": "Poseidonia"}


def test_grades_metrics_and_files(tmp_path):
    backend = Scripted(ANSWERS)
    m = run_probe(backend, capital_task(), tmp_path, ProbeSettings())
    assert (m["correct"], m["incorrect"], m["partial"], m["not_attempted"]) == (2, 2, 0, 1)
    assert m["omniscience_index"] == 0.0 and m["hallucination_rate"] == pytest.approx(2 / 3)
    assert m["unanswerable"]["incorrect"] == 1 and m["answerable"]["accuracy"] == 0.5
    assert m["output_tokens_per_question"] == 3 and m["reasoning_tokens_per_question"] == 1
    assert "know" in backend.prompts[0].system and backend.prompts[0].max_tokens == 64
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["n"] == 5 and saved["grader"] == "deterministic"
    assert saved["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", saved["git_commit"])
    assert saved["versions"]["moelab"] and saved["backend"] == {"kind": "scripted", "model": "m1"}
    assert len(read_samples(tmp_path / "samples.jsonl")) == 5


def test_failed_calls_are_counted_not_written_and_retried_on_rerun(tmp_path):
    m = run_probe(Scripted(ANSWERS, fail_on={"Japan"}), capital_task(), tmp_path, ProbeSettings())
    assert m["errors"] == 1 and m["n"] == 4 and "HTTP 503" in m["error_examples"][0]
    backend = Scripted(ANSWERS)
    m = run_probe(backend, capital_task(), tmp_path, ProbeSettings())
    assert m["errors"] == 0 and m["n"] == 5 and [r.prompt for r in backend.prompts] == ["Capital of Japan?"]


def test_an_interrupted_probe_resumes_and_a_torn_line_is_dropped(tmp_path):
    settings = ProbeSettings(context_lengths=(0, 30))
    full = run_probe(Scripted(ANSWERS), capital_task(), tmp_path / "a", settings)
    lines = (tmp_path / "a" / "samples.jsonl").read_text().splitlines()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "probe.json").write_text((tmp_path / "a" / "probe.json").read_text())
    (tmp_path / "b" / "samples.jsonl").write_text("\n".join(lines[:7]) + "\n" + lines[7][:20])
    backend = Scripted(ANSWERS)
    resumed = run_probe(backend, capital_task(), tmp_path / "b", settings)
    assert len(backend.prompts) == len(lines) - 7
    for key in ("n", "correct", "incorrect", "context_rot"):
        assert resumed[key] == full[key]


def test_a_rerun_with_other_settings_is_refused(tmp_path):
    run_probe(Scripted(ANSWERS), capital_task(), tmp_path, ProbeSettings())
    with pytest.raises(MoelabError, match="other settings"):
        run_probe(Scripted(ANSWERS), capital_task(), tmp_path, ProbeSettings(max_tokens=5))


def test_a_rerun_with_another_model_or_other_distractors_is_refused(tmp_path):
    run_probe(Scripted(ANSWERS), capital_task(), tmp_path, ProbeSettings())
    with pytest.raises(MoelabError, match="other backend"):  # e.g. another --model-name on one server
        run_probe(Scripted(ANSWERS, model="m2"), capital_task(), tmp_path, ProbeSettings())
    task = capital_task()
    task.distractors = ["Another filler passage."]
    with pytest.raises(MoelabError, match="other distractors_sha256"):
        run_probe(Scripted(ANSWERS), task, tmp_path, ProbeSettings())


@pytest.mark.slow
def test_provenance_names_the_backends_device_without_loading_the_trainer(tmp_path):
    import subprocess
    import sys

    m = run_probe(Scripted(ANSWERS), capital_task(), tmp_path, ProbeSettings())
    assert m["device"].startswith("cpu (")  # the backend's device, with the CPU's model name
    code = "import sys, moelab.probe.runner; print(sorted(m for m in sys.modules if m in ('moelab.run', 'moelab.training')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_context_rot_table_compares_the_same_questions(tmp_path):
    settings = ProbeSettings(context_lengths=(0, 50), depths=(0.0, 1.0))
    samples = build_samples(capital_task(), settings)
    assert len(samples) == 5 + 4 * 2 + 1  # Atlantis has no needle: one padded prompt
    m = run_probe(Scripted(ANSWERS), capital_task(), tmp_path, settings)
    needle_rows = [r for r in m["context_rot"] if r["depth"] is not None]
    assert [r["n"] for r in needle_rows] == [4, 4]
    assert all(r["ratio_to_shortest"] == 1.0 for r in needle_rows)  # the script ignores context


def test_judge_grades_replace_rule_grades_and_failures_are_counted(tmp_path):
    class Judge:
        spec, chat, device = "judge:", True, "remote server"

        def settings(self):
            return {"kind": "judge"}

        def complete(self, requests, on_done):
            for i, r in enumerate(requests):
                on_done(i, Completion("A" if "Kyoto" in r.prompt else "unsure", 1))

        def describe(self):
            return {}

    m = run_probe(Scripted(ANSWERS), capital_task(), tmp_path, ProbeSettings(), judge=Judge())
    samples = {s["id"]: s for s in read_samples(tmp_path / "samples.jsonl")}
    assert samples["Japan"]["grade"] == "correct" and samples["Japan"]["rule_grade"] == "incorrect"
    assert samples["France"]["judge_parse_failure"] and samples["France"]["grade"] == "correct"
    assert m["judge_parse_failures"] == 4 and m["grader"] == "judge:judge:" and len(m["judge_prompt_sha256"]) == 64


class Effortful(Scripted):
    """Answers right and spends as many tokens as the question's difficulty number asks."""

    def complete(self, requests, on_done):
        for i, r in enumerate(requests):
            level = int(r.prompt.split("level ")[1].split("?")[0])
            on_done(i, Completion(str(level), 4 * level, reasoning_tokens=level))


def test_metrics_by_difficulty_add_up_and_effort_follows_difficulty(tmp_path):
    questions = [Question(f"q{i}", f"What is level {level}?", str(level), difficulty=level)
                 for i, level in enumerate([1, 1, 2, 2, 2, 3, 3, 3, 3])]
    questions.append(Question("label", "What is level 3?", "3", difficulty="hard"))
    m = run_probe(Effortful({}), Task("levels", questions), tmp_path, ProbeSettings())
    levels = m["by_difficulty"]
    assert list(levels) == ["1", "2", "3", "hard"]  # numbers in order (hard = 3 sorts after them, tied)
    for key in ("n", "correct", "incorrect", "partial", "not_attempted"):
        assert sum(level[key] for level in levels.values()) == m[key]
    assert levels["2"]["output_tokens_per_question"] == 8 and levels["3"]["output_tokens_per_correct"] == 12
    low, high = levels["2"]["output_tokens_per_question_interval"]
    assert low <= 8 <= high
    effort = m["effort"]
    assert effort["questions"] == 10 and effort["tokens_per_difficulty"] == pytest.approx(5.0)  # 4 output + 1 reasoning
    assert effort["rank_correlation"] == pytest.approx(1.0) and effort["rank_correlation_interval"][0] > 0.5
    from moelab.probe.report import write_probe_report
    page = write_probe_report(m, read_samples(tmp_path / "samples.jsonl"), tmp_path).read_text()
    assert "Effort and accuracy by difficulty" in page and (tmp_path / "difficulty.png").exists()


def test_selective_context_sends_fewer_words_and_recovers_the_needle(tmp_path):
    backend = Scripted(ANSWERS)
    settings = ProbeSettings(context_lengths=(0, 400), depths=(0.5,), retrieve=2)
    m = run_probe(backend, capital_task(), tmp_path, settings)
    (row,) = m["selective_context"]
    assert row["context_words"] == 400 and row["selective"]["n"] == row["full"]["n"] == 5
    assert row["selective"]["prompt_words"] < row["full"]["prompt_words"] / 5
    assert row["hit_rate"] == 1.0  # every needle among the two passages kept
    assert [r["context_words"] for r in m["context_rot"]] == [0, 400, 400]  # selective runs stay out of it
    modes = {r["mode"] for r in read_samples(tmp_path / "samples.jsonl")}
    assert modes == {"closed", "full", "selective"}
    from moelab.probe.report import write_probe_report
    assert "Selective context" in write_probe_report(m, read_samples(tmp_path / "samples.jsonl"), tmp_path).read_text()


def _smallest_task() -> Task:
    """Two composed questions over three people whose values a scripted model partly knows."""
    def part(person, value):
        return Question(f"{person}-age", f"{person} age", value, max_tokens=2)

    ages = {"ann": "v3 v1", "bob": "v2 v9", "cy": "v2 v10"}
    medium = Question("m0", "Which of ann and bob has the smallest age?", "bob", difficulty="medium",
                      parts=(part("ann", ages["ann"]), part("bob", ages["bob"])), rule="smallest", options=("ann", "bob"),
                      needle="ann age v3 v1\n\nbob age v2 v9")
    hard = Question("h0", "Which of ann, bob and cy has the smallest age?", "bob", difficulty="hard",
                    parts=tuple(part(p, ages[p]) for p in ages), rule="smallest", options=tuple(ages),
                    needle="ann age v3 v1\n\nbob age v2 v9\n\ncy age v2 v10")
    easy = Question("e0", "ann age", ages["ann"], difficulty="easy", max_tokens=2, needle="ann age v3 v1")
    return Task("ages", [easy, medium, hard], [f"dan{i} age v{i} v{i}" for i in range(40)])


class Recalling:
    """Answers '<person> age' prompts from what it remembers ('cy' it does not: it abstains); any
    other prompt (a whole composed question) gets 'ann'."""

    spec, chat, device = "recalling:", False, "cpu"
    memory = {"ann": "v3 v1", "bob": "v2 v9"}

    def __init__(self):
        self.prompts = []

    def settings(self):
        return {"kind": "recalling"}

    def complete(self, requests, on_done):
        for i, r in enumerate(requests):
            self.prompts.append(r.prompt)
            asked = r.prompt.split("\n\n")[-1].split()
            reply = (self.memory.get(asked[0], "I don't know") if len(asked) == 2 else "ann")
            on_done(i, Completion(reply, len(reply.split()), prompt_tokens=len(r.prompt.split())))

    def describe(self):
        return {"model": "recalling", "p_total": None, "p_active": None, "architecture": None, "open_weights": False}


def test_composed_questions_are_answered_by_parts_or_whole(tmp_path):
    backend = Recalling()
    m = run_probe(backend, _smallest_task(), tmp_path / "parts", ProbeSettings())
    records = {r["id"]: r for r in read_samples(tmp_path / "parts" / "samples.jsonl")}
    assert records["m0"]["output"] == "bob" and records["m0"]["grade"] == "correct"
    assert [p["output"] for p in records["m0"]["parts"]] == ["v3 v1", "v2 v9"]
    assert records["m0"]["output_tokens"] == 4 and records["m0"]["prompt_tokens"] == 4  # the parts' sums
    assert records["h0"]["grade"] == "not_attempted"  # cy's age unknown: the comparison is too
    assert [p["grade"] for p in records["h0"]["parts"]] == ["correct", "correct", "not_attempted"]
    assert len(backend.prompts) == 1 + 2 + 3 and "Which" not in " ".join(backend.prompts)
    assert list(m["by_difficulty"]) == ["easy", "medium", "hard"]
    assert m["by_difficulty"]["hard"]["output_tokens_per_question"] == 2 + 2 + 3
    assert m["by_difficulty"]["medium"]["every_part_correct"] == 1.0 and m["by_difficulty"]["hard"]["every_part_correct"] == 0
    assert "every_part_correct" not in m["by_difficulty"]["easy"]
    assert m["settings"]["composed"] == "parts"
    assert "composed" not in run_probe(Recalling(), capital_task(), tmp_path / "plain", ProbeSettings())["settings"]

    whole = Recalling()
    m = run_probe(whole, _smallest_task(), tmp_path / "whole", ProbeSettings(composed="whole"))
    records = {r["id"]: r for r in read_samples(tmp_path / "whole" / "samples.jsonl")}
    assert records["m0"]["output"] == "ann" and records["m0"]["grade"] == "incorrect" and "parts" not in records["m0"]
    assert len(whole.prompts) == 3 and m["settings"]["composed"] == "whole"
    with pytest.raises(MoelabError, match="other settings"):  # parts and whole answers never mix in one folder
        run_probe(Recalling(), _smallest_task(), tmp_path / "whole", ProbeSettings())


def test_composed_questions_by_parts_share_the_padded_and_the_selected_passages(tmp_path):
    settings = ProbeSettings(context_lengths=(0, 60), depths=(0.5,), retrieve=2)
    samples = [s for s in build_samples(_smallest_task(), settings) if s.question.id == "h0"]
    assert [s.mode for s in samples] == ["closed", "full", "selective"]
    for s in samples:
        context = s.prompt.rsplit("\n\n", 1)[0] if s.context_words else ""
        assert [p.rsplit("\n\n", 1)[-1] for p in s.part_prompts] == ["ann age", "bob age", "cy age"]
        assert all(p.rsplit("\n\n", 1)[0] == context for p in s.part_prompts if context)
    assert samples[2].retrieved_needle and len(samples[2].prompt) < len(samples[1].prompt)
    m = run_probe(Recalling(), _smallest_task(), tmp_path, settings)
    (row,) = m["selective_context"]
    assert row["selective"]["prompt_words"] < row["full"]["prompt_words"]
    assert row["selective"]["n"] == row["full"]["n"] == 3


class Rotting(Scripted):
    """Answers right only while the prompt is at most `limit` words: context rot, made to order."""

    def __init__(self, limit: int):
        super().__init__(CAPITALS)
        self.limit = limit

    def complete(self, requests, on_done):
        for i, r in enumerate(requests):
            country = next(c for c in CAPITALS if c in r.prompt.split("\n\n")[-1]) if "Atlantis" not in r.prompt else None
            right = len(r.prompt.split()) <= self.limit
            reply = ("I don't know" if country is None else CAPITALS[country] if right else "Rome")
            on_done(i, Completion(reply, 1))


@pytest.mark.parametrize("limit, recovered", [(100, 1.0), (10, 0.0)])
def test_selective_context_recovers_the_accuracy_context_rot_lost(tmp_path, limit, recovered):
    settings = ProbeSettings(context_lengths=(0, 400), depths=(0.5,), retrieve=2)
    m = run_probe(Rotting(limit), capital_task(), tmp_path, settings)
    (row,) = m["selective_context"]
    assert row["closed"]["accuracy"] == 1.0 and row["full"]["accuracy"] == 0.2  # Atlantis: abstained, right
    assert row["recovered"] == pytest.approx(recovered)
    low, high = row["recovered_interval"]
    assert low <= recovered <= high


def test_a_probe_that_got_no_answers_does_not_pin_its_settings(tmp_path):
    """A wrong port or a down server leaves probe.json and no answers: the corrected command must
    be able to use the folder; once answers are in, other settings are refused."""
    failing = Scripted(ANSWERS, fail_on=set(ANSWERS), model="wrong-port")
    try:
        run_probe(failing, capital_task(), tmp_path, ProbeSettings())
    except MoelabError:
        pass  # every request failed: the probe says so
    assert (tmp_path / "probe.json").exists() and not read_samples(tmp_path / "samples.jsonl")
    m = run_probe(Scripted(ANSWERS, model="right-port"), capital_task(), tmp_path, ProbeSettings())
    assert m["correct"] == 2
    assert json.loads((tmp_path / "probe.json").read_text())["backend"]["model"] == "right-port"
    with pytest.raises(MoelabError, match="holds a probe with other backend"):
        run_probe(Scripted(ANSWERS, model="third"), capital_task(), tmp_path, ProbeSettings())
