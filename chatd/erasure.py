"""Erasing a customer and exporting what chatd holds about them: ``chatd customer erase``,
``chatd customer export``, ``chatd customer erasures``, and what ``POST
/api/customers/erase`` runs (docs/operations.md#erasure-and-export).

An erasure deletes the customer's chats from the database in one transaction (the store's
``erase_customer``, which also writes the audit line), then removes the files that hung off
them: attachments and thumbnails (in the upload folder, or the object store when there is
one, chatd/objects.py), and the transcripts the ``file`` handoff backend wrote. Files go
after the commit, so a crash in between leaves files that nothing points to (unreachable:
downloads go through the records), never records without their files; ``chatd customer
erase`` run again reports nothing left to erase.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import tempfile
import uuid
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .config import Settings
from .core.clock import Clock, SystemClock
from .core.erasure import (
    CustomerQuery,
    Erased,
    Erasure,
    check_requested_by,
    subject_hash,
)
from .core.errors import Conflict, DeskError
from .core.models import SessionState, iso
from .core.ports import AttachmentRecord, Store
from .core.transcript import ORIGIN_CHAT, Transcript
from .files import Removal, UploadFolder
from .objects import ObjectStoreUnavailable, upload_folder

log = logging.getLogger(__name__)

EXPORT_FORMAT = "chatd-customer-export"
EXPORT_VERSION = 1
PAGE = 1000
OPEN_STATES = (SessionState.WAITING, SessionState.OFFERED, SessionState.ACTIVE)
# The file backend names its transcripts after the chat's id.
_SAFE_SESSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass
class ErasureReport:
    """An erasure as done: what the database lost, and what happened on disk."""

    erased: Erased
    files_removed: int = 0
    transcripts_removed: int = 0
    # Files that could not be removed (permissions, I/O errors), by stored name.
    failed: list[str] = field(default_factory=list)

    def to_wire(self) -> dict[str, Any]:
        return {
            "erasure": self.erased.erasure.to_wire(),
            "files_removed": self.files_removed,
            "transcripts_removed": self.transcripts_removed,
            "files_not_removed": len(self.failed),
            "tickets": self.erased.tickets,
            "undelivered_handoffs": self.erased.undelivered,
        }


def handoff_folder(settings: Settings) -> Path:
    from .handoff.service import file_dir

    return file_dir(settings)


async def erase_customer(
    store: Store, settings: Settings, clock: Clock, query: CustomerQuery, *,
    requested_by: str, via: str,
) -> ErasureReport:
    """Erase every chat of the customer (NotFound if none, Conflict while one is open)."""
    erasure = Erasure(
        id=str(uuid.uuid4()), erased_at=clock.now(),
        requested_by=check_requested_by(requested_by), via=via,
        subject_hash=subject_hash(query, settings.erasure_key),
    )
    erased = await store.erase_customer(query, erasure)
    report = ErasureReport(erased)
    try:
        async with _stored_files(settings) as folder:
            removal = await folder.remove(erased.stored_names)
    except ObjectStoreUnavailable as exc:  # erased all the same: the files are orphans now
        log.warning("the erased customer's files were not removed: %s", exc)
        removal = Removal(failed=list(erased.stored_names))
    report.files_removed += len(removal.removed)
    report.failed += removal.failed
    await asyncio.to_thread(_remove_transcripts, report, handoff_folder(settings))
    return report


@contextlib.asynccontextmanager
async def _stored_files(settings: Settings) -> AsyncIterator[UploadFolder]:
    """The upload folder with its store (the object store, when there is one), started;
    ObjectStoreUnavailable when that cannot be used."""
    folder = upload_folder(settings)
    try:
        await folder.store.start()
        yield folder
    finally:
        await folder.aclose()


def _remove_transcripts(report: ErasureReport, transcripts: Path) -> None:
    for sid in report.erased.session_ids:
        if not _SAFE_SESSION.fullmatch(sid):
            continue
        for ext in ("json", "txt"):
            try:
                os.unlink(transcripts / f"{sid}.{ext}")
                report.transcripts_removed += 1
            except FileNotFoundError:
                pass
            except OSError:
                report.failed.append(f"{sid}.{ext}")


# ---------------------------------------------------------------------- export


async def export_customer(
    store: Store, settings: Settings, clock: Clock, query: CustomerQuery, *,
    with_files: bool,
) -> tuple[dict[str, Any], list[tuple[str, AttachmentRecord]]]:
    """The export document, and (``with_files``) the files to put beside it: pairs of the
    path in the archive and the attachment."""
    sessions = await store.customer_sessions(query)
    customers: dict[str, dict[str, Any]] = {}
    chats = []
    files: list[tuple[str, AttachmentRecord]] = []
    for session in sessions:
        c = session.customer
        customers.setdefault(c.id, {"id": c.id, "name": c.name, "email": c.email,
                                    "account": c.account, "tier": c.tier.value})
        messages = []
        after = 0
        while True:
            page = await store.messages_after(session.id, after, PAGE)
            messages.extend(page)
            if len(page) < PAGE:
                break
            after = page[-1].seq
        origin = await store.session_origin(session.id) or ORIGIN_CHAT
        chat = Transcript.build(session, messages, origin=origin,
                                base_url=settings.public_url).to_json()
        records = []
        for a in await store.session_attachments(session.id):
            path = f"files/{a.id}/{a.filename}" if with_files else None
            if path is not None:
                files.append((path, a))
            records.append({
                "id": a.id, "filename": a.filename, "content_type": a.content_type,
                "size": a.size, "sha256": a.sha256, "uploaded_at": iso(a.created_at),
                "uploader_role": a.uploader_role, "uploader_id": a.uploader_id,
                "file": path,
            })
        chat["files"] = records
        chat["handoffs"] = [
            {"backend": h.backend, "state": h.state, "created_at": iso(h.created_at),
             "delivered_at": iso(h.delivered_at), "ticket": h.ticket}
            for h in await store.session_handoffs(session.id)
        ]
        chats.append(chat)
    document = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exported_at": iso(clock.now()),
        "query": ({"customer_id": query.customer_id} if query.customer_id is not None
                  else {"email": query.email}),
        "customers": list(customers.values()),
        "chats": chats,
    }
    return document, files


async def write_zip(
    path: Path, document: dict[str, Any], files: list[tuple[str, AttachmentRecord]],
    folder: UploadFolder,
) -> list[str]:
    """The archive: ``customer.json`` and the files, each streamed from where the folder's
    store keeps it (the upload folder or the object store). A file missing there is left
    out and its entry's ``file`` set to null; their ids are returned. Written beside
    ``path`` and renamed into place; the archive's writes run in a thread."""
    missing: list[str] = []
    fd, tmp = tempfile.mkstemp(prefix=".export-", suffix=".part", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as z:
            for arcname, a in files:
                stored = await folder.open_stored(a.stored_name)
                if stored is None:
                    missing.append(a.id)
                    continue
                try:
                    out = await asyncio.to_thread(z.open, arcname, "w")
                    with out:
                        async with contextlib.aclosing(stored.chunks(0, stored.size)) as chunks:
                            async for chunk in chunks:
                                await asyncio.to_thread(out.write, chunk)
                finally:
                    stored.close()
            for chat in document["chats"]:
                for entry in chat["files"]:
                    if entry["id"] in missing:
                        entry["file"] = None
            await asyncio.to_thread(z.writestr, "customer.json", _dumps(document))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return missing


def write_json(path: Path, document: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".export-", suffix=".part", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_dumps(document))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _dumps(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


# ---------------------------------------------------------------------- command line


def add_parser(sub: Any) -> None:
    c = sub.add_parser("customer", help="export or erase what chatd holds about a customer")
    csub = c.add_subparsers(dest="action", required=True)
    erase = csub.add_parser("erase", help="delete a customer's chats, messages and files")
    _who(erase)
    erase.add_argument("--by", required=True,
                       help="who asked for the erasure (kept in the audit line)")
    erase.add_argument(
        "--force", action="store_true",
        help="end the customer's open chats first, as a lead would (only while no chatd "
             "runs this database: a running desk holds them; then use the console, or "
             "POST /api/customers/erase with force)",
    )
    export = csub.add_parser("export", help="write everything chatd holds about a customer")
    _who(export)
    export.add_argument("--out", help="FILE.json, or FILE.zip for the JSON and the files "
                                      "(default: the JSON on standard output)")
    ls = csub.add_parser("erasures", help="list the erasures' audit lines, newest first")
    ls.add_argument("--limit", type=int, default=100)


def _who(p: argparse.ArgumentParser) -> None:
    p.add_argument("customer_id", nargs="?", help="the customer's id")
    p.add_argument("--email", help="every chat of this email (how a guest is found)")


async def run(
    store: Store, settings: Settings, args: argparse.Namespace, out: IO[str], err: IO[str],
) -> int:
    clock = SystemClock()
    try:
        if args.action == "erasures":
            lines = await store.list_erasures(max(1, args.limit))
            if not lines:
                print("no erasures", file=out)
            for e in lines:
                print(json.dumps(e.to_wire(), ensure_ascii=False), file=out)
            return 0
        query = CustomerQuery.of(args.customer_id, args.email)
        if args.action == "export":
            return await _export(store, settings, clock, query, args.out, out, err)
        return await _erase(store, settings, clock, query, args, out, err)
    except DeskError as exc:
        print(f"chatd: {exc.message}", file=err)
        return 1
    except ObjectStoreUnavailable as exc:
        print(f"chatd: {exc}", file=err)
        return 1


async def _erase(
    store: Store, settings: Settings, clock: Clock, query: CustomerQuery,
    args: argparse.Namespace, out: IO[str], err: IO[str],
) -> int:
    still_open = [s for s in await store.customer_sessions(query) if s.state in OPEN_STATES]
    lease = None
    if still_open:
        ids = ", ".join(s.id for s in still_open)
        if not args.force:
            raise Conflict(
                f"the customer has an open chat ({ids}); end it first, or give --force to"
                " end it here (with chatd stopped), or erase through"
                " POST /api/customers/erase with force"
            )
        # The desk's lease says whether a chatd runs this database: one that does holds
        # the chat in memory, and only its desk may end it. Held until the erasure is
        # done, so that no chatd starts meanwhile.
        lease = store.desk_lease(f"chatd customer erase:{os.getpid()}",
                                 settings.desk_lease_seconds, lambda: None)
        if await lease.acquire() is None:
            raise Conflict(
                f"the customer has an open chat ({ids}) and a running chatd holds it: end it"
                " in the console, or erase through POST /api/customers/erase with force,"
                " which ends it through that desk"
            )
    try:
        if still_open:
            await _end_open_chats(store, settings, clock, [s.id for s in still_open], args.by)
        report = await erase_customer(store, settings, clock, query,
                                      requested_by=args.by, via="cli")
    finally:
        if lease is not None:
            await lease.release()
    e = report.erased.erasure
    print(f"erased {e.chats} chats, {e.messages} messages, {e.files} files "
          f"({report.files_removed} files and {report.transcripts_removed} transcripts "
          f"removed from disk); audit line {e.id}", file=out)
    if report.erased.undelivered:
        print(f"{report.erased.undelivered} handoffs were not delivered and never will be",
              file=out)
    for ticket in report.erased.tickets:
        print("ticket to erase in the ticketing system: "
              + json.dumps(ticket, ensure_ascii=False), file=out)
    if report.failed:
        print(f"chatd: could not remove {len(report.failed)} files: "
              + ", ".join(report.failed), file=err)
        return 1
    return 0


async def _end_open_chats(
    store: Store, settings: Settings, clock: Clock, session_ids: list[str], by: str
) -> None:
    """End the chats through a desk of this process's own, as a lead named ``by`` would
    from the console (system message, transcript, handoff), while this process holds the
    desk's lease: no chatd runs this database meanwhile."""
    from .config import derive
    from .core.desk import Desk, DeskSettings
    from .core.errors import NotFound, SessionClosed
    from .core.models import Engineer, Role

    desk = Desk(store, clock, derive(settings, DeskSettings, via="desk"))
    await desk.restore()
    lead = Engineer(id=f"erasure:{by}", email=by, name=by, role=Role.LEAD)
    for session_id in session_ids:
        with contextlib.suppress(SessionClosed, NotFound):  # ended meanwhile
            await desk.end(lead, session_id, "ended to erase the customer's data")


async def _export(
    store: Store, settings: Settings, clock: Clock, query: CustomerQuery,
    target: str | None, out: IO[str], err: IO[str],
) -> int:
    zipped = bool(target) and str(target).lower().endswith(".zip")
    document, files = await export_customer(store, settings, clock, query,
                                            with_files=zipped)
    if not document["chats"]:
        print("chatd: no chat of this customer is stored", file=err)
        return 1
    if target is None:
        out.write(_dumps(document).decode("utf-8"))
        return 0
    path = Path(target)
    if zipped:
        async with _stored_files(settings) as folder:
            missing = await write_zip(path, document, files, folder)
        if missing:
            print(f"chatd: {len(missing)} files are missing from the upload folder: "
                  + ", ".join(missing), file=err)
    else:
        await asyncio.to_thread(write_json, path, document)
    print(f"exported {len(document['chats'])} chats to {path}", file=out)
    return 0
