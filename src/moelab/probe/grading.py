"""Grading one answer as correct / incorrect / partial / not attempted (AA-Omniscience's four
classes, Inspect's C / I / P / N).

The deterministic grader is strict and explainable:
    correct        the normalised output equals the gold answer or an alias
    not attempted  the output is empty or says the model does not know
    partial        the output is a strict leading part of a gold answer (cut short), or contains a
                   gold answer among other words the grader cannot verify
    incorrect      anything else
For a question whose right response is to abstain (gold answer null) an abstention is correct
and any answer is incorrect. Normalisation: Unicode NFKC, lower case, punctuation and the
articles a/an/the removed, whitespace collapsed.

The optional LLM judge asks any backend for one letter (A correct, B incorrect, C partial,
D not attempted) with the prompt below; its SHA-256 is recorded with the results. An answer the
judge's reply cannot be parsed from keeps the deterministic grade and is counted as a parse
failure.
"""

from __future__ import annotations

import hashlib
import re
import string
import unicodedata

from moelab.probe.tasks import Question

CORRECT, INCORRECT, PARTIAL, NOT_ATTEMPTED = "correct", "incorrect", "partial", "not_attempted"
GRADES = (CORRECT, INCORRECT, PARTIAL, NOT_ATTEMPTED)

ABSTENTION_PATTERNS = [
    r"\bi (?:do not|don't|dont) know\b", r"\bi am not sure\b", r"\bi'm not sure\b", r"\bnot sure\b",
    r"\bi (?:cannot|can't|can not) (?:answer|say|determine|find|recall)\b", r"\bunable to (?:answer|determine|find)\b",
    r"\bno (?:reliable |available )?information\b", r"\bi (?:have no|lack) (?:information|knowledge|data)\b",
    r"\bunknown\b", r"\bi(?: am|'m) not aware\b", r"\bdoes not exist\b", r"\bdoesn't exist\b",
    r"\bno such (?:person|thing|entity)\b", r"\bi (?:would|will) need more (?:context|information)\b",
]
_ABSTENTION = re.compile("|".join(ABSTENTION_PATTERNS))
_PUNCTUATION = str.maketrans({c: " " for c in string.punctuation if c not in "'"})


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower().translate(_PUNCTUATION)
    words = [w.strip("'") for w in text.split()]
    return " ".join(w for w in words if w and w not in ("a", "an", "the"))


def is_abstention(output: str) -> bool:
    return bool(_ABSTENTION.search(unicodedata.normalize("NFKC", output).lower().replace("\u2019", "'")))


def _contains_words(haystack: str, needle: str) -> bool:
    return f" {needle} " in f" {haystack} "


def grade(question: Question, output: str) -> str:
    """The deterministic grade of `output` for `question`."""
    said = normalise(output)
    abstained = not said or is_abstention(output)
    if not question.answerable:
        return CORRECT if abstained else INCORRECT
    golds = [g for g in (normalise(question.answer), *map(normalise, question.aliases)) if g]
    if said in golds:
        return CORRECT
    if abstained:
        return NOT_ATTEMPTED
    if any(g.startswith(said + " ") or _contains_words(said, g) for g in golds):
        return PARTIAL
    return INCORRECT


# ---------------------------------------------------------------------------------------------
# LLM judge

JUDGE_PROMPT = """You grade answers to short factual questions. Read the question, the gold answer and the \
model's response, then reply with exactly one letter:

A  CORRECT: the response gives the gold answer (or an equivalent form of it, such as a listed \
alias, a spelling variant of a name, or a number equal to the gold to its last significant \
figure) and says nothing that contradicts it. Hedging is fine if the gold answer is clearly given.
B  INCORRECT: the response gives an answer that differs in meaning from the gold answer or \
contradicts it, even if hedged.
C  PARTIAL: the response is accurate but not at the level of detail the gold answer has (for \
example a year when a full date is asked, or a rounded number).
D  NOT ATTEMPTED: the response declines, says it does not know, or asks for more context, and \
gives no answer.

If the gold answer is "{no_answer}", the question is about something that does not exist: \
reply A if the response abstains or says so, and B if it gives any answer.

Question: {question}
Gold answer: {gold}
Other accepted answers: {aliases}
Response: {response}

Grade (one letter):"""

NO_ANSWER = "[none: the right response is to abstain]"
JUDGE_PROMPT_SHA256 = hashlib.sha256(JUDGE_PROMPT.encode()).hexdigest()
_LETTER = re.compile(r"\b([ABCD])\b")
_LETTER_GRADES = {"A": CORRECT, "B": INCORRECT, "C": PARTIAL, "D": NOT_ATTEMPTED}


def judge_prompt(question: Question, output: str) -> str:
    return JUDGE_PROMPT.format(no_answer=NO_ANSWER, question=question.question,
                               gold=question.answer if question.answerable else NO_ANSWER,
                               aliases="; ".join(question.aliases) or "(none)", response=output)


def parse_judgement(reply: str) -> str | None:
    """The grade in a judge's reply (its first standalone letter A-D), or None if there is none."""
    match = _LETTER.search(reply.strip())
    return _LETTER_GRADES[match.group(1)] if match else None
