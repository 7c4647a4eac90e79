"""`emotalk demo` end to end at a smaller setting: report, videos and tables exist and are valid.

Cost (CI budget): the demo reads the session's mead-mini ``tiny`` (``tiny_mini_raw``, the same
``generate_mini("tiny", seed=0)`` the demo would run; ``--mini`` is a user option too) instead of generating
it again, and G_T trains at 64x64 (the fixtures' size), which makes every rendering stage after it ~4x
cheaper. Every other stage runs as a user's demo does: preprocessing with phoneme features, G_L, G_T, the
emotion classifier, generation, the emotions panel, evaluation and the report.
"""
import dataclasses
import json
import re

import pytest

import emotalk.cli.demo as cli_demo
from emotalk.cli.main import main
from emotalk.data.io.media import probe_video
from emotalk.demo.run import Demo, DemoOptions, trim_eval_config
from emotalk.errors import ConfigError, InputError


def _small_texture(**kw):
    opts = DemoOptions(**kw)
    opts.texture_overrides.append("model.image_size=64")
    return opts


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys, monkeypatch, tiny_mini_raw):
    monkeypatch.setattr(cli_demo, "DemoOptions", _small_texture)
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--size", "tiny", "--mini", str(tiny_mini_raw), "--workers", "1",
            "--landmark-steps", "40", "--texture-steps", "20", "--finetune-steps", "1", "--eval-clips", "1",
            "--quiet"]
    assert main(args) == 0
    assert not (out / "mead-mini").exists()  # --mini: read in place, not copied or regenerated
    # the demo's preprocessing of mead-mini (phoneme features): every generated clip of every subject
    info = json.loads((tiny_mini_raw / "mini.json").read_text())
    manifest = json.loads((out / "processed" / "manifest.json").read_text())
    assert manifest["source"] == "mead-mini" and manifest["feature_kind"] == "phonemes"
    clips = sorted((out / "processed" / "clips").rglob("*.npz"))
    assert len(clips) == info["num_clips"] and {p.parent.name for p in clips} == set(info["subject_ids"])
    quiet = capsys.readouterr().out  # --quiet: only warnings and errors (on stderr)
    assert "[demo]" not in quiet and "stage times" not in quiet
    report = (out / "report.html").read_text()
    videos = re.findall(r"<video src='([^']+)'", report)
    assert len(videos) >= 7  # five emotions, a blend, the warp baseline, the full photo
    for v in videos:
        info = probe_video(out / v)
        assert info.num_frames > 30 and info.has_audio
    for img in re.findall(r"<img src='([^']+)'", report):
        assert (out / img).stat().st_size > 1000
    # every video has a poster frame; the emotions panel has a tile per emotion x level with its separation
    tags = re.findall(r"<video [^>]*>", report)
    assert len(tags) == len(videos) and all(re.search(r"poster='[^']+\.jpg'", t) for t in tags)
    tiles = re.findall(r"<td data-emotion='(\w+)' data-level='(\d)'>.*?Δ <b>([\d.]+)</b>", report, re.S)
    assert len(tiles) == 2 * 7 * 3  # held-out subject + the photo, 7 emotions, levels 1-3, all measured
    assert "<table>" in report and "Static neutral photo" in report and "(paper)" in report
    assert "Emo-Acc-LM" in report and "ExT-brows" in report  # the emotion metrics reach the report
    assert (out / "eval" / "table2.md").is_file() and (out / "eval" / "table2.csv").is_file()
    # the demo's evaluation: the rows and grids the report shows, none of the Table 4 ablations
    results = json.loads((out / "eval" / "results.json").read_text())
    assert set(DemoOptions().eval_methods) <= set(results["results"])
    assert not any("w/o" in name for name in results["results"]) and not (out / "eval" / "table4.md").exists()
    ext = {name: r.get("ExT-brows") for name, r in results["results"].items() if "[neutral]" not in name}
    assert ext["Ours"] is not None and ext["Warp baseline"] is not None and ext["Static neutral photo"] is None
    assert re.search(r"machine: \d+ GFLOP/s fp32 matmul", report)
    # a second run reuses every stage, and without --quiet it says so and prints the stage times
    assert main(args[:-1]) == 0
    printed = capsys.readouterr().out
    assert printed.count(": reusing ") == 8
    assert "stage times" in printed and "total" in printed and f"report: {out / 'report.html'}" in printed
    assert re.search(r"machine: \d+ GFLOP/s fp32 matmul on \d+ thread", printed)  # beside the stage times
    for stage in ("mini", "preprocess", "landmark", "texture", "classifier", "generate", "emotions", "evaluate"):
        assert (out / "stages" / f"{stage}.json").is_file()


def test_trim_eval_config_keeps_the_reports_rows():
    """The demo's evaluation keeps Table 2's rows (grid for ours and the warp ceiling) and drops Table 4."""
    from emotalk.config import load_config
    from emotalk.eval.evaluate import EvalConfig

    cfg = load_config("eval/mead-mini", schema=EvalConfig)
    opts = DemoOptions()
    trim_eval_config(cfg, opts.eval_methods, opts.grid_methods)
    assert [m.name for m in cfg.methods] == list(opts.eval_methods)
    assert all("table4" not in m.tables and "table2" in m.tables for m in cfg.methods)
    assert cfg.grid.enabled and cfg.grid.methods == ["Ours", "Warp baseline"]
    cfg = load_config("eval/mead-mini", schema=EvalConfig)
    with pytest.raises(ConfigError, match="Ours renamed"):  # a renamed row must not empty the tables silently
        trim_eval_config(cfg, ("Ours renamed",), ())


def test_demo_mini_source_is_checked(tmp_path):
    """--mini: a folder without mini.json, or without held-out subjects, is refused before any work."""
    demo = Demo(DemoOptions(out=str(tmp_path / "out"), mini_source=str(tmp_path)))
    with pytest.raises(InputError, match="mini.json"):
        demo.make_mini()
    (tmp_path / "mini.json").write_text(json.dumps({"splits": {"train": ["W001"], "test": []}}))
    with pytest.raises(InputError, match="held-out"):
        demo.make_mini()
    (tmp_path / "mini.json").write_text(json.dumps({"splits": {"train": ["W001"], "test": ["W002"]}}))
    assert demo.make_mini()["splits"] == {"train": ["W001"], "test": ["W002"]}
    assert demo.mini_dir == tmp_path and dataclasses.asdict(demo.o)["mini_source"] == str(tmp_path)


def test_machine_speed_is_measured_quickly():
    """The demo's machine line: a positive matmul rate, measured in about the budget asked for."""
    from emotalk.demo.machine import measure_matmul_gflops

    speed = measure_matmul_gflops(budget_s=0.2, n=256)
    assert speed.gflops > 0.05 and speed.seconds < 5 and speed.threads >= 1
    assert re.match(r"machine: \d+ GFLOP/s fp32 matmul on \d+ thread", speed.line())
    assert speed.to_json()["gflops_fp32_matmul"] == round(speed.gflops, 1)
