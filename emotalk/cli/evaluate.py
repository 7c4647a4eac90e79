"""``emotalk evaluate --config configs/eval/NAME.yaml [--protocol field|paper] [key=value ...]``

``--protocol`` applies a named protocol's settings (split, SSIM window, landmark units, ...;
:data:`emotalk.eval.protocol.PROTOCOLS`) on top of the config file, under the user's own overrides."""
from __future__ import annotations

import argparse
from pathlib import Path

from emotalk.config import load_config
from emotalk.eval.evaluate import EvalConfig, evaluate
from emotalk.eval.protocol import PROTOCOLS, protocol_overrides
from emotalk.errors import EmotalkError
from emotalk.inference import Pipeline
from emotalk.utils.io import missing_folders, remove_created_folders


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="evaluation YAML (e.g. configs/eval/mead-mini.yaml)")
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), default=None,
                   help="a named protocol: field (MEAD M003/M030/W009/W015, 256-px landmarks, Emotion-FAN) or "
                        "paper (the paper's split and settings); recorded in every table and results.json")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.root=...")


def load_pipeline(landmark: Path, texture: Path | None, device: str) -> Pipeline:
    """The evaluation's :data:`~emotalk.eval.evaluate.PipelineLoader`: G_L (+ G_T unless ``texture`` is
    None, i.e. the warp renderer) from their checkpoints."""
    return Pipeline.from_checkpoints((landmark, texture), device=device, load_texture=texture is not None)


def run(args: argparse.Namespace) -> int:
    preset = protocol_overrides(args.protocol) if getattr(args, "protocol", None) else []
    cfg = load_config(args.config, preset + list(args.overrides), schema=EvalConfig)
    created = missing_folders(cfg.out_dir)
    try:
        out = evaluate(cfg, load_pipeline)
    except EmotalkError:  # refused (bad subject, checkpoint, ...): no empty output folder is left behind
        remove_created_folders(created)
        raise
    for md in out["tables"].values():
        print(md)  # the command's output: the tables themselves
    print(f"tables written to {out['out_dir']}")
    return 0
