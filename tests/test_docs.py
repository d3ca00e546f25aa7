"""Every ```python block of README.md and docs/*.md runs as a script and passes ``mypy --strict``.

Each block runs in a fresh subprocess, in an empty temporary directory, with warnings as errors. A block that
names S3 gets moto's S3 server on 127.0.0.1 through the environment botocore reads (``AWS_ENDPOINT_URL`` and
test credentials), with the bucket ``my-bucket`` created, so the sample shows exactly the code a user writes.
Samples that would call a hosted model use ``aiomemdb.agno.testing.OfflineModel`` themselves.

A block that is deliberately a fragment is marked with ``<!-- fragment -->`` on the line before its fence; it
is compiled (a syntax check), not run or type-checked. There are none today.

Also here: the docs say what "O(1)" holds for (and a test proves it), and the MIT license ships.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from aiomemdb import AsyncInMemoryDb, DirectoryPersistence

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(
    r"^(?P<marker><!--\s*fragment\b[^>]*-->[ \t]*\n(?:[ \t]*\n)?)?"  # <!-- fragment --> on the line before
    r"(?P<indent>[ \t]*)```python[^\n]*\n(?P<body>.*?)^(?P=indent)```",
    re.M | re.S,
)
_S3 = re.compile(r"S3Persistence|s3://")


@dataclasses.dataclass(frozen=True)
class Block:
    """One ```python block of a page."""

    page: str  # relative to the repository root
    line: int  # where the block's code starts
    code: str
    fragment: bool

    @property
    def module(self) -> str:
        """A module name for the block: its page and line."""
        return re.sub(r"\W", "_", f"{Path(self.page).stem}_line{self.line}").lower()

    @property
    def uses_s3(self) -> bool:
        return bool(_S3.search(self.code))


def _blocks() -> list[Block]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in _FENCE.finditer(text):
            indent = len(match["indent"])
            code = "".join(line[indent:] if line.strip() else "\n" for line in match["body"].splitlines(True))
            line = text.count("\n", 0, match.start("body")) + 1
            found.append(Block(str(page.relative_to(ROOT)), line, code, fragment=match["marker"] is not None))
    return found


BLOCKS = _blocks()


def _env(**extra: str) -> dict[str, str]:
    """The user's environment without AWS settings or agno telemetry, plus ``extra``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    base.update(AGNO_TELEMETRY="false", PYTHONUTF8="1", AWS_CONFIG_FILE=os.devnull)
    base.update(AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_EC2_METADATA_DISABLED="true")
    base.update(extra)
    return base


def s3_env(endpoint: str) -> dict[str, str]:
    """What a block that names S3 runs with: moto's endpoint and test credentials, as botocore reads them."""
    return _env(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )


def ensure_bucket(endpoint: str, name: str = "my-bucket") -> None:
    """Create the bucket the samples name, once (moto keeps it for the session)."""
    from aiobotocore.session import get_session

    async def create() -> None:
        async with get_session().create_client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
        ) as client:
            buckets = await client.list_buckets()
            if name not in {b["Name"] for b in buckets.get("Buckets", [])}:
                await client.create_bucket(Bucket=name)

    asyncio.run(create())


def test_every_page_with_python_has_its_blocks_collected() -> None:
    """The extraction finds the blocks of every page that has any (so the tests below are not vacuous)."""
    pages = {b.page for b in BLOCKS}
    expected = {"README.md", *(f"docs/{n}.md" for n in ("index", "getting-started", "persistence", "agno", "events"))}
    assert expected | {"docs/multi-replica.md"} <= pages
    assert len(BLOCKS) >= 18
    for page in PAGES:
        assert page.read_text().count("```python") == sum(b.page == str(page.relative_to(ROOT)) for b in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"{b.page}:{b.line}" for b in BLOCKS])
def test_doc_block_runs_as_a_script(block: Block, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The block runs to completion as a script in an empty directory (a fragment at least compiles)."""
    compile(block.code, f"{block.page}:{block.line}", "exec")
    if block.fragment:
        return
    script = tmp_path / "sample.py"
    script.write_text(block.code)
    flags = ["-W", "error"]
    environ = _env()
    if block.uses_s3:
        endpoint = request.getfixturevalue("s3_endpoint")
        ensure_bucket(endpoint)
        environ = s3_env(endpoint)
        flags += ["-W", "ignore::DeprecationWarning"]  # botocore's datetime.utcnow() on newer Pythons
    result = subprocess.run(
        [sys.executable, *flags, str(script)], cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"{block.page} line {block.line}:\n{result.stderr}"


def test_doc_blocks_and_examples_pass_mypy_strict(tmp_path: Path) -> None:
    """All blocks (each as its own module) and examples/ pass ``mypy --strict`` with the project's settings."""
    if importlib.util.find_spec("mypy") is None:
        if os.environ.get("CI"):
            pytest.fail("mypy is not installed; CI installs the dev extra, which has it")
        pytest.skip("mypy is not installed (pip install -e '.[dev]')")
    files = []
    for block in BLOCKS:
        if not block.fragment:
            path = tmp_path / f"{block.module}.py"
            path.write_text(block.code)
            files.append(str(path))
    files += sorted(str(p) for p in (ROOT / "examples").glob("*.py"))
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", str(ROOT / "pyproject.toml"), *files],
        cwd=tmp_path,
        env={**_env(), "MYPY_CACHE_DIR": str(ROOT / ".mypy_cache")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- what O(1) means ---------------------------------------------------------------------------------------------


def test_every_o1_claim_says_what_a_flush_rewrites() -> None:
    """Wherever README.md or the user guide says O(1), it says within the same passage that a flush rewrites."""
    for page in PAGES:
        if page.name == "DESIGN.md":
            continue  # the lead's design notes, on the in-memory representation only
        text = page.read_text()
        for match in re.finditer(r"O\(1\)", text):
            passage = text[max(0, match.start() - 200) : match.end() + 300]
            assert "rewrite" in passage, f"{page.name}: {passage!r}"
    guarantees = (ROOT / "docs" / "guarantees.md").read_text()
    assert "20 MB session" in guarantees
    assert 'durability="journal"' in guarantees


async def test_appending_a_run_rewrites_the_whole_session_object_at_the_next_flush(tmp_path: Path) -> None:
    """upsert_run is cheap in memory, but the next flush writes the whole session; the journal gets only the run."""
    flushed: list[int] = []
    persistence = DirectoryPersistence(tmp_path / "s", fsync=False)
    big = [{"run_id": f"r{i}", "content": "x" * 1000} for i in range(200)]
    async with AsyncInMemoryDb(
        persistence=persistence,
        durability="journal",
        journal_fsync=0,
        flush_interval=3600,
        on_event=lambda e: flushed.append(e.data["bytes"]) if e.kind == "flush" else None,
    ) as db:
        await db.upsert_session({"session_id": "long", "runs": big})
        await db.flush()
        journal = tmp_path / "s" / "journal"

        def journal_bytes() -> int:
            return sum(p.stat().st_size for p in journal.rglob("*") if p.is_file())

        before = journal_bytes()
        await db.upsert_run("long", {"run_id": "new", "content": "y"})
        appended = journal_bytes() - before
        await db.flush()
    stored = persistence.file_for("sessions", "long").stat().st_size
    assert 0 < appended < 1_000  # the journal line carries the run, not the session
    assert flushed[1] >= 200_000  # the flush after one small run rewrote the whole ~200 KB object
    assert flushed[1] == stored


# -- the license -----------------------------------------------------------------------------------------------


def test_the_mit_license_is_in_the_repository_and_in_the_built_distribution() -> None:
    """LICENSE holds the MIT text, pyproject declares it, and the installed distribution's metadata carries it."""
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 aiomemdb developers\n")
    assert "Permission is hereby granted, free of charge" in text
    project: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    # the editable install was built by the same backend as the wheel: its metadata lists and ships the file
    dist = importlib.metadata.distribution("aiomemdb")
    assert "LICENSE" in (dist.metadata.get_all("License-File") or [])
    assert dist.read_text("licenses/LICENSE") == text
