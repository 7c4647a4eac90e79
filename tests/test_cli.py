"""The CLI dispatcher: logging levels from --verbose/--quiet, where messages go, one-line errors."""
from __future__ import annotations

import logging
import sys
import types

import pytest

from emotalk.cli import main as cli_main
from emotalk.errors import ConfigError
from emotalk.utils.log import PACKAGE_LOGGER, ConsoleHandler, level_for, setup_logging


@pytest.fixture
def fake_command(monkeypatch):
    """``emotalk fake [--fail] [--quiet]``: logs one message per level, or raises a user error."""
    mod = types.ModuleType("emotalk.cli.fake")
    log = logging.getLogger("emotalk.cli.fake")

    def add_arguments(p):
        p.add_argument("--fail", action="store_true")

    def run(args):
        if args.fail:
            raise ConfigError("bad key 'x.y';\n  did you mean 'x.z'?")
        log.debug("debug message")
        log.info("info message")
        log.warning("warning message")
        return 0

    mod.add_arguments, mod.run = add_arguments, run
    monkeypatch.setitem(sys.modules, "emotalk.cli.fake", mod)
    monkeypatch.setitem(cli_main.COMMANDS, "fake", ("fake", "a test command"))
    yield
    setup_logging()  # leave the package logger at its default for later tests


@pytest.mark.parametrize("argv, out, err", [
    (["fake"], ["info message"], ["warning: warning message"]),
    (["fake", "--verbose"], ["debug: emotalk.cli.fake: debug message", "info message"],
     ["warning: warning message"]),
    (["-v", "fake"], ["debug: emotalk.cli.fake: debug message", "info message"], ["warning: warning message"]),
    (["fake", "-q"], [], ["warning: warning message"]),
    (["--quiet", "fake"], [], ["warning: warning message"]),
    (["-q", "fake", "-v"], [], ["warning: warning message"]),  # quiet wins
])
def test_verbose_and_quiet_set_what_is_printed_and_where(fake_command, capsys, argv, out, err):
    assert cli_main.main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == out
    assert captured.err.splitlines() == err


def test_user_error_is_one_line_on_stderr_with_its_exit_code(fake_command, capsys):
    assert cli_main.main(["fake", "--fail"]) == ConfigError.exit_code != 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == ["error: bad key 'x.y'; did you mean 'x.z'?"]


def test_user_error_shows_even_when_quiet(fake_command, capsys):
    assert cli_main.main(["-q", "fake", "--fail"]) != 0
    assert capsys.readouterr().err.startswith("error: bad key")


def test_unknown_config_name_lists_the_shipped_configs(capsys):
    assert cli_main.main(["train", "--config", "landmark/tinyy"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "landmark/tiny" in err[0] and "texture/mead" in err[0]


def test_every_command_accepts_the_logging_options(capsys):
    for name in cli_main.COMMANDS:
        with pytest.raises(SystemExit) as e:
            cli_main.main([name, "--help"])
        assert e.value.code == 0
        text = capsys.readouterr().out
        assert "--verbose" in text and "--quiet" in text, name


def test_setup_logging_is_idempotent_and_follows_stream_swaps(capsys):
    for _ in range(3):
        setup_logging(level_for(verbose=True))
    logger = logging.getLogger(PACKAGE_LOGGER)
    assert sum(isinstance(h, ConsoleHandler) for h in logger.handlers) == 1
    logging.getLogger("emotalk.somewhere").info("once")
    assert capsys.readouterr().out == "once\n"  # one handler -> printed once, to the current sys.stdout
    setup_logging()
    assert logger.level == logging.INFO and level_for(quiet=True) == logging.WARNING
