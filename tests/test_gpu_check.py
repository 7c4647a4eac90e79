"""benchmarks/gpu_check.sh's CPU-only self-check (argument parsing, the JSON schema) and its schema rules."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_shell_script_self_check_writes_a_valid_document(tmp_path):
    out = tmp_path / "check.json"
    p = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--self-check", "--out", str(out),
                        "--steps", "50"], capture_output=True, text=True, timeout=60,
                       env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr
    doc = json.loads(out.read_text())
    gc = _module()
    assert gc.validate(doc) == [] and doc["ok"] is True and doc["mode"] == "self-check"
    assert set(doc["sections"]) == set(gc.SECTIONS) and doc["arguments"]["steps"] == 50
    assert all(s["status"] == "skipped" for s in doc["sections"].values())


def test_bad_arguments_are_refused():
    gc = _module()
    with pytest.raises(SystemExit):
        gc.parse_args(["--budget", "0"])
    with pytest.raises(SystemExit):
        gc.parse_args(["--no-such-flag"])
    assert gc.parse_args([]).budget == 480.0  # the 8-minute promise


def test_schema_catches_missing_sections_bad_statuses_and_a_loss_that_did_not_fall():
    gc = _module()
    good = {"schema": gc.SCHEMA_VERSION, "mode": "gpu", "environment": {}, "ok": True,
            "sections": {k: {"status": "passed", "seconds": 1.0, "loss_fell": True} for k in gc.SECTIONS}}
    assert gc.validate(good) == []
    bad = json.loads(json.dumps(good))
    del bad["sections"]["ddp"]
    assert any("sections must have" in e for e in gc.validate(bad))
    bad = json.loads(json.dumps(good))
    bad["sections"]["bench_texture"]["status"] = "great"
    assert any("bench_texture.status" in e for e in gc.validate(bad))
    bad = json.loads(json.dumps(good))
    bad["sections"]["train_amp"]["loss_fell"] = False
    assert any("did not fall" in e for e in gc.validate(bad))
    assert gc.validate({**good, "mode": "cpu"}) and gc.validate({**good, "schema": 0})
    assert sum(gc.SHARES.values()) <= 1.0  # sections fit in the budget
