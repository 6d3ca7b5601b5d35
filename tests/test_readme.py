"""Every shell block of README.md runs as written (issue 10): a documented command that crashes
fails CI.

Blocks run in README order in one temporary folder (so the search finds the corpus that the
block before it synthesised), through bash, with ``EMOTUNE_SMOKE=1`` (the CLI then caps epochs,
trials, corpus size and crops, and says so) and a few variables that README's text asks the
reader to set (``$IEMOCAP``: a fixture tree in IEMOCAP's layout; ``$BACKBONE``: ``tiny-wavlm``).
Blocks starting with ``make`` run in the repository root, as README says. A block that cannot
run here carries ``<!-- not run by tests: <reason> -->`` on the line before it; its ``emotune``
commands are still parsed, so their flags exist. A block marked ``<!-- server -->`` runs until
stopped: the test starts it, waits until it answers on its port, then stops it.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from corpus_fixtures import iemocap

from search.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NOT_RUN = re.compile(r"<!--\s*not run by tests:\s*(.+?)\s*-->")
SERVER = "<!-- server -->"


@dataclass(frozen=True)
class Block:
    """One fenced ``bash`` block of README.md."""

    line: int
    text: str
    marker: str  # the line before the fence

    @property
    def skip_reason(self) -> str | None:
        match = NOT_RUN.search(self.marker)
        return match.group(1) if match else None

    @property
    def commands(self) -> list[str]:
        """Commands with continuation lines joined and comments dropped."""
        joined = re.sub(r"\\\n\s*", " ", self.text)
        out = []
        for line in joined.splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            if line:
                out.append(line)
        return out


def readme_blocks() -> list[Block]:
    lines = README.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```bash":
            j = i + 1
            while lines[j].strip() != "```":
                j += 1
            marker = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            blocks.append(Block(i + 1, "\n".join(lines[i + 1 : j]) + "\n", marker.strip()))
            i = j
        i += 1
    return blocks


BLOCKS = readme_blocks()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    work = tmp_path_factory.mktemp("readme")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "EMOTUNE_SMOKE": "1",
        "IEMOCAP": str(iemocap(tmp_path_factory.mktemp("iemocap") / "IEMOCAP_full_release")),
        "BACKBONE": "tiny-wavlm",
        "OUT": str(work / "demo"),  # `make demo` writes there instead of the checkout
        "MLFLOW_PORT": str(_free_port()),
        "RAY_USAGE_STATS_ENABLED": "0",
        "HF_HUB_OFFLINE": "1",
    }
    return work, env


def test_readme_has_the_two_fresh_machine_commands() -> None:
    runnable = [c for b in BLOCKS for c in b.commands]
    assert "make demo" in runnable
    assert any(c == "make test" for b in BLOCKS for c in b.commands)
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M), ".ci/run must call README's test command"


def test_blocks_that_do_not_run_say_why_and_parse() -> None:
    parser = build_parser()
    for block in BLOCKS:
        if block.skip_reason is None:
            continue
        assert len(block.skip_reason) > 10, f"README.md:{block.line}: say why it is not run"
        for command in block.commands:
            if "emotune " not in f"{command} ":
                continue
            words = shlex.split(command[command.index("emotune") :])
            parser.parse_args(words[1:])  # SystemExit on an unknown flag or a bad value


@pytest.mark.parametrize("block", BLOCKS, ids=[f"README.md:{b.line}" for b in BLOCKS])
def test_readme_block_runs_as_written(block: Block, workdir: tuple[Path, dict[str, str]]) -> None:
    if block.skip_reason:
        pytest.skip(block.skip_reason)
    work, env = workdir
    cwd = ROOT if block.commands[0].startswith("make ") else work
    if block.marker == SERVER:
        _serve(block, cwd, env)
        return
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.text],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert done.returncode == 0, f"README.md:{block.line} failed:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr


def _serve(block: Block, cwd: Path, env: dict[str, str]) -> None:
    """Starts a server block, waits (generously) until it answers, then stops it."""
    proc = subprocess.Popen(
        ["bash", "-c", block.text], cwd=cwd, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{env['MLFLOW_PORT']}/"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, f"README.md:{block.line} exited:\n{proc.stdout.read()}"
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    assert response.status == 200
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
