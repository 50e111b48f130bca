"""Benchmark bundles under identical data, splits, seed and budget, and write the leaderboard.

python scripts/benchmark.py run --bundles "hippocampus_mri_*" --folds 0 --max_epochs 150 --time_budget 20
python scripts/benchmark.py report results/hippocampus_mri      # rewrite leaderboard.md/.csv and plots/
"""

from shared_components.cli import script

if __name__ == "__main__":
    script("benchmark")
