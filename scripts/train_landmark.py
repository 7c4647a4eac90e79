"""Train G_L: ``python scripts/train_landmark.py [--config configs/landmark/mead.yaml] [key=value ...]``.

Multi-GPU: ``torchrun --nproc_per_node=4 scripts/train_landmark.py train.batch_size=256``.
A thin wrapper over ``emotalk train``.
"""
import sys

from emotalk.cli.main import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--config" not in args and "--resume" not in args:
        args = ["--config", "landmark/mead", *args]
    sys.exit(main(["train", *args]))
