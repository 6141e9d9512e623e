"""The command line as an operator uses it: real processes, real database file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatd.config import ConfigError, load_settings


def run(tmp: Path, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CHATD_")}
    full_env.update({"CHATD_DATABASE_URL": f"sqlite:///{tmp / 'c.db'}", **env})
    return subprocess.run(
        [sys.executable, "-m", "chatd", *args], input=stdin, env=full_env,
        capture_output=True, text=True, timeout=60,
    )


def test_engineer_add_list_disable(tmp_path: Path) -> None:
    r = run(tmp_path, "engineer", "add", "Alex@Example.com", "--name", "Alex", "--role", "lead",
            "--password-stdin", stdin="a long password\n")
    assert r.returncode == 0, r.stderr
    assert "added lead alex@example.com" in r.stdout
    again = run(tmp_path, "engineer", "add", "alex@example.com", "--name", "A",
                "--password-stdin", stdin="another password\n")
    assert again.returncode == 1 and "exists already" in again.stderr
    short = run(tmp_path, "engineer", "add", "bo@example.com", "--name", "Bo",
                "--password-stdin", stdin="short\n")
    assert short.returncode == 1 and "at least 8" in short.stderr
    listed = run(tmp_path, "engineer", "list")
    assert "alex@example.com\tAlex\tlead\tenabled" in listed.stdout
    assert "a long password" not in listed.stdout
    assert run(tmp_path, "engineer", "disable", "alex@example.com").returncode == 0
    assert "\tdisabled\t" in run(tmp_path, "engineer", "list").stdout
    missing = run(tmp_path, "engineer", "disable", "nobody@example.com")
    assert missing.returncode == 1 and "no engineer" in missing.stderr


def test_bad_settings_are_all_reported_and_nothing_starts(tmp_path: Path) -> None:
    r = run(tmp_path, "serve", CHATD_OFFER_TIMEOUT="soon", CHATD_ALLOW_GUESTS="maybe",
            CHATD_ALLOWED_ORIGINS="*", CHATD_WIDGET_SECRET="short", CHATD_PORTT="1")
    assert r.returncode == 2
    for expected in ("CHATD_OFFER_TIMEOUT: must be a number", "CHATD_ALLOW_GUESTS: must be true",
                     "CHATD_ALLOWED_ORIGINS: '*' is not allowed", "CHATD_PORTT: unknown setting",
                     "CHATD_WIDGET_SECRET must be at least 32"):
        assert expected in r.stderr, r.stderr
    assert "short" not in r.stderr.replace("CHATD_WIDGET_SECRET", "")


def test_toml_file_and_environment_precedence(tmp_path: Path) -> None:
    cfg = tmp_path / "chatd.toml"
    cfg.write_text('offer_timeout = 20\ngrace_seconds = 90\nallowed_origins = ["https://a.example"]\n')
    s = load_settings({"CHATD_GRACE_SECONDS": "30"}, cfg)
    assert (s.offer_timeout, s.grace_seconds, s.allowed_origins) == (20, 30, ("https://a.example",))
    cfg.write_text("offer_timout = 20\n")
    with pytest.raises(ConfigError, match="unknown setting 'offer_timout'"):
        load_settings({}, cfg)
    with pytest.raises(ConfigError, match="unsupported database URL scheme"):
        load_settings({"CHATD_DATABASE_URL": "mysql://x"})


def test_trusted_proxies_are_addresses_or_networks() -> None:
    s = load_settings({"CHATD_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1 ,::1"})
    assert s.trusted_proxies == ("10.0.0.0/8", "127.0.0.1/32", "::1/128")
    assert load_settings({}).trusted_proxies == ()
    with pytest.raises(ConfigError, match="'proxy.local' is not an IP address or network"):
        load_settings({"CHATD_TRUSTED_PROXIES": "10.0.0.1,proxy.local"})


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://chatd:s3cret-pw@127.0.0.1:1/chatd", "Connect call failed"),
        ("postgresql://postgres@127.0.0.1:5432/chatd_no_such_database",
         'database "chatd_no_such_database" does not exist'),
    ],
)
def test_a_database_that_cannot_be_opened_is_one_clear_line(
    tmp_path: Path, url: str, says: str
) -> None:
    for args in (("engineer", "list"), ("serve", "--port", "0")):
        r = run(tmp_path, *args, CHATD_DATABASE_URL=url)
        assert r.returncode == 1
        assert r.stderr.startswith("chatd: cannot open the database postgresql://"), r.stderr
        assert says in r.stderr and "Traceback" not in r.stderr
        assert "s3cret-pw" not in r.stderr
