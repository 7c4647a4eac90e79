"""``emotalk evaluate --config configs/eval/NAME.yaml [key=value ...]``"""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="evaluation YAML (e.g. configs/eval/mead-mini.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.root=...")


def run(args: argparse.Namespace) -> int:
    from emotalk.config import load_config
    from emotalk.eval.evaluate import evaluate

    cfg = load_config(args.config, args.overrides, task="eval")
    out = evaluate(cfg)
    for md in out["tables"].values():
        print(md)
    print(f"tables written to {out['out_dir']}")
    return 0
