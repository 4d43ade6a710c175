"""The audit journal: append-only files that queue audit events for the index.

Each process appends JSON lines to its own segment file in the journal folder and holds
an exclusive ``flock`` on it for as long as the file exists. A flush closes the current
segment for appending (:meth:`AuditJournal.rotate`), inserts its events and then deletes
it. A segment whose lock can be taken belongs to no running process: its writer crashed
or was killed before the flush, and :meth:`AuditJournal.claim_orphans` hands it to the
caller to insert. Several processes may share one folder.

An append is one ``write`` call to a file opened with ``O_APPEND``. The data is then in
the kernel, so a crash of the process loses nothing. :meth:`AuditJournal.append` with
``durable=True`` also waits until the line is on disk (``fdatasync``), so that an
operating system crash or power loss cannot lose it. Appends of concurrent threads
share one ``fdatasync`` (group commit): the first waiter syncs every line written so
far, and the lines written meanwhile wait for the next one. Lines appended without
``durable`` reach the disk with the next durable append, at the latest when the flush
rotates the segment, which syncs it too.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".jsonl"


@dataclass
class JournalSegment:
    """One journal file whose lock this process holds."""

    path: Path
    descriptor: int

    def read_lines(self) -> list[str]:
        data = self.path.read_bytes()
        return [line for line in data.decode("utf-8", errors="replace").splitlines() if line]

    def discard(self) -> None:
        """Delete the file, then release its lock."""
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.descriptor)

    def release(self) -> None:
        """Release the lock and keep the file, for another process to claim."""
        os.close(self.descriptor)


def _open_locked(path: Path, flags: int) -> int | None:
    """Open ``path`` and take its exclusive lock; return None when another process holds it."""
    descriptor = os.open(path, flags, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


class AuditJournal:
    """The segment files of one journal folder, as this process uses them."""

    def __init__(self, folder: Path, fsync: bool = True) -> None:
        self.folder = folder
        # Without it, durable appends return once the line is written, as other ones.
        self.fsync = fsync
        self._lock = threading.Lock()
        self._current: JournalSegment | None = None
        self._prefix = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._counter = 0
        # Group commit: lines are numbered as written; _synced is the last one on disk.
        self._written = 0
        self._synced = 0
        self._syncing = False
        self._synced_changed = threading.Condition(threading.Lock())

    def _open_segment(self) -> JournalSegment:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._counter += 1
        path = self.folder / f"{self._prefix}-{self._counter:08d}{SEGMENT_SUFFIX}"
        descriptor = _open_locked(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        if descriptor is None:  # the name is unique, so no other process can lock it
            raise OSError(f"audit journal segment {path} is locked by another process")
        return JournalSegment(path, descriptor)

    def append(self, line: str, *, durable: bool = False) -> None:
        """Append one event line; with ``durable``, return once it is on disk.

        Raises OSError when the file cannot be written or synced.
        """
        data = (line + "\n").encode("utf-8")
        with self._lock:
            if self._current is None:
                self._current = self._open_segment()
            written = os.write(self._current.descriptor, data)
            while written < len(data):
                written += os.write(self._current.descriptor, data[written:])
            self._written += 1
            number = self._written
        if durable and self.fsync:
            self._sync_through(number)

    def _sync_through(self, number: int) -> None:
        """Wait until line ``number`` is on disk, syncing it unless another thread does."""
        with self._synced_changed:
            while self._synced < number:
                if not self._syncing:
                    self._syncing = True
                    break
                self._synced_changed.wait()
            else:
                return
        synced = False
        target = 0
        try:
            with self._lock:
                target = self._written
                # A duplicate, so that a rotation closing the segment meanwhile cannot
                # close the descriptor under this sync. Without a current segment,
                # rotate() has synced every line written so far.
                descriptor = os.dup(self._current.descriptor) if self._current is not None else None
            if descriptor is not None:
                try:
                    os.fdatasync(descriptor)
                finally:
                    os.close(descriptor)
            synced = True
        finally:
            with self._synced_changed:
                self._syncing = False
                if synced:
                    self._synced = max(self._synced, target)
                self._synced_changed.notify_all()

    def rotate(self) -> JournalSegment | None:
        """Return the current segment for flushing, synced; the next append opens a new one.

        The sync happens under the append lock, so no line of the segment is written
        after it. A failed sync is logged: the flush inserts the lines all the same.
        """
        with self._lock:
            segment, self._current = self._current, None
            if segment is not None and self.fsync:
                try:
                    os.fdatasync(segment.descriptor)
                except OSError as error:
                    logger.error("syncing audit journal %s failed: %s", segment.path, error)
            with self._synced_changed:
                self._synced = max(self._synced, self._written)
                self._synced_changed.notify_all()
        return segment

    def claim_orphans(self) -> list[JournalSegment]:
        """Return the segments of the folder that no running process holds, locked."""
        if not self.folder.is_dir():
            return []
        own = {self._current.path} if self._current is not None else set()
        claimed = []
        for path in sorted(self.folder.glob(f"*{SEGMENT_SUFFIX}")):
            if path in own or path.name.startswith(self._prefix):
                continue
            try:
                descriptor = _open_locked(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # flushed and deleted by its owner meanwhile
            if descriptor is None:
                continue
            if not path.exists():  # deleted between open and lock by its last owner
                os.close(descriptor)
                continue
            logger.info("replaying audit journal %s left by a stopped process", path.name)
            claimed.append(JournalSegment(path, descriptor))
        return claimed

    def close(self) -> None:
        """Release the current segment; a later process replays what it holds."""
        with self._lock:
            segment, self._current = self._current, None
        if segment is not None:
            segment.release()
