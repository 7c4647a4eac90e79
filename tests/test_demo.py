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
    printed = capsys.readouterr().out
    assert "stage times" in printed and "total" in printed
    report = (out / "report.html").read_text()
    videos = re.findall(r"<video src='([^']+)'", report)
    assert len(videos) >= 7  # five emotions, a blend, the warp baseline, the full photo
    for v in videos:
        info = probe_video(out / v)
        assert info.num_frames > 30 and info.has_audio
    for img in re.findall(r"<img src='([^']+)'", report):
        assert (out / img).stat().st_size > 1000
    assert "<table>" in report and "Static neutral photo" in report and "(paper)" in report
    assert (out / "eval" / "table2.md").is_file() and (out / "eval" / "table2.csv").is_file()
    # a second run reuses every stage
    assert main(args) == 0
    assert capsys.readouterr().out.count(": reusing ") == 6
    for stage in ("mini", "preprocess", "landmark", "texture", "generate", "evaluate"):
        assert (out / "stages" / f"{stage}.json").is_file()
