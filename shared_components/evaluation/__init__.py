"""Evaluation: metrics tables, statistics and plots."""
