"""Experiment drivers: bundle runs in their own folders, cross-validation, the benchmark grid and its leaderboard."""
