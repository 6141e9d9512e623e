"""The demo never reaches production: real ``chatd`` processes, real database files.

`make run` creates accounts whose passwords are published. These tests check that it keeps
them in a database of its own, that a production `chatd serve` refuses a database that
holds them (as one written by an older `make run` does) until `chatd engineer remove-demo`
disables them, and that afterwards neither their passwords nor their tokens work.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import socketio

from bench.server_process import ServerProcess, child_env, free_port
from tests.process import connect

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEMO = {"demo@example.com": "demo-password", "lead@example.com": "lead-password"}
SECRET = "production-widget-secret-0123456789abcdef"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of an operator's shell: no CHATD_* settings but the ones given."""
    return child_env({
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "CHATD_LOG_LEVEL": "warning",
        **extra,
    })


def chatd(cwd: Path, *args: str, stdin: str = "", timeout: float = 60,
          **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatd", *args], cwd=cwd, env=clean_env(**env), input=stdin,
        capture_output=True, text=True, timeout=timeout,
    )


class Running:
    """A shell command that ends in a chatd server, in its own process group."""

    def __init__(self, cwd: Path, script: str, port: int, env: dict[str, str],
                 stdin: str = "") -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = cwd / f"server-{port}.log"
        self.server = ServerProcess.start(
            "chatd", ["bash", "-c", script], url=self.url, env=env, cwd=cwd, log=self.log,
            stdin=stdin.encode(), group=True, grace=20.0,
        )

    async def ready(self) -> None:
        await self.server.wait_ready(timeout=60.0)

    def stop(self) -> None:
        self.server.stop()


def serve(cwd: Path, *flags: str, **env: str) -> Running:
    port = free_port()
    script = f"exec {sys.executable} -m chatd serve --host 127.0.0.1 --port {port} " + " ".join(
        flags
    )
    return Running(cwd, script, port, clean_env(**env))


@pytest.fixture
def running() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for r in started:
        r.stop()


async def login(url: str, email: str, password: str) -> tuple[int, str | None]:
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/api/login", json={"email": email, "password": password},
                             headers={"Origin": url}) as r:
            body = await r.json()
            return r.status, body.get("token")


async def assert_demo_is_dead(url: str, tokens: list[str]) -> None:
    """No published password signs in, and no token issued to a demo account works."""
    for email, password in DEMO.items():
        status, token = await login(url, email, password)
        assert (status, token) == (401, None), email
    async with aiohttp.ClientSession() as http:
        for token in tokens:
            async with http.get(url + "/api/me",
                                headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 401
            with pytest.raises(socketio.exceptions.ConnectionError):
                await connect(url, "/engineer", {"token": token})


def demo_accounts_in(db: Path) -> set[str]:
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT email FROM engineers WHERE disabled = 0").fetchall()
    return {r[0] for r in rows} & set(DEMO)


async def write_old_demo_database(cwd: Path, running: list[Running]) -> list[str]:
    """What `make run` left before the demo had its own database: the two demo accounts in
    var/chatd.db, each with a live token from a sign-in."""
    db = f"sqlite:///{(cwd / 'var' / 'chatd.db').resolve()}"
    demo = serve(cwd, "--demo", CHATD_DATABASE_URL=db)
    running.append(demo)
    await demo.ready()
    tokens = [t for email, pw in DEMO.items() if (t := (await login(demo.url, email, pw))[1])]
    demo.stop()
    assert len(tokens) == 2 and demo_accounts_in(cwd / "var" / "chatd.db") == set(DEMO)
    return tokens


def make_run_script(port: int) -> str:
    """The commands `make run` runs, with its set-up (venv, web assets) taken as done."""
    out = subprocess.run(
        ["make", "-s", "-n", "-o", ".venv/.installed", "-o", "web", f"BIN={BIN}",
         f"PORT={port}", "run"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    assert "chatd serve --demo" in out.splitlines()[-1], out
    return "set -e\n" + out


async def test_make_run_keeps_its_accounts_out_of_the_production_database(
    tmp_path: Path, running: list[Running]
) -> None:
    # The shell already exports production's database, as an operator's might.
    prod_db = f"sqlite:///{tmp_path / 'var' / 'chatd.db'}"
    port = free_port()
    demo = Running(tmp_path, make_run_script(port), port, clean_env(CHATD_DATABASE_URL=prod_db))
    running.append(demo)
    await demo.ready()
    status, _ = await login(demo.url, "lead@example.com", "lead-password")
    assert status == 200
    demo.stop()
    assert not (tmp_path / "var" / "chatd.db").exists()
    assert not (tmp_path / "uploads").exists()
    demo_dbs = [p for p in (tmp_path / "var").rglob("*.db") if demo_accounts_in(p)]
    assert [p.relative_to(tmp_path) for p in demo_dbs] == [Path("var/demo/demo.db")]

    # Production, as the README starts it, in the same folder afterwards.
    prod = serve(tmp_path, CHATD_WIDGET_SECRET=SECRET)
    running.append(prod)
    await prod.ready()
    await assert_demo_is_dead(prod.url, [])
    assert demo_accounts_in(tmp_path / "var" / "chatd.db") == set()


async def test_chatd_serve_demo_defaults_to_its_own_database(
    tmp_path: Path, running: list[Running]
) -> None:
    demo = serve(tmp_path, "--demo")
    running.append(demo)
    await demo.ready()
    demo.stop()
    assert demo_accounts_in(tmp_path / "var" / "demo" / "demo.db") == set(DEMO)
    assert not (tmp_path / "var" / "chatd.db").exists()
    assert not (tmp_path / "uploads").exists()


async def test_serve_refuses_a_database_with_demo_accounts_until_they_are_removed(
    tmp_path: Path, running: list[Running]
) -> None:
    db = f"sqlite:///{tmp_path / 'var' / 'chatd.db'}"
    # A demo that ran on this database and signed both accounts in, as before; then the
    # operator added their own engineer.
    tokens = await write_old_demo_database(tmp_path, running)
    added = chatd(tmp_path, "engineer", "add", "alex@example.com", "--name", "Alex",
                  "--password-stdin", stdin="alex's own password\n", CHATD_DATABASE_URL=db)
    assert added.returncode == 0, added.stderr

    refused = chatd(tmp_path, "serve", "--port", str(free_port()), timeout=30,
                    CHATD_DATABASE_URL=db, CHATD_WIDGET_SECRET=SECRET)
    assert refused.returncode == 1
    assert "demo@example.com" in refused.stderr and "lead@example.com" in refused.stderr
    assert "chatd engineer remove-demo" in refused.stderr
    assert "chatd listening" not in refused.stdout

    removed = chatd(tmp_path, "engineer", "remove-demo", CHATD_DATABASE_URL=db)
    assert removed.returncode == 0, removed.stderr
    assert "demo@example.com" in removed.stdout and "lead@example.com" in removed.stdout
    again = chatd(tmp_path, "engineer", "remove-demo", CHATD_DATABASE_URL=db)
    assert again.returncode == 0 and "no demo accounts" in again.stdout

    prod = serve(tmp_path, CHATD_DATABASE_URL=db, CHATD_WIDGET_SECRET=SECRET)
    running.append(prod)
    await prod.ready()
    await assert_demo_is_dead(prod.url, tokens)
    status, token = await login(prod.url, "alex@example.com", "alex's own password")
    assert status == 200 and token
    eng = await connect(prod.url, "/engineer", {"token": token})
    await eng.disconnect()

    # Enabling a demo account again brings back a published password: refused again.
    assert chatd(tmp_path, "engineer", "enable", "lead@example.com",
                 CHATD_DATABASE_URL=db).returncode == 0
    prod.stop()
    refused = chatd(tmp_path, "serve", "--port", str(free_port()), timeout=30,
                    CHATD_DATABASE_URL=db, CHATD_WIDGET_SECRET=SECRET)
    assert refused.returncode == 1 and "lead@example.com" in refused.stderr


def test_serve_refuses_the_published_demo_widget_secret(tmp_path: Path) -> None:
    from chatd.cli import DEMO_WIDGET_SECRET

    r = chatd(tmp_path, "serve", "--port", str(free_port()), timeout=30,
              CHATD_DATABASE_URL=f"sqlite:///{tmp_path / 'c.db'}",
              CHATD_WIDGET_SECRET=DEMO_WIDGET_SECRET)
    assert r.returncode == 2
    assert "CHATD_WIDGET_SECRET" in r.stderr and "published" in r.stderr
    assert DEMO_WIDGET_SECRET not in r.stderr


def test_demo_refuses_a_database_with_other_accounts(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'prod.db'}"
    assert chatd(tmp_path, "engineer", "add", "alex@example.com", "--name", "Alex",
                 "--password-stdin", stdin="alex's own password\n",
                 CHATD_DATABASE_URL=db).returncode == 0
    r = chatd(tmp_path, "serve", "--demo", "--port", str(free_port()), timeout=30,
              CHATD_DATABASE_URL=db)
    assert r.returncode == 1
    assert "alex@example.com" in r.stderr and "CHATD_DATABASE_URL" in r.stderr
    assert demo_accounts_in(tmp_path / "prod.db") == set()


def readme_production_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Running it for real", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    return [line for line in block.group(1).splitlines() if line.strip()]


async def test_the_readme_production_path_after_an_old_make_run(
    tmp_path: Path, running: list[Running]
) -> None:
    """The README's commands, literally, in a folder where an older `make run` left the
    demo accounts in var/chatd.db. Three substitutions only: the venv stands in for
    `pip install .`, a real secret for `...`, and a free port for 8080."""
    tokens = await write_old_demo_database(tmp_path, running)
    commands = readme_production_commands()
    assert commands[0].startswith("pip install .")
    assert commands[-1] == "chatd serve --host 0.0.0.0 --port 8080"
    port = free_port()
    script = ["set -e"]
    for line in commands[1:-1]:
        script.append(line.replace("CHATD_WIDGET_SECRET=...", f"CHATD_WIDGET_SECRET={SECRET}"))
    script.append("exec " + commands[-1].replace("--port 8080", f"--port {port}"))
    # `chatd engineer add` without --password-stdin asks twice; without a terminal it reads
    # standard input.
    prod = Running(tmp_path, "\n".join(script), port, clean_env(),
                   stdin="alex's own password\nalex's own password\n")
    running.append(prod)
    await prod.ready()
    await assert_demo_is_dead(prod.url, tokens)
    status, _ = await login(prod.url, "alex@example.com", "alex's own password")
    assert status == 200
