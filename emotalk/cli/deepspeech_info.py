"""``emotalk deepspeech-info MODEL.pb``: what a frozen DeepSpeech graph holds, and whether emotalk can run it.

The first real run of ``--features deepspeech --deepspeech-model`` is on a 490 MB file that the project
cannot test here; this command makes that run easy to diagnose: it lists the graph's inputs and weight
tensors (name, dtype, shape), checks them against DeepSpeech 0.1.0's structure, and compares the file's
SHA-1 with the one the field publishes for ``deepspeech-0_1_0-b90017e8.pb``. Exit code 0 when the
extractor accepts the graph, otherwise the error (what was expected, what was found) and code 2.
"""
from __future__ import annotations

import argparse

from emotalk.data.speech.deepspeech import weights_from_graph
from emotalk.data.speech.deepspeech_graph import OFFICIAL_NAME, OFFICIAL_SHA1, describe_graph, read_graph


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL.pb", help=f"frozen DeepSpeech graph, e.g. {OFFICIAL_NAME}")
    p.add_argument("--limit", type=int, default=None, help="list at most this many weight tensors")
    p.add_argument("--no-hash", action="store_true", help="skip the SHA-1 of the file")


def run(args: argparse.Namespace) -> int:
    g = read_graph(args.model)
    for line in describe_graph(g, args.limit):
        print(line)  # the command's output: the listing itself
    if not args.no_hash:
        digest = g.sha1()
        verdict = "matches" if digest == OFFICIAL_SHA1 else f"differs from {OFFICIAL_SHA1}"
        print(f"sha1: {digest} ({verdict}, the published {OFFICIAL_NAME})")
    w = weights_from_graph(g)  # raises DataError listing expected vs found
    sizes = ", ".join(f"{k} {v}" for k, v in w.sizes.items())
    print(f"DeepSpeech 0.1.0 structure: OK ({sizes})")
    return 0
