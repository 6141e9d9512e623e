"""The command line: ``chatd serve``, ``chatd engineer add|list|disable|enable|remove-demo``,
``chatd handoff list|show|retry``, ``chatd simulate``, ``chatd db copy``, ``chatd backup``,
``chatd restore``, ``chatd purge``, ``chatd customer export|erase|erasures``."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from .config import ConfigError, Settings, load_settings
from .core.errors import DeskError
from .core.models import Role
from .core.ports import Store
from .logs import setup_logging

GIL_SWITCH_INTERVAL = 0.0005  # seconds; Python's default is 0.005 (see serve)
DEMO_ACCOUNTS = (
    ("demo@example.com", "Dana Demo", Role.ENGINEER, "demo-password"),
    ("lead@example.com", "Lee Lead", Role.LEAD, "lead-password"),
)
DEMO_WIDGET_SECRET = "demo-widget-secret-change-me-0123456789"
# Where `serve --demo` keeps its database and uploads unless told otherwise; its handoff
# folder follows the database (var/demo/handoff). Never the production defaults.
DEMO_DATABASE_URL = "sqlite:///var/demo/demo.db"
DEMO_UPLOAD_DIR = "var/demo/uploads"
REMOVE_DEMO = "chatd engineer remove-demo"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chatd", description="Live chat for support desks")
    p.add_argument("--config", help="TOML settings file (also CHATD_CONFIG)")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--config", dest="serve_config", help="TOML settings file")
    serve.add_argument(
        "--demo", action="store_true",
        help="allow guests and create the demo engineer accounts, in var/demo/ unless "
             "CHATD_DATABASE_URL and CHATD_UPLOAD_DIR say otherwise (for trying chatd out)",
    )

    eng = sub.add_parser("engineer", help="manage engineer accounts")
    esub = eng.add_subparsers(dest="action", required=True)
    add = esub.add_parser("add", help="add an engineer")
    add.add_argument("email")
    add.add_argument("--name", required=True)
    add.add_argument("--role", choices=[r.value for r in Role], default="engineer")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from standard input instead of prompting")
    esub.add_parser("list", help="list engineers")
    dis = esub.add_parser("disable", help="disable an engineer and close their sessions")
    dis.add_argument("email")
    ena = esub.add_parser("enable", help="enable a disabled engineer")
    ena.add_argument("email")
    esub.add_parser(
        "remove-demo",
        help="disable the demo accounts whose passwords are published, and revoke their tokens",
    )
    from .handoff import cli as handoff_cli

    handoff_cli.add_parser(sub)
    from . import erasure

    erasure.add_parser(sub)
    from .sim import cli as sim_cli

    sim_cli.add_parser(sub)
    from .store import copy as db_cli

    db_cli.add_parser(sub)
    from . import backup

    backup.add_parsers(sub)
    from . import retention

    retention.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "simulate":  # no settings: a simulated desk is its own
        from .sim import cli as sim_cli

        return sim_cli.run(args)
    if args.command == "db":  # no settings: the databases are named on the command line
        from .store import copy as db_cli

        return db_cli.run(args)
    config = getattr(args, "serve_config", None) or args.config
    overrides: dict[str, Any] = {}
    if args.command == "serve":
        overrides = {"host": args.host, "port": args.port}
        if args.demo:
            overrides["demo"] = True
    try:
        settings = load_settings(config_file=config, **overrides)
    except ConfigError as exc:
        print(f"chatd: {exc}", file=sys.stderr)
        return 2
    if settings.demo:
        settings = _demo_settings(settings)
    elif args.command == "serve" and settings.widget_secret == DEMO_WIDGET_SECRET:
        print("chatd: invalid configuration:\n  CHATD_WIDGET_SECRET is the demo's published "
              "value: anyone could sign customer tokens; choose a secret of your own",
              file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    if args.command == "serve":
        return serve(settings)
    if args.command == "handoff":
        return asyncio.run(_handoff_command(settings, args))
    if args.command == "customer":
        from . import erasure

        return asyncio.run(_with_store(settings, lambda store: erasure.run(
            store, settings, args, sys.stdout, sys.stderr
        )))
    if args.command == "purge":
        from . import retention

        return asyncio.run(_with_store(settings, lambda store: retention.command(
            store, settings, args.dry_run, sys.stdout
        )))
    if args.command in ("backup", "restore"):
        from . import backup

        return backup.run(settings, args)
    return asyncio.run(_engineer_command(settings, args))


def _demo_settings(settings: Settings) -> Settings:
    import dataclasses

    defaults = Settings()
    # The demo's accounts have published passwords: they must never land in the database a
    # plain `chatd serve` uses, which is what the defaults name.
    return dataclasses.replace(
        settings,
        allow_guests=True,
        widget_secret=settings.widget_secret or DEMO_WIDGET_SECRET,
        database_url=(DEMO_DATABASE_URL if settings.database_url == defaults.database_url
                      else settings.database_url),
        upload_dir=(DEMO_UPLOAD_DIR if settings.upload_dir == defaults.upload_dir
                    else settings.upload_dir),
    )


def serve(settings: Settings) -> int:
    from .app import create_app, serve_app

    if settings.demo:
        print(f"demo database: {settings.database_url}", flush=True)
        status = asyncio.run(_with_store(settings, _ensure_demo_accounts))
    else:
        status = asyncio.run(_with_store(settings, _refuse_demo_accounts))
    if status:
        return status
    from .core.errors import ClusterError, DeskTaken
    from .objects import ObjectStoreUnavailable

    try:
        app = create_app(settings)
    except ClusterError as exc:
        print(f"chatd: cannot start: {exc}", file=sys.stderr, flush=True)
        return 1
    from . import memory

    memory.tune()
    app.cleanup_ctx.append(memory.full_collections)
    # The SQLite writer's thread takes the GIL at least twice per batch of messages, and
    # the event loop holds it through whole iterations; asking for it back after 0.5 ms
    # rather than the default 5 ms makes commits, and so acks, come sooner.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    print(f"chatd listening on http://{settings.host}:{settings.port}", flush=True)
    try:
        serve_app(app, settings, event_loop())
    except (ClusterError, ObjectStoreUnavailable) as exc:
        print(f"chatd: cannot start: {exc}", file=sys.stderr, flush=True)
        return 1
    except DeskTaken as exc:
        print(f"chatd: cannot start: {exc}. A SQLite database is served by one process;"
              " for several, use PostgreSQL (docs/scaling.md#one-desk-per-database).",
              file=sys.stderr, flush=True)
        return 1
    return 0


def event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (a faster drop-in event loop), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


async def _with_store(settings: Settings, fn: Callable[[Store], Awaitable[int]]) -> int:
    from .store import redact, store_from_url

    store = store_from_url(settings.database_url, pool_size=settings.database_pool_size)
    try:
        await store.open()
    except Exception as exc:  # unreachable, refused, or a schema this chatd cannot use
        detail = " ".join(str(exc).split()) or type(exc).__name__
        print(f"chatd: cannot open the database {redact(settings.database_url)}: {detail}",
              file=sys.stderr)
        return 1
    try:
        return await fn(store)
    finally:
        await store.close()


def _accepts(password_hash: str, password: str) -> bool:
    from argon2 import PasswordHasher
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return PasswordHasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def live_demo_accounts(store: Store) -> list[str]:
    """Emails of the enabled accounts that a published demo credential signs in to.

    Recognised by trying the published passwords rather than by a mark the demo leaves:
    databases written before the demo had its own carry no mark, and a copied database
    keeps whatever works. Only the published emails are tried (a credential is the pair),
    so the check costs at most four argon2 verifications.
    """
    passwords = [password for *_, password in DEMO_ACCOUNTS]
    found = []
    for email, *_ in DEMO_ACCOUNTS:
        account = await store.engineer_account(email)
        if account is None or account.disabled:
            continue
        for password in passwords:
            if await asyncio.to_thread(_accepts, account.password_hash, password):
                found.append(email)
                break
    return found


async def _refuse_demo_accounts(store: Store) -> int:
    found = await live_demo_accounts(store)
    if found:
        print(
            f"chatd: this database holds the demo accounts {', '.join(found)}, whose passwords "
            "are published: anyone could sign in and read every chat. Without --demo chatd "
            f"will not start on it. Run `{REMOVE_DEMO}` (with the same settings) to disable "
            "them and revoke their tokens, or point CHATD_DATABASE_URL at another database.",
            file=sys.stderr,
        )
        return 1
    return 0


async def _ensure_demo_accounts(store: Store) -> int:
    from . import accounts
    from .core.clock import SystemClock

    emails = {email for email, *_ in DEMO_ACCOUNTS}
    others = [a.engineer.email for a in await store.list_engineers()
              if a.engineer.email not in emails]
    if others:
        # A database with real engineers is someone's production: publishing passwords
        # into it would let anyone in while that server runs.
        print(
            f"chatd: --demo will not add its published accounts to a database with other "
            f"engineers ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}): it looks "
            "like production's. Leave CHATD_DATABASE_URL unset to use the demo's own "
            f"({DEMO_DATABASE_URL}), or name another.",
            file=sys.stderr,
        )
        return 1
    for email, name, role, password in DEMO_ACCOUNTS:
        if await store.engineer_account(email) is None:
            await accounts.add_engineer(store, SystemClock(), email, name, password, role)
        print(f"demo {role.value}: {email} / {password}", flush=True)
    return 0


async def _engineer_command(settings: Settings, args: argparse.Namespace) -> int:
    from . import accounts
    from .core.clock import SystemClock

    if args.action == "add":
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = getpass.getpass("Password: ")
            if password != getpass.getpass("Again: "):
                print("chatd: the passwords differ", file=sys.stderr)
                return 2

    async def run(store: Store) -> int:
        try:
            if args.action == "add":
                e = await accounts.add_engineer(
                    store, SystemClock(), args.email, args.name, password, Role(args.role)
                )
                print(f"added {e.role.value} {e.email} ({e.name}) id {e.id}")
            elif args.action == "list":
                rows = await store.list_engineers()
                for a in rows:
                    e = a.engineer
                    state = "disabled" if a.disabled else "enabled"
                    print(f"{e.email}\t{e.name}\t{e.role.value}\t{state}\t{e.id}")
                if not rows:
                    print("no engineers yet: chatd engineer add EMAIL --name NAME")
            elif args.action in ("disable", "enable"):
                found = await store.set_engineer_disabled(
                    args.email.strip().lower(), args.action == "disable"
                )
                if not found:
                    print(f"chatd: no engineer {args.email}", file=sys.stderr)
                    return 1
                print(f"{args.action}d {args.email}")
            elif args.action == "remove-demo":
                demo = await live_demo_accounts(store)
                for email in demo:
                    await store.set_engineer_disabled(email, True)
                    print(f"disabled {email} and revoked its tokens")
                if not demo:
                    print("no demo accounts here")
        except DeskError as exc:
            print(f"chatd: {exc.message}", file=sys.stderr)
            return 1
        return 0

    return await _with_store(settings, run)


async def _handoff_command(settings: Settings, args: argparse.Namespace) -> int:
    from .handoff import cli as handoff_cli

    async def run(store: Store) -> int:
        return await handoff_cli.run(store, args, sys.stdout, sys.stderr)

    return await _with_store(settings, run)
