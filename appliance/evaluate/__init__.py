"""Evaluation in the box: eval sets, generated QA sets, the local judge, runs and their metrics."""
