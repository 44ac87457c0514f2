"""The command lines: the README's command table against the real parsers, --help/--version, one-line failures."""

from __future__ import annotations

import argparse
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

import inference.__main__ as worker_cli
import inference.quantize as quantize_cli
import runner.__main__ as runner_cli
from inference.config import LogSettings
from inference.kafka_errors import KafkaUnreachable
from runner.run import TIMEOUT_BASE_S, TIMEOUT_PER_FRAME_S

README = Path(__file__).resolve().parents[2] / "README.md"
# The program, then its sub-command words (lower case: VIDEO, [--help] and `|` end them).
ROW = re.compile(r"^\| `python -m (inference|runner)((?: [a-z]+)*)")
OPTION = re.compile(r"--[a-z][a-z-]*")


def commands_section() -> str:
    text = README.read_text()
    start = text.index("\n## Commands\n")
    return text[start : text.index("\n## ", start + 1)]


def readme_rows() -> dict[str, str]:
    """Each command's table row, keyed `inference`, `runner` or `runner <sub-command>`."""
    rows: dict[str, str] = {}
    for line in commands_section().splitlines():
        match = ROW.match(line)
        if match:
            key = match.group(1) + match.group(2)
            assert key not in rows, f"two README rows for {key}"
            rows[key] = line
    return rows


def sub_commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def parsers() -> dict[str, argparse.ArgumentParser]:
    runner = runner_cli.build_parser()
    found = {"inference": worker_cli.build_parser(), "runner": runner}
    found["inference quantize"] = quantize_cli.build_parser()
    found.update(_nested("runner", runner))
    return found


def _nested(prefix: str, parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every sub-command under `parser`, keyed by its words; one with sub-commands of its own has no row."""
    found: dict[str, argparse.ArgumentParser] = {}
    for name, sub in sub_commands(parser).items():
        deeper = _nested(f"{prefix} {name}", sub)
        found.update(deeper or {f"{prefix} {name}": sub})
    return found


def usage_forms(parser: argparse.ArgumentParser, top_level: bool) -> dict[str, str]:
    """How the README writes each argument: `VIDEO`, `--out FILE`, `[--every N]`, `[--version]`, by option."""
    forms: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        if not action.option_strings:
            forms[action.dest] = str(action.metavar or action.dest.upper())
            continue
        option = max(action.option_strings, key=len)
        if option == "--help" and not top_level:
            continue  # said once, above the table, for every sub-command
        text = option if action.nargs == 0 else f"{option} {action.metavar or action.dest.upper()}"
        forms[option] = text if action.required else f"[{text}]"
    return forms


def test_the_readme_has_a_row_for_every_command() -> None:
    assert set(readme_rows()) == set(parsers())


@pytest.mark.parametrize("command", sorted(parsers()))
def test_a_commands_readme_row_matches_its_parser(command: str) -> None:
    row = readme_rows()[command]
    parser = parsers()[command]
    forms = usage_forms(parser, top_level=command in ("inference", "runner"))
    missing = [form for form in forms.values() if form not in row]
    assert not missing, f"the README's {command} row lacks {missing}"
    unknown = set(OPTION.findall(row)) - {o for a in parser._actions for o in a.option_strings}
    assert not unknown, f"the README's {command} row lists options its parser lacks: {sorted(unknown)}"


def test_the_readme_names_the_installed_commands_and_the_shared_options() -> None:
    section = commands_section()
    for text in ("`inference-worker`", "`runner`", "`--help`", "`--version`", "130"):
        assert text in section


def test_the_readme_states_the_default_run_timeout() -> None:
    assert f"{TIMEOUT_BASE_S:g} s + {TIMEOUT_PER_FRAME_S:g} s per sampled frame" in readme_rows()["runner run"]
    help_text = sub_commands(runner_cli.build_parser())["run"].format_help()
    assert f"{TIMEOUT_BASE_S:g} + {TIMEOUT_PER_FRAME_S:g} per sampled frame" in " ".join(help_text.split())


@pytest.fixture
def no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> None:
        raise AssertionError("the worker must not start")

    monkeypatch.setattr(worker_cli, "load_settings", refuse)


@pytest.mark.usefixtures("no_worker")
def test_worker_help_prints_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        worker_cli.main(["--help"])
    assert exited.value.code == 0
    assert "--version" in capsys.readouterr().out


@pytest.mark.usefixtures("no_worker")
@pytest.mark.parametrize("main", [worker_cli.main, runner_cli.main])
def test_version_is_the_installed_packages(main: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip().endswith(f" {version('kafka-frame-detection')}")


@pytest.mark.usefixtures("no_worker")
@pytest.mark.parametrize(
    ("main", "argv", "says"),
    [
        (worker_cli.main, ["--bogus"], "unrecognized arguments: --bogus"),
        (worker_cli.main, ["serve"], "unrecognized arguments: serve"),
        (runner_cli.main, [], "required: command"),
        (runner_cli.main, ["run", "video.mp4"], "required: --out"),
        (runner_cli.main, ["split", "video.mp4", "--video-id", "v", "--every", "0"], "must be at least 1"),
    ],
)
def test_a_usage_error_is_one_line_and_exit_2(
    main: Any, argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert says in lines[0]


def test_the_installed_commands_answer_version_without_a_stack() -> None:
    bin_dir = Path(sys.executable).parent
    for command in ("inference-worker", "runner"):
        completed = subprocess.run(
            [str(bin_dir / command), "--version"], capture_output=True, text=True, timeout=60, check=False
        )
        assert completed.returncode == 0, completed.stderr
        assert completed.stdout.strip() == f"{command} {version('kafka-frame-detection')}"


class FailingWorker:
    failure: BaseException = RuntimeError("boom")

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def stop(self) -> None:
        pass

    async def run(self) -> None:
        raise self.failure


@pytest.fixture
def failing_worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FailingWorker]]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    settings = SimpleNamespace(log=LogSettings(format="json", level="INFO"))
    monkeypatch.setattr(worker_cli, "load_settings", lambda: settings)
    monkeypatch.setattr(worker_cli, "detector_config", lambda _settings: None)
    monkeypatch.setattr(worker_cli, "Worker", FailingWorker)
    yield FailingWorker
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (
            KafkaUnreachable("cannot reach Kafka at 127.0.0.1:9 as PLAINTEXT: ConnectionRefusedError: refused"),
            "cannot reach Kafka at 127.0.0.1:9 as PLAINTEXT: ConnectionRefusedError: refused",
        ),
        (OSError(98, "address already in use"), "OSError: [Errno 98] address already in use"),
        (RuntimeError("boom"), "RuntimeError: boom"),
    ],
)
def test_a_failed_worker_ends_with_one_line_naming_the_cause(
    failing_worker: type[FailingWorker],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    failure: BaseException,
    error: str,
) -> None:
    monkeypatch.setattr(failing_worker, "failure", failure)
    assert worker_cli.main([]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    record = orjson.loads(lines[0])
    assert (record["event"], record["level"], record["error"]) == ("worker_failed", "critical", error)
    # A traceback only for what nobody foresaw: a bug needs one, an operator's mistake does not.
    assert ("exception" in record) is isinstance(failure, RuntimeError)
