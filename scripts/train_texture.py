"""Train G_T: ``python scripts/train_texture.py [--config configs/texture/mead.yaml] [key=value ...]``.

Multi-GPU: ``torchrun --nproc_per_node=4 scripts/train_texture.py``. A thin wrapper over ``emotalk train``.
"""
import sys

from emotalk.cli.main import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--config" not in args and "--resume" not in args:
        args = ["--config", "texture/mead", *args]
    sys.exit(main(["train", *args]))
