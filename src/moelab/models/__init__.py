"""Decoder LMs with dense or Mixture-of-Experts feed-forward layers, and their exact accounting."""

from moelab.models.params import ParamCount, count_module, count_params
from moelab.models.transformer import Transformer

__all__ = ["ParamCount", "Transformer", "count_module", "count_params"]
