"""`emotalk demo` end to end at a smaller setting: report, videos and tables exist and are valid."""
import re

import pytest

from emotalk.cli.main import main
from emotalk.data.io.media import probe_video


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--size", "tiny", "--workers", "1", "--landmark-steps", "40",
            "--texture-steps", "20", "--finetune-steps", "1", "--eval-clips", "1", "--quiet"]
    assert main(args) == 0
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
    # a second run reuses every stage, and without --quiet it says so and prints the stage times
    assert main(args[:-1]) == 0
    printed = capsys.readouterr().out
    assert printed.count(": reusing ") == 8
    assert "stage times" in printed and "total" in printed and f"report: {out / 'report.html'}" in printed
    for stage in ("mini", "preprocess", "landmark", "texture", "classifier", "generate", "emotions", "evaluate"):
        assert (out / "stages" / f"{stage}.json").is_file()
