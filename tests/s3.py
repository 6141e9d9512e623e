"""A real S3-compatible server for tests: moto in server mode, as its own process on a free
loopback port, stopped by its PID; and a bucket of each test's own in it.

Use the fixtures from a test module (or a conftest) with
``from tests.s3 import moto_server, s3_bucket  # noqa: F401`` and then
``s3_settings(moto_server, s3_bucket)`` for chatd's settings (``CHATD_S3_*``, or
``s3_env`` for a ``chatd serve`` process)."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.server_process import free_port, stop_process

ACCESS_KEY_ID = "chatd-test-key"
SECRET_ACCESS_KEY = "chatd-test-secret-0123456789"
REGION = "us-east-1"
START_TIMEOUT = 30.0


@dataclass
class MotoServer:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path


def start_moto(log: Path) -> MotoServer:
    """moto's S3 server on 127.0.0.1 at a free port, once it answers."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    server = MotoServer(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited: {log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(server.url + "/", timeout=1):
                return server
        except urllib.error.HTTPError:  # an answer all the same
            return server
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                stop_moto(server)
                raise RuntimeError("moto server did not answer in time") from None
            time.sleep(0.1)


def stop_moto(server: MotoServer) -> None:
    stop_process(server.proc, grace=10.0)


@contextlib.asynccontextmanager
async def s3_client(url: str) -> AsyncIterator[Any]:
    """An aiobotocore S3 client of the test's own (not chatd's) on the server at ``url``."""
    from aiobotocore.session import get_session

    async with get_session().create_client(
        "s3", endpoint_url=url, region_name=REGION, aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    ) as client:
        yield client


async def create_bucket(url: str) -> str:
    """A new bucket with a unique name."""
    name = f"chatd-test-{secrets.token_hex(6)}"
    async with s3_client(url) as client:
        await client.create_bucket(Bucket=name)
    return name


async def delete_bucket(url: str, bucket: str) -> None:
    """Empty the bucket and remove it."""
    async with s3_client(url) as client:
        for key in await object_keys(url, bucket):
            await client.delete_object(Bucket=bucket, Key=key)
        await client.delete_bucket(Bucket=bucket)


async def object_keys(url: str, bucket: str, prefix: str = "") -> set[str]:
    async with s3_client(url) as client:
        keys: set[str] = set()
        paginator = client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            keys.update(entry["Key"] for entry in page.get("Contents", []))
        return keys


async def get_object(url: str, bucket: str, key: str) -> bytes:
    async with s3_client(url) as client:
        response = await client.get_object(Bucket=bucket, Key=key)
        async with response["Body"] as body:
            data: bytes = await body.read()
            return data


async def put_object(url: str, bucket: str, key: str, data: bytes) -> None:
    async with s3_client(url) as client:
        await client.put_object(Bucket=bucket, Key=key, Body=data)


def s3_settings(server: MotoServer, bucket: str, prefix: str = "") -> dict[str, Any]:
    """chatd's settings (``Settings`` fields) for the object store at ``server``."""
    return {
        "s3_url": server.url, "s3_bucket": bucket, "s3_region": REGION, "s3_prefix": prefix,
        "s3_access_key_id": ACCESS_KEY_ID, "s3_secret_access_key": SECRET_ACCESS_KEY,
    }


def s3_env(server: MotoServer, bucket: str, prefix: str = "") -> dict[str, str]:
    """The same as ``CHATD_*`` variables, for a ``chatd serve`` process."""
    return {f"CHATD_{k.upper()}": str(v) for k, v in s3_settings(server, bucket, prefix).items()}


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One moto server for the test run (each test has its own bucket in it)."""
    server = start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server
    finally:
        stop_moto(server)


@pytest.fixture
async def s3_bucket(moto_server: MotoServer) -> AsyncIterator[str]:
    """A bucket of the test's own, emptied and removed after it."""
    bucket = await create_bucket(moto_server.url)
    yield bucket
    await delete_bucket(moto_server.url, bucket)
