"""Every ```python block in docs/*.md and README.md runs, on its own, in a fresh process.

Each block gets a new interpreter, an empty temporary working directory and a temporary
HEADWATER_HOME, so a block may not rely on another block or on the reader's machine.
Use ```text or ```console for anything that is not meant to run.

The blocks run a few at a time in the background (they are mostly start-up time); each
test then waits for its own block and fails naming the file and line where it starts.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FENCE_OPEN = re.compile(r"^```python\s*$")
FENCE_CLOSE = re.compile(r"^```\s*$")
TIMEOUT = 120


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    code: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"


def python_blocks(path: Path) -> list[Block]:
    """The ```python blocks of one markdown file, with the line each starts on."""
    blocks, current, start = [], None, 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if current is None:
            if FENCE_OPEN.match(line):
                current, start = [], number
        elif FENCE_CLOSE.match(line):
            blocks.append(Block(path, start, "\n".join(current) + "\n"))
            current = None
        else:
            current.append(line)
    if current is not None:
        raise AssertionError(f"{path.relative_to(ROOT)}:{start}: ```python block is never closed")
    return blocks


def documents() -> list[Path]:
    return sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]


ALL_BLOCKS = [block for doc in documents() if doc.exists() for block in python_blocks(doc)]


def run_block(block: Block, workdir: Path) -> subprocess.CompletedProcess:
    workdir.mkdir(parents=True)
    script = workdir / "snippet.py"
    script.write_text(block.code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env["HEADWATER_HOME"] = str(workdir / "headwater-home")
    run_dir = workdir / "cwd"
    run_dir.mkdir()
    try:
        return subprocess.run([sys.executable, str(script)], cwd=run_dir, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(exc.cmd, -1, "", f"timed out after {TIMEOUT}s")


@pytest.fixture(scope="module")
def started(request, tmp_path_factory) -> dict[Block, Future]:
    """Start the selected blocks in the background, a few at a time."""
    selected = [item.callspec.params["block"] for item in request.session.items
                if getattr(item, "callspec", None) is not None and "block" in item.callspec.params
                and item.module is request.module]
    base = tmp_path_factory.mktemp("snippets")
    pool = ThreadPoolExecutor(max_workers=max(2, min(6, (os.cpu_count() or 2) * 2)))
    futures = {block: pool.submit(run_block, block, base / f"block{index}")
               for index, block in enumerate(dict.fromkeys(selected))}
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


def test_the_docs_have_python_blocks():
    """The collector finds blocks (so an empty parametrization cannot pass silently)."""
    assert any(block.path.name == "plugins.md" for block in ALL_BLOCKS)


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[block.where for block in ALL_BLOCKS])
def test_python_block_runs_on_its_own(block, started):
    """The block exits 0 in a fresh interpreter with a temporary HEADWATER_HOME and cwd."""
    result = started[block].result()
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-25:])
        pytest.fail(f"{block.where}: this ```python block failed (exit {result.returncode}):\n{tail}",
                    pytrace=False)
