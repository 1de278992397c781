import pytest

from moelab.probe.grading import (
    CORRECT,
    INCORRECT,
    JUDGE_PROMPT_SHA256,
    NOT_ATTEMPTED,
    PARTIAL,
    grade,
    judge_prompt,
    normalise,
    parse_judgement,
)
from moelab.probe.tasks import Question

PARIS = Question("q", "What is the capital of France?", "Paris", aliases=("Paris, France",))
DATE = Question("d", "When was she born?", "March 3 1990")
NOBODY = Question("x", "Where was Zorblax born?", None)


def test_normalise_ignores_case_punctuation_articles_and_spacing():
    assert normalise("  The  PARIS!! ") == "paris"
    assert normalise("v3  v17\n") == "v3 v17"
    assert normalise("n1 n2 's") == "n1 n2 s"


@pytest.mark.parametrize("question, output, expected", [
    (PARIS, "Paris", CORRECT),
    (PARIS, "paris.", CORRECT),
    (PARIS, "Paris, France", CORRECT),  # an alias
    (PARIS, "Lyon", INCORRECT),
    (PARIS, "", NOT_ATTEMPTED),
    (PARIS, "I don't know.", NOT_ATTEMPTED),
    (PARIS, "I'm not sure, sorry", NOT_ATTEMPTED),
    (PARIS, "It is Paris, I think", PARTIAL),  # gold among words the grader cannot verify
    (DATE, "March 3 1990", CORRECT),
    (DATE, "March", PARTIAL),  # cut short
    (DATE, "March 4 1990", INCORRECT),
    (NOBODY, "I do not know", CORRECT),
    (NOBODY, "", CORRECT),
    (NOBODY, "Such a person does not exist.", CORRECT),
    (NOBODY, "Berlin", INCORRECT),
])
def test_deterministic_grades(question, output, expected):
    assert grade(question, output) == expected


def test_judge_prompt_states_the_gold_or_the_abstention_rule():
    assert "Gold answer: Paris" in judge_prompt(PARIS, "Lyon") and "Response: Lyon" in judge_prompt(PARIS, "Lyon")
    assert "right response is to abstain" in judge_prompt(NOBODY, "Berlin").split("Gold answer:")[1]
    assert len(JUDGE_PROMPT_SHA256) == 64


@pytest.mark.parametrize("reply, expected", [
    ("A", CORRECT), ("B", INCORRECT), ("  C\n", PARTIAL), ("D", NOT_ATTEMPTED),
    ("The grade is B.", INCORRECT), ("Grade: A", CORRECT), ("", None), ("maybe", None), ("E", None),
])
def test_judge_replies_are_parsed_or_counted_as_failures(reply, expected):
    assert parse_judgement(reply) == expected
