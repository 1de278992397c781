"""Synthetic knowledge bases whose information content is known exactly."""

from moelab.config import DataConfig
from moelab.knowledge.base import (
    KnowledgeBase, Probe, TrainingBatch, Vocabulary, junk_per_exposure, rows_per_exposure, unknown_per_exposure,
)
from moelab.knowledge.biod import BioD
from moelab.knowledge.bios import BioS
from moelab.knowledge.sorting import Sorting
from moelab.knowledge.twohop import TwoHop

__all__ = ["BioD", "BioS", "Sorting", "TwoHop", "KnowledgeBase", "Probe", "TrainingBatch", "Vocabulary",
           "build_knowledge_base", "junk_per_exposure", "rows_per_exposure", "unknown_per_exposure"]


def build_knowledge_base(cfg: DataConfig) -> KnowledgeBase:
    """The knowledge base (or reasoning task) a data config describes; deterministic from `cfg.seed`."""
    return {"biod": BioD, "bios": BioS, "sort": Sorting, "twohop": TwoHop}[cfg.kind](cfg)
