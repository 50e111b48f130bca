"""End-to-end demo on synthetic (default) or real MSD data: train, evaluate, infer, print Dice, save an overlay.

.venv/bin/python scripts/demo.py        # 100 epochs on synthetic phantoms: Dice 0.894, ~3 min on 2 idle CPU cores
.venv/bin/python scripts/demo.py --data ../shared/data/Task04_Hippocampus --out work/demo_real --max_epochs 150
"""

from shared_components.cli import script

if __name__ == "__main__":
    script("demo")
