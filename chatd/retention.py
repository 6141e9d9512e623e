"""Retention: old closed chats purged with their messages, attachments, delivered outbox rows
and file transcripts; attachment records and files left without each other by a crash
cleaned up (docs/operations.md). Files are removed through the upload folder's store, so
from the object store too when there is one (chatd/objects.py).

``Retention`` does one full pass (``run``) or says what one would remove (``preview``, for
``chatd purge --dry-run``). ``PurgeJob`` runs a pass every ``purge_interval_seconds`` in the
process that runs the desk (``chatd serve``). A pass works in small transactions through
the store's writer (``RetentionStore.purge_chats``: at most ``batch_messages`` messages
each), and pauses between them, so message appends are never held up for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from aiohttp import web

from .config import Settings
from .core.clock import Clock
from .core.ports import PurgeCounts, PurgeRules, RetentionStore, Store
from .files import STALE_TEMP_SECONDS, UploadFolder, entries_before
from .tasks import cancel_and_wait

log = logging.getLogger(__name__)

DAY = 86_400.0
# An upload's file is given its stored name once its body is complete, and recorded a
# moment later; its record's message follows at once. Anything younger than this may be
# an upload in flight and is never taken for an orphan.
ORPHAN_AGE_SECONDS = 3600.0
# Messages deleted per transaction, and the pause between two transactions: at least
# BATCH_PAUSE_SECONDS, and PACE times as long as the transaction took, so that the purge
# takes at most a third of the writer's time however slow the machine is (measured with
# bench/purge.py).
BATCH_MESSAGES = 250
BATCH_PAUSE_SECONDS = 0.02
PACE = 2.0
CANDIDATES_PAGE = 200
ORPHAN_PAGE = 500
FILES_PAGE = 1000

# The upload folder's names of uploads in progress (chatd/files.py).
_TEMP = re.compile(r"\.upload-[0-9a-f]{32}\.part")
# The file handoff names its transcripts after the session id (chatd/handoff/file.py).
_TRANSCRIPT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass
class PurgeReport:
    """What a pass removed, or with ``dry_run`` would remove."""

    dry_run: bool = False
    chats: int = 0
    messages: int = 0
    attachments: int = 0
    attachment_bytes: int = 0
    outbox_rows: int = 0
    transcripts: int = 0
    orphan_records: int = 0
    orphan_files: int = 0
    orphan_bytes: int = 0

    def add(self, counts: PurgeCounts) -> None:
        self.chats += counts.chats
        self.messages += counts.messages
        self.attachments += counts.attachments
        self.attachment_bytes += counts.attachment_bytes
        self.outbox_rows += counts.outbox_rows

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def absorb(self, other: PurgeReport) -> None:
        """Add ``other``'s figures to these."""
        for f in fields(self):
            if f.name != "dry_run":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class Retention:
    """The purge of one desk: its store, its upload folder and its file transcripts.
    ``retention_days`` 0 purges no chat (orphans are still cleaned up);
    ``dead_letter_days`` 0 keeps a chat with a dead-lettered handoff until it is handled."""

    def __init__(
        self,
        store: RetentionStore,
        clock: Clock,
        folder: UploadFolder,
        *,
        retention_days: float,
        dead_letter_days: float,
        transcripts: Path | None,
        batch_messages: int = BATCH_MESSAGES,
        pause: float = BATCH_PAUSE_SECONDS,
        orphan_age: float = ORPHAN_AGE_SECONDS,
    ) -> None:
        self.store = store
        self.clock = clock
        self.folder = folder
        self.retention_days = retention_days
        self.dead_letter_days = dead_letter_days
        self.transcripts = transcripts
        self.batch_messages = batch_messages
        self.pause = pause
        self.orphan_age = orphan_age

    @classmethod
    def from_settings(
        cls, settings: Settings, store: RetentionStore, clock: Clock, folder: UploadFolder,
        **kw: Any,
    ) -> Retention:
        from .handoff.service import file_dir

        return cls(
            store, clock, folder,
            retention_days=settings.retention_days,
            dead_letter_days=settings.retention_dead_letter_days,
            transcripts=file_dir(settings),
            **kw,
        )

    def rules(self, now: float) -> PurgeRules | None:
        """Which chats may go now; None when chats are kept for ever."""
        if self.retention_days <= 0:
            return None
        dead = now - self.dead_letter_days * DAY if self.dead_letter_days > 0 else None
        return PurgeRules(closed_before=now - self.retention_days * DAY,
                          dead_letter_before=dead)

    # ------------------------------------------------------------------ a pass

    async def preview(self) -> PurgeReport:
        """What ``run`` would remove now; changes nothing."""
        report = PurgeReport(dry_run=True)
        rules = self.rules(self.clock.now())
        if rules is not None:
            report.add(await self.store.purge_preview(rules))
        orphans = await self.store.attachment_orphans(
            self.clock.now() - self.orphan_age, 1_000_000
        )
        report.orphan_records = len(orphans)
        report.orphan_bytes += sum(a.size for a in orphans)
        await self._orphan_files(report)
        return report

    async def run(self) -> PurgeReport:
        """One full pass now: old chats, then orphaned records, then orphaned files."""
        report = PurgeReport()
        rules = self.rules(self.clock.now())
        if rules is not None:
            await self._purge_chats(rules, report)
        await self._orphan_records(report)
        await self._orphan_files(report)
        return report

    async def _purge_chats(self, rules: PurgeRules, report: PurgeReport) -> None:
        after: tuple[float, str] | None = None
        while True:
            page = await self.store.purge_candidates(rules, after, CANDIDATES_PAGE)
            if not page:
                return
            ids: tuple[str, ...] = tuple(sid for _, sid in page)
            while ids:
                began = time.monotonic()
                batch = await self.store.purge_chats(ids, rules, self.batch_messages)
                took = time.monotonic() - began
                report.add(batch.counts)
                await self._remove_files(batch.files)
                report.transcripts += await self._remove_transcripts(batch.transcripts)
                if batch.left == ids and batch.counts == PurgeCounts():
                    break  # nothing could be done to these now (another purge has them)
                ids = batch.left
                # let the desk's writes through
                await asyncio.sleep(max(self.pause, PACE * took))
            after = page[-1]

    async def _orphan_records(self, report: PurgeReport) -> None:
        while True:
            before = self.clock.now() - self.orphan_age
            found = await self.store.attachment_orphans(before, ORPHAN_PAGE)
            if not found:
                return
            gone = await self.store.delete_attachment_orphans([a.id for a in found], before)
            for a in gone:
                log.info("removed an attachment without its message",
                         extra={"attachment_id": a.id, "session_id": a.session_id})
            report.orphan_records += len(gone)
            report.orphan_bytes += sum(a.size for a in gone)
            await self._remove_files(
                name for a in gone for name in (a.stored_name, a.thumbnail_name) if name
            )
            if len(found) < ORPHAN_PAGE or not gone:
                return
            await asyncio.sleep(self.pause)

    async def _orphan_files(self, report: PurgeReport) -> None:
        """Stored files that no record names (in the upload folder, or the object store
        when there is one), and uploads in progress that a crash cut off, once older than
        the guard (by their modification time)."""
        wall = time.time()
        temps = await asyncio.to_thread(
            _old_temps, self.folder.folder, wall - max(self.orphan_age, STALE_TEMP_SECONDS)
        )
        stored = await self.folder.stored_before(wall - self.orphan_age)
        unknown: list[tuple[str, int]] = []
        for i in range(0, len(stored), FILES_PAGE):
            chunk = stored[i:i + FILES_PAGE]
            known = await self.store.known_attachment_files([name for name, _ in chunk])
            unknown += [(name, size) for name, size in chunk if name not in known]
        if not report.dry_run:
            temps = await asyncio.to_thread(_unlink, self.folder.folder, temps)
            if unknown:
                gone = set((await self.folder.remove(name for name, _ in unknown)).removed)
                unknown = [(name, size) for name, size in unknown if name in gone]
            if unknown or temps:
                log.info("removed %d files without an attachment record",
                         len(unknown) + len(temps))
        report.orphan_files += len(unknown) + len(temps)
        report.orphan_bytes += sum(size for _, size in unknown + temps)

    async def _remove_files(self, names: Iterable[str]) -> None:
        await self.folder.remove(list(names))

    async def _remove_transcripts(self, session_ids: Iterable[str]) -> int:
        folder = self.transcripts
        ids = [sid for sid in session_ids if _TRANSCRIPT_ID.fullmatch(sid)]
        if folder is None or not ids:
            return 0

        def remove() -> int:
            n = 0
            for sid in ids:
                for suffix in (".json", ".txt"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(folder / f"{sid}{suffix}")
                        n += 1
            return n

        return await asyncio.to_thread(remove)


def _old_temps(folder: Path, before: float) -> list[tuple[str, int]]:
    """Unfinished uploads in the upload folder modified before ``before``, with sizes."""
    return entries_before(folder, _TEMP, before)


def _unlink(folder: Path, files: list[tuple[str, int]]) -> list[tuple[str, int]]:
    removed = []
    for name, size in files:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(folder / name)
            removed.append((name, size))
    return removed


class PurgeJob:
    """``Retention.run`` every ``interval`` seconds (the first pass ``first`` seconds after
    start), until stopped. A pass that fails is logged and tried again next time."""

    def __init__(self, retention: Retention, interval: float, *, first: float = 60.0) -> None:
        self.retention = retention
        self.interval = interval
        self.first = min(first, interval)
        self.passes = 0
        self.total = PurgeReport()  # every pass's figures added up
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval > 0 and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="chatd-purge")

    async def stop(self) -> None:
        # A pass cut off here leaves at worst files whose records are gone: the next pass
        # finds them as orphans.
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _loop(self) -> None:
        await asyncio.sleep(self.first)
        while True:
            try:
                report = await self.retention.run()
            except Exception:  # the database may be away for a moment: next time
                log.exception("the purge failed; it runs again in %g s", self.interval)
            else:
                self.passes += 1
                self.total.absorb(report)
                if report.chats or report.orphan_records or report.orphan_files:
                    log.info("purge done", extra=report.as_dict())
            await asyncio.sleep(self.interval)


# ---------------------------------------------------------------------- chatd purge


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "purge", help="purge old closed chats and orphaned files now (docs/operations.md)"
    )
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be removed, and change nothing")


async def command(store: Store, settings: Settings, dry_run: bool, out: Any) -> int:
    """``chatd purge [--dry-run]`` on an open store: one pass, and what it did."""
    from .core.clock import SystemClock
    from .objects import ObjectStoreUnavailable, upload_folder

    folder = upload_folder(settings)
    try:
        await folder.store.start()
    except ObjectStoreUnavailable as exc:
        await folder.aclose()
        print(f"chatd: {exc}", file=sys.stderr)
        return 1
    try:
        retention = Retention.from_settings(
            settings, store, SystemClock(), folder
        )
        report = await (retention.preview() if dry_run else retention.run())
    finally:
        await folder.aclose()
    rules = retention.rules(time.time())
    if rules is None:
        print("retention is off (CHATD_RETENTION_DAYS is 0): no chat is purged", file=out)
    else:
        cutoff = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(rules.closed_before))
        print(f"chats closed before {cutoff} without a handoff still owed", file=out)
    print("dry run: nothing was removed" if dry_run else "removed:", file=out)
    for name, value in report.as_dict().items():
        if name == "dry_run" or (dry_run and name == "transcripts"):
            continue
        print(f"  {name.replace('_', ' ')}: {value}", file=out)
    return 0


# ---------------------------------------------------------------------- chatd serve

PURGE = web.AppKey("purge", PurgeJob)


def setup_purge(
    app: web.Application, settings: Settings, store: Store, clock: Clock, folder: UploadFolder
) -> PurgeJob:
    """The desk's purge job, under ``PURGE``: the process that runs the desk runs the
    purge (started and stopped with the store by the app's life cycle)."""
    job = PurgeJob(
        Retention.from_settings(settings, store, clock, folder),
        settings.purge_interval_seconds,
    )
    app[PURGE] = job
    return job
