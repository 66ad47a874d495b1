"""Evaluation in the box: eval sets (imported, generated, from feedback), runs and their metrics, the local judge, drift."""
