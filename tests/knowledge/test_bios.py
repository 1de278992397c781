import math

import numpy as np
import pytest

from moelab.config import DataConfig
from moelab.knowledge import BioS
from moelab.knowledge.bios import ATTRIBUTES

CFG = DataConfig(kind="bios", n_people=300, seed=4)


@pytest.fixture(scope="module")
def kb():
    return BioS(CFG)


def test_s0_is_the_papers_47_6_bits(kb):
    assert kb.log2_s0 == pytest.approx(47.6, abs=0.05)
    assert kb.information_bits()["value"] == pytest.approx(CFG.n_people * kb.log2_s0)


def test_fresh_order_and_templates_and_name_only_first(kb):
    rng = np.random.default_rng(0)
    batch = kb.training_batch(np.zeros(30, dtype=np.int64), rng)
    texts = set()
    for row, target in zip(batch.inputs, batch.targets):
        words = kb.vocab.decode(row[target != -100].tolist() + [int(target[target != -100][-1])])
        text = " ".join(words)
        texts.add(text)
        name = " ".join(kb.vocab.decode(kb.names[0]))
        assert text.count(name) == 1 and words[1:1 + len(kb.names[0])] == name.split()
        assert words[-1] == "<eos>" and text.count(" . ") == len(ATTRIBUTES)
    assert len(texts) > 20


def test_every_value_appears_in_each_paragraph(kb):
    rng = np.random.default_rng(1)
    batch = kb.training_batch(np.arange(20), rng)
    for person, row in enumerate(batch.inputs.tolist()):
        for value in kb.values[person]:
            assert any(row[i:i + len(value)] == value for i in range(len(row)))


def test_working_city_follows_employer(kb):
    city_of = {}
    for v in kb.values:
        employer, city = v[4][0], v[5][0]
        assert city_of.setdefault(employer, city) == city


def test_probes(kb):
    probes = kb.probes()
    recall = probes["recall"]
    assert len(recall.tokens) == CFG.n_people * len(ATTRIBUTES)
    # the bio span: 3 date tokens + 4 single-token values + the first pronoun = 8 per person
    assert probes["bio"].spans["value"].sum() == CFG.n_people * 8
    first = kb.vocab.decode(recall.tokens[0][recall.spans["value"][0]].tolist())
    assert first == kb.vocab.decode(kb.values[0][0])


def test_bits_formula_identities(kb):
    n0 = CFG.name_vocab**CFG.name_slots
    assert kb.bits({"name.name": math.log(n0), "bio.value": kb.log2_s0 * math.log(2)}) == \
        pytest.approx({"name": 0.0, "value": 0.0}, abs=1e-6)
    assert sum(kb.bits({"name.name": math.log(CFG.n_people), "bio.value": 0.0}).values()) == \
        pytest.approx(sum(kb.information_bits().values()), rel=1e-9)
