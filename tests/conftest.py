"""Shared fixtures: a real S3 server (moto) on 127.0.0.1 for the whole session, and temporary stores."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
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


@pytest.fixture(params=["directory", "hooks", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    """Each persistence in turn, as a factory of fresh instances over the same stored data."""
    from .backends import DirectoryBackend, HooksBackend, S3Backend

    if request.param == "directory":
        return DirectoryBackend(tmp_path)
    if request.param == "hooks":
        return HooksBackend()
    return S3Backend(request.getfixturevalue("s3_bucket"), request.getfixturevalue("s3_client_options"))
