"""End-to-end demo on synthetic (default) or real MSD data: train, evaluate, infer, print Dice, save an overlay.

python scripts/demo.py                                   # synthetic hippocampus phantoms, ~3 min on CPU
python scripts/demo.py --data ../shared/data/Task04_Hippocampus --minutes 20 --max_epochs 150
"""

from shared_components.cli import run
from shared_components.demo import run_demo

if __name__ == "__main__":
    run(run_demo, name="demo")
