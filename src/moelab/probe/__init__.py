"""Probe: score models on factual questions the way AA-Omniscience does (correct / incorrect /
partial / not attempted), with output tokens and accuracy under growing context."""
