"""``emotalk evaluate --config configs/eval/NAME.yaml [key=value ...]``"""
from __future__ import annotations

import argparse
from pathlib import Path

from emotalk.config import load_config
from emotalk.eval.evaluate import EvalConfig, evaluate
from emotalk.inference import Pipeline


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="evaluation YAML (e.g. configs/eval/mead-mini.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.root=...")


def load_pipeline(landmark: Path, texture: Path | None, device: str) -> Pipeline:
    """The evaluation's :data:`~emotalk.eval.evaluate.PipelineLoader`: G_L (+ G_T unless ``texture`` is
    None, i.e. the warp renderer) from their checkpoints."""
    return Pipeline.from_checkpoints((landmark, texture), device=device, load_texture=texture is not None)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides, schema=EvalConfig)
    out = evaluate(cfg, load_pipeline)
    for md in out["tables"].values():
        print(md)  # the command's output: the tables themselves
    print(f"tables written to {out['out_dir']}")
    return 0
