"""Measurement: knowledge stored in bits, recall accuracy, routing diagnostics."""

from moelab.evaluation.capacity import Capacity, SpanScores, measure_capacity, score_probe
from moelab.evaluation.routing import fact_routing, routing_diagnostics

__all__ = ["Capacity", "SpanScores", "fact_routing", "measure_capacity", "routing_diagnostics", "score_probe"]
