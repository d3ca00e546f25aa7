"""Shared fixtures: real S3 servers on 127.0.0.1 for the whole session (moto, and s3rver: a second
implementation, which ignores conditional writes), and temporary stores."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# agno sends usage telemetry from a background thread by default; tests (and the subprocesses they start:
# examples, README snippets, the CLI) must never reach the network.
os.environ["AGNO_TELEMETRY"] = "false"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Start moto's S3 server over HTTP on 127.0.0.1 once per test session; stop it afterwards."""
    server_mod = pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install '.[test]')")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    # werkzeug logs one line per request at INFO; keep it for request-counting tests but off the console.
    logging.getLogger("werkzeug").setLevel(logging.INFO)
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


#: Where `.ci/run` installs s3rver (`npm install --prefix .s3rver s3rver@3`); AIOMEMDB_S3RVER overrides.
S3RVER_BIN = Path(__file__).resolve().parent.parent / ".s3rver" / "node_modules" / ".bin" / "s3rver"
S3RVER_CREDENTIALS = {"aws_access_key_id": "S3RVER", "aws_secret_access_key": "S3RVER"}


def _missing_tool(message: str) -> None:
    """Under CI a missing server fails the run (a skipped S3 suite must not pass as green); locally it skips."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (CI is set: the s3rver tests must run)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def s3rver_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start s3rver (Node) on 127.0.0.1 on a free port once per test session; stop it afterwards."""
    binary = Path(os.environ.get("AIOMEMDB_S3RVER", S3RVER_BIN))
    if not binary.exists():
        _missing_tool(f"s3rver is not installed at {binary}: run `npm install --prefix .s3rver s3rver@3`")
    command = [str(binary), "--address", "127.0.0.1", "--port", "0", "--silent"]
    command += ["--directory", str(tmp_path_factory.mktemp("s3rver"))]
    try:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as exc:  # node itself missing: the script's #! cannot run
        _missing_tool(f"cannot start s3rver ({exc}); is Node.js installed?")
    assert proc.stdout is not None
    seen: list[str] = []
    port = None
    for line in proc.stdout:  # blocks until s3rver says where it listens, or exits (EOF)
        seen.append(line)
        found = re.search(r"listening on [^\s]*:(\d+)", line)
        if found:
            port = int(found.group(1))
            break
    if port is None:
        proc.kill()
        proc.wait()
        pytest.fail(f"s3rver did not start: {''.join(seen)[-2000:]}", pytrace=False)
    # keep reading its output so a full pipe can never block the server
    drain = threading.Thread(target=seen.extend, args=(proc.stdout,), daemon=True)
    drain.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        drain.join(timeout=30)  # EOF once the server has exited
        proc.stdout.close()


@pytest.fixture
def s3rver_client_options(s3rver_endpoint: str) -> dict[str, str]:
    """Options that point an aiobotocore client at s3rver."""
    return {"endpoint_url": s3rver_endpoint, "region_name": "us-east-1", **S3RVER_CREDENTIALS}


@pytest.fixture
async def s3rver_bucket(s3rver_client_options: dict[str, str]) -> str:
    """A fresh, empty bucket on s3rver."""
    aiobotocore_session = pytest.importorskip("aiobotocore.session", reason="aiobotocore is not installed")
    name = f"test-{uuid.uuid4().hex[:12]}"
    async with aiobotocore_session.get_session().create_client("s3", **s3rver_client_options) as client:
        await client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_client_options(s3_endpoint: str) -> dict[str, str]:
    """Options that point an aiobotocore client at the test server."""
    return {
        "endpoint_url": s3_endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }


@pytest.fixture
async def s3_bucket(s3_client_options: dict[str, str]) -> str:
    """A fresh, empty bucket on the test server."""
    aiobotocore_session = pytest.importorskip("aiobotocore.session", reason="aiobotocore is not installed")
    name = f"test-{uuid.uuid4().hex[:12]}"
    session = aiobotocore_session.get_session()
    async with session.create_client("s3", **s3_client_options) as client:
        await client.create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["directory", "hooks", "s3", "s3rver"])
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    """Each persistence in turn, as a factory of fresh instances over the same stored data.

    ``s3rver`` ignores conditional writes, so its S3Persistence runs with ``single_writer=True`` (the store
    refuses it otherwise); every test here has one writer at a time.
    """
    from .backends import DirectoryBackend, HooksBackend, S3Backend

    if request.param == "directory":
        return DirectoryBackend(tmp_path)
    if request.param == "hooks":
        return HooksBackend()
    if request.param == "s3rver":
        options: dict[str, Any] = {**request.getfixturevalue("s3rver_client_options"), "single_writer": True}
        return S3Backend(request.getfixturevalue("s3rver_bucket"), options, name="s3rver")
    return S3Backend(request.getfixturevalue("s3_bucket"), request.getfixturevalue("s3_client_options"))
