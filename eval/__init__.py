"""Evaluation: answer parsing, metrics, robustness under perturbations, reports."""
