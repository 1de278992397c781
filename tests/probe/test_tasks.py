import json

import pytest

from moelab.config import DataConfig
from moelab.knowledge import build_knowledge_base
from moelab.probe.tasks import Question, Task, TaskError, knowledge_task, read_task, write_task


def test_a_valid_file_reads_back_what_was_written(tmp_path):
    task = Task("t", [Question("q1", "Capital of France?", "Paris", ("paris, france",), "geography", difficulty="easy"),
                      Question("q2", "Birth year of the invented Zorblax?", None, max_tokens=8, stop=("\n",),
                               difficulty=2.5)])
    write_task(task, tmp_path / "t.jsonl")
    again = read_task(tmp_path / "t.jsonl")
    assert again.questions == task.questions and again.sha256 == task.sha256


def test_every_malformed_line_is_reported_with_its_number(tmp_path):
    lines = [
        {"id": "ok", "question": "q?", "answer": "a"},
        "{not json",
        {"id": "no-answer", "question": "q?"},
        {"id": "", "question": "q?", "answer": "a"},
        {"id": "bad-types", "question": "q?", "answer": 3, "aliases": "x", "max_tokens": 0},
        {"id": "ok", "question": "again?", "answer": "b"},
        {"id": "extra", "question": "q?", "answer": "a", "hint": "x"},
        [1, 2],
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    with pytest.raises(TaskError) as err:
        read_task(path)
    text = str(err.value)
    assert "line 2: not valid JSON" in text
    assert "line 3: 'answer' is missing" in text
    assert "line 4: 'id' must be a non-empty string" in text
    assert "line 5: 'answer' must be a non-empty string or null" in text
    assert "line 5: 'aliases' must be a list of strings" in text and "line 5: 'max_tokens'" in text
    assert "line 6: duplicate id 'ok' (first on line 1)" in text
    assert "line 7: unknown field(s) hint" in text
    assert "line 8: expected a JSON object" in text
    assert "line 1:" not in text


def test_missing_and_empty_files_are_errors(tmp_path):
    with pytest.raises(TaskError, match="no such task file"):
        read_task(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(TaskError, match="no questions"):
        read_task(tmp_path / "empty.jsonl")


@pytest.mark.parametrize("kind", ["biod", "bios"])
def test_knowledge_task_asks_in_the_training_format(kind):
    cfg = DataConfig(kind=kind, n_people=50, name_slots=2, name_vocab=16, seed=3)
    kb = build_knowledge_base(cfg)
    task = knowledge_task(kb, n_people=20, n_invented=4, seed=1)
    n_attributes = len(kb.attribute_names)
    known = [q for q in task.questions if q.answerable]
    invented = [q for q in task.questions if not q.answerable]
    assert len(known) == 20 * n_attributes and len(invented) == 4 * n_attributes
    real_names = {" ".join(kb.vocab.decode(kb.name(p))) for p in range(kb.n_people)}
    for q in known:
        person, attribute = int(q.id[1:].split("-")[0]), kb.attribute_names.index(q.domain)
        assert q.question.split() == kb.vocab.decode(kb.question(kb.name(person), attribute))
        assert q.answer.split() == kb.vocab.decode(kb.answer(person, attribute))
        assert q.max_tokens == len(q.answer.split())
        name = " ".join(kb.vocab.decode(kb.name(person)))
        assert q.needle.startswith(f"<bos> {name} ") and f" {q.answer} " in q.needle
        assert set(q.stop) == set(kb.stop_words)
    slots = cfg.name_slots
    for q in invented:
        assert " ".join(q.question.split()[1:1 + slots]) not in real_names
    assert len(task.distractors) == 30  # the paragraphs of people not asked about
    assert knowledge_task(kb, n_people=20, n_invented=4, seed=1).sha256 == task.sha256


def test_a_reasoning_task_has_no_facts_to_ask_about():
    from moelab.errors import MoelabError

    with pytest.raises(MoelabError, match="no facts to ask about"):
        knowledge_task(build_knowledge_base(DataConfig(kind="twohop", graph_nodes=6)))


def test_value_order_compares_word_by_word_by_number():
    from moelab.probe.tasks import smallest, value_order

    assert value_order("v3 v40") < value_order("v12 v1") < value_order("v12 v2")
    assert value_order("day9 March") < value_order("March day1")  # numbered words first
    assert smallest(("a", "b", "c"), ["v5 v1", "v4 v9", "v4 v10"]) == "b"
    assert smallest(("a", "b"), ["v1 v1", None]) is None  # one fact unknown: abstain


def _composed_task(n_invented=6):
    kb = build_knowledge_base(DataConfig(kind="biod", n_people=60, name_slots=2, name_vocab=16, seed=3))
    return kb, knowledge_task(kb, n_people=30, n_invented=n_invented, seed=2, composed=40)


def test_composed_kb_questions_have_gold_answers_that_match_the_knowledge_base():
    kb, task = _composed_task()
    text = lambda ids: " ".join(kb.vocab.decode(ids))  # noqa: E731
    person_of = {text(kb.name(p)): p for p in range(kb.n_people)}
    composed = [q for q in task.questions if q.parts]
    assert [q.difficulty for q in composed] == ["medium"] * 40 + ["hard"] * 40
    abstain = 0
    for q in composed:
        a = kb.attribute_names.index(q.domain)
        assert len(q.options) == len(q.parts) == {"medium": 2, "hard": 3}[q.difficulty]
        truth = {}
        for name, part in zip(q.options, q.parts):
            assert part.question == text(kb.question(kb.vocab.encode(name.split()), a))
            person = person_of.get(name)
            assert part.answer == (None if person is None else text(kb.answer(person, a)))
            if person is not None:
                truth[name] = [int(w[1:]) for w in text(kb.answer(person, a)).split()]  # v<number> tokens
                assert text(kb.paragraph(person)) in q.needle
        if len(truth) < len(q.options):  # someone in the group does not exist: abstain
            assert q.answer is None
            abstain += 1
        else:
            assert len({tuple(v) for v in truth.values()}) == len(truth)  # one right answer
            assert q.answer == min(truth, key=truth.get)
            assert q.answer in q.question and q.question.startswith(f"Which of these people has the smallest {q.domain}")
    easy = [q for q in task.questions if not q.parts]
    assert 0 < abstain < len(composed) / 2  # invented people join groups, as often as among the easy questions
    assert easy == knowledge_task(kb, n_people=30, n_invented=6, seed=2).questions  # easy questions unchanged
    assert not any(q.parts for q in _composed_task(n_invented=0)[1].questions if q.answer is None)


def test_composed_questions_survive_the_round_trip_and_a_wrong_gold_is_refused(tmp_path):
    _, task = _composed_task()
    write_task(task, tmp_path / "t.jsonl")
    again = read_task(tmp_path / "t.jsonl")
    assert again.questions == task.questions and again.sha256 == task.sha256
    line = json.loads((tmp_path / "t.jsonl").read_text().splitlines()[-1])
    wrong = {**line, "id": "wrong", "answer": next(o for o in line["options"] if o != line["answer"])}
    nested = {**line, "id": "nested", "parts": [line, *line["parts"][1:]]}
    unknown = {**line, "id": "unknown-rule", "rule": "largest"}
    short = {**line, "id": "short", "options": line["options"][:1]}
    (tmp_path / "bad.jsonl").write_text("".join(json.dumps(x) + "\n" for x in (line, wrong, nested, unknown, short)))
    with pytest.raises(TaskError) as err:
        read_task(tmp_path / "bad.jsonl")
    text = str(err.value)
    assert "line 2: 'answer'" in text and "is not what its parts give by rule 'smallest'" in text
    assert "line 3 part 1: a part cannot have parts" in text
    assert "line 4: 'rule' must be one of smallest" in text
    assert "line 5: 'options' must give one answer per part" in text
    assert "line 1:" not in text


def test_composed_questions_on_a_base_with_too_few_values_are_refused_at_once():
    """data.diversity = 2 with one chunk: hard questions need three distinct values of an attribute,
    which no three people can have; the search used to loop forever."""
    import time

    from moelab.errors import MoelabError

    kb = build_knowledge_base(DataConfig(n_people=50, name_slots=2, name_vocab=16, n_attributes=2, value_chunks=1,
                                         chunk_length=1, diversity=2, value_vocab=8, seed=0))
    start = time.perf_counter()
    with pytest.raises(MoelabError, match="data.diversity"):
        knowledge_task(kb, n_people=30, n_invented=0, seed=0, composed=5)
    assert time.perf_counter() - start < 1.0
