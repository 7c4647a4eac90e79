"""The README stays true: its test command is what CI runs, and its Python example runs."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_ci_runs_the_readme_test_command():
    commands = [b.strip() for b in _blocks("bash")]
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = next(c for c in commands if "pytest" in c)
    assert test_cmd in ci


def test_readme_python_example_runs(capsys):
    # ```python blocks are self-contained and run here; ```py blocks need trained checkpoints
    for block in _blocks("python"):
        exec(compile(block, "README.md", "exec"), {})
    assert "torch.Size([4, 68, 2])" in capsys.readouterr().out
