"""`emotalk demo` end to end at a smaller setting: report, videos and tables exist and are valid.

Cost (CI budget): the demo reads the session's mead-mini ``tiny`` (``tiny_mini_raw``, the same
``generate_mini("tiny", seed=0)`` the demo would run; ``--mini`` is a user option too) instead of generating
it again, and G_T trains at 64x64 (the fixtures' size), which makes every rendering stage after it ~4x
cheaper. Every other stage runs as a user's demo does: preprocessing with phoneme features, G_L, G_T, the
emotion classifier, generation, the emotions panel, evaluation and the report.
"""
import argparse
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
    # the plan beside the times, for the lead to quote: printed, and in stages/summary.json
    assert re.search(r"budget: total [\d.]+ s of 360 s planned", printed)
    summary = json.loads((out / "stages" / "summary.json").read_text())
    assert summary["budget"].startswith("budget: total") and summary["machine"]["gflops_fp32_matmul"] > 0
    assert len(summary["reused"]) == 8 and set(summary["stage_budget_s"]) >= set(summary["reused"])


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


def test_landmarks_option_reaches_the_preprocessing(tmp_path, monkeypatch):
    """--landmarks sidecar trains on mead-mini's ground-truth landmarks: the option travels from the command
    line to the preprocessing call; 'detect' (dlib, as for real MEAD) stays the default; others are refused."""
    import emotalk.demo.run as demo_run
    seen = []
    monkeypatch.setattr(demo_run, "preprocess_dataset", lambda *a, options=None, **kw: seen.append(options))
    demo_run.Demo(DemoOptions(out=str(tmp_path), landmarks="sidecar")).preprocess()
    demo_run.Demo(DemoOptions(out=str(tmp_path))).preprocess()
    assert [o.landmark_source for o in seen] == ["sidecar", "detect"]
    parser = argparse.ArgumentParser()
    cli_demo.add_arguments(parser)
    assert parser.parse_args(["--landmarks", "sidecar"]).landmarks == "sidecar"
    assert parser.parse_args([]).landmarks == "detect"
    with pytest.raises(SystemExit):
        parser.parse_args(["--landmarks", "oracle"])
    # G_L trains on the clips' exact track when they have one, and validates with the classifier once trained
    import numpy as np

    from emotalk.data.io.clip import Clip, clip_path, save_clip
    from emotalk.models.face_graph import canonical_template

    demo = demo_run.Demo(DemoOptions(out=str(tmp_path)))
    tpl = canonical_template().astype(np.float32)
    clip = dict(landmarks=np.stack([tpl, tpl]), neutral_landmarks=tpl, audio_features=np.zeros((2, 4, 3), np.float32),
                emotion="happy", intensity=1, fps=30.0, subject="W001", clip_id="a", feature_kind="mel")
    save_clip(Clip(**clip), clip_path(demo.processed_dir, "W001", "a"))
    assert demo.landmark_stage() == ("landmark/tiny", "landmark", [])  # detected landmarks only: as before
    save_clip(Clip(**clip, true_landmarks=np.stack([tpl, tpl]), true_neutral_landmarks=tpl),
              clip_path(demo.processed_dir, "W001", "a"))
    assert demo.landmark_stage() == ("landmark/tiny-exact", "landmark", [])
    ckpt = demo.checkpoints / "landmark_emotion" / "checkpoints"
    ckpt.mkdir(parents=True)
    (ckpt / "step_00000600.json").write_text("{}")
    (ckpt / "step_00000600.safetensors").write_bytes(b"")
    demo.o.landmark_overrides.append("train.steps=40")
    assert demo.landmark_stage()[2] == [f"validation.landmark_emotion_classifier={ckpt.parent}", "train.steps=40"]


def test_machine_speed_is_measured_quickly():
    """The demo's machine line: a positive matmul rate, measured in about the budget asked for."""
    from emotalk.demo.machine import measure_matmul_gflops

    speed = measure_matmul_gflops(budget_s=0.2, n=256)
    assert speed.gflops > 0.05 and speed.seconds < 5 and speed.threads >= 1
    assert re.match(r"machine: \d+ GFLOP/s fp32 matmul on \d+ thread", speed.line())
    assert speed.to_json()["gflops_fp32_matmul"] == round(speed.gflops, 1)


def test_budget_names_the_stage_that_overran_scaled_to_the_machine(tmp_path):
    """Known numbers: at half the reference rate every budget doubles; a stage over its doubled budget is
    named with both numbers, the total against 2 x 360 s; the report and stages/summary.json carry the line."""
    from emotalk.demo.budget import STAGE_BUDGET_S, check_budget
    from emotalk.demo.machine import REFERENCE_GFLOPS, MachineSpeed

    assert sum(STAGE_BUDGET_S.values()) <= 360  # the plan fits the promise, with headroom
    half = MachineSpeed(gflops=REFERENCE_GFLOPS / 2, threads=2, seconds=1.0)
    seconds = {"mini": 0.0, "generate": 2 * STAGE_BUDGET_S["generate"] + 1, "evaluate": 10.0}
    check = check_budget(seconds, half, reused=["mini"])
    assert check.scale == pytest.approx(2.0) and check.total_budget == pytest.approx(720.0)
    assert check.budget["generate"] == pytest.approx(2 * STAGE_BUDGET_S["generate"])
    assert list(check.over) == ["generate"] and not check.within
    line = check.line()
    assert f"generate {seconds['generate']:.1f} s > {2 * STAGE_BUDGET_S['generate']:.0f} s" in line
    assert "x2.00" in line and "within" in line and "not timed: mini" in line
    assert "OVERRAN" in check.overrun_lines()[0]
    fast = check_budget({"evaluate": 10.0}, MachineSpeed(gflops=10 * REFERENCE_GFLOPS, threads=2, seconds=1.0))
    assert fast.scale == 1.0 and fast.within  # a faster machine keeps the reference budget, never a smaller one
    over = check_budget({"texture": 400.0})
    assert "OVER by 40.0 s" in over.line()

    demo = Demo(DemoOptions(out=str(tmp_path)))
    demo.stage_seconds, demo.machine, demo.reused = dict(seconds), half, ["mini"]
    demo.write_summary()
    summary = json.loads((tmp_path / "stages" / "summary.json").read_text())
    assert summary["budget"] == line and summary["over"]["generate"]["seconds"] == round(seconds["generate"], 1)
    assert summary["machine"]["gflops_fp32_matmul"] == round(half.gflops, 1) and summary["total_s"] == round(sum(seconds.values()), 1)

    from emotalk.demo.report import write_report

    html = write_report(tmp_path / "report.html", videos=[], images=[], tables=[], stage_seconds=seconds,
                        stage_budget=check.budget).read_text()
    assert re.search(r"<tr style='color:#b00[^>]*><td>generate</td>", html)  # the overrun is marked
    assert "<tr><td>evaluate</td><td>10.0</td>" in html


def test_shared_pipeline_fine_tunes_each_face_once_and_renders_the_plain_pipelines_frames(tiny_checkpoints,
                                                                                        tiny_mini_data, tmp_path):
    """The demo's pipeline: the same face reached as a PNG file and as an array is prepared and fine-tuned
    once, and every emotion renders what the plain pipeline (which fine-tunes on every call) renders."""
    import cv2
    import numpy as np

    from emotalk.data.io.clip import load_subject, subject_path
    from emotalk.demo.shared import SharedPipeline
    from emotalk.inference import Pipeline

    image = load_subject(subject_path(tiny_mini_data.processed, "W001")).image  # a 256x256 face crop
    png = tmp_path / "face.png"
    cv2.imwrite(str(png), image[..., ::-1])
    plain = Pipeline.from_checkpoints(tiny_checkpoints, device="cpu")
    shared = SharedPipeline.from_checkpoints(tiny_checkpoints, device="cpu")

    def render(pipe, photo, emotion):
        lm = np.stack([photo.aligned] * 2)
        lm[1, 57:60, 1] += 0.05  # a second frame with the lower lip moved
        # no fine-tuning steps: what is shared (photo, person mask, renderer, emotion swap) is the demo's code;
        # that one-shot fine-tuning is deterministic is tests/test_one_shot.py's to check
        return np.stack(list(pipe.render_frames(photo, lm, emotion, 3, finetune_steps=0, paste=False)))

    expected = {e: render(plain, plain.prepare_photo(image, size=64), e) for e in ("happy", "sad")}
    got = {"happy": render(shared, shared.prepare_photo(png, size=64), "happy"),
           "sad": render(shared, shared.prepare_photo(image, size=64), "sad")}
    assert shared.prepare_photo(png, size=64) is shared.prepare_photo(png, size=64)
    for e in expected:
        diff = np.abs(got[e].astype(int) - expected[e].astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.01, (e, diff.max(), diff.mean())
    assert not np.array_equal(got["happy"], got["sad"])  # each call still renders its own emotion
    assert shared.counts["neural renderer miss"] == 1 and shared.counts["neural renderer hit"] == 1
    assert shared.counts["photo miss"] == 2  # a file and an array: two inputs, one face crop, one fine-tuning
    # G_L asked twice for the same windows, emotion and face (the grid of the neural and of the warp row): run
    # once, equal to the plain pipeline's, and the caller's copy is its own
    photo = shared.prepare_photo(image, size=64)
    windows = np.random.default_rng(0).standard_normal((6, shared.window, shared.feature_dim)).astype(np.float32)
    e = shared.landmark_emotion("happy", 3)
    first = shared.predict_landmarks(windows, e, photo.aligned)
    first += 1.0
    again = shared.predict_landmarks(windows, e, photo.aligned)
    assert np.array_equal(again, plain.predict_landmarks(windows, e, photo.aligned))
    assert shared.counts["landmarks miss"] == 1 and shared.counts["landmarks hit"] == 1
    assert not np.array_equal(shared.predict_landmarks(windows, shared.landmark_emotion("sad", 3), photo.aligned),
                              again)


def test_map_forked_spreads_work_over_processes_on_one_thread_each():
    """The videos and panels are made by this process and a forked one, each on one torch thread; results come
    back in the items' order, a child's error is raised here, and the thread count is restored."""
    import os

    import torch

    from emotalk.demo.forked import map_forked, shares
    from emotalk.errors import InputError

    assert shares(list("abcde"), 2, cost=lambda c: 4.0 if c == "a" else 1.0) == [[0], [1, 2, 3, 4]]
    assert shares([1, 2], 4) == [[0], [1]]  # no empty shares
    before = torch.get_num_threads()
    out = map_forked(lambda x: (x * 2, os.getpid(), torch.get_num_threads()), range(5), workers=2)
    assert [r[0] for r in out] == [0, 2, 4, 6, 8]
    assert len({r[1] for r in out}) == 2 and {r[2] for r in out} == {1}
    assert torch.get_num_threads() == before
    assert [r[1] for r in map_forked(lambda x: (x, os.getpid()), range(3), workers=1)] == [os.getpid()] * 3

    def fail(x):
        if x == 3:
            raise InputError("item 3 is bad")
        return x

    with pytest.raises(InputError, match="item 3"):
        map_forked(fail, range(4), workers=2)
