"""Evaluation: eval set formats, retrieval and answer metrics, paired comparison and gates (pure; core/evals.py drives them)."""
