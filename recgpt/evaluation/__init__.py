"""Evaluation: metrics, grounding, baselines and the evaluation runner."""
