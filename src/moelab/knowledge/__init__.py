"""Synthetic knowledge bases whose information content is known exactly."""

from moelab.config import DataConfig
from moelab.knowledge.base import KnowledgeBase, Probe, TrainingBatch, Vocabulary
from moelab.knowledge.biod import BioD
from moelab.knowledge.bios import BioS

__all__ = ["BioD", "BioS", "KnowledgeBase", "Probe", "TrainingBatch", "Vocabulary",
           "build_knowledge_base"]


def build_knowledge_base(cfg: DataConfig) -> KnowledgeBase:
    """The knowledge base a data config describes; deterministic from `cfg.seed`."""
    return {"biod": BioD, "bios": BioS}[cfg.kind](cfg)
