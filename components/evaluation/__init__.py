"""Evaluation: task metrics, plots (fairness, robustness and the model card build on these)."""
