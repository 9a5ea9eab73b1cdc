"""Twin checkpoints in a store addressed by URI (``pyarrow.fs``): a local folder by default, ``s3://``,
``gs://`` or ``hdfs://`` on a cluster. Writes are atomic (temporary file, fsync, then rename) where the
filesystem allows, so a reader never sees half a checkpoint; a failed write leaves no temporary file.
Local checkpoints are readable by their owner only (0600): a twin's state is a vehicle's history.

>>> import tempfile
>>> store = CheckpointStore(tempfile.mkdtemp())
>>> store.put("veh/1", b"state")
>>> store.get("veh/1"), store.get("nobody"), store.list()
(b'state', None, ['veh/1'])
"""
from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote, unquote

import pyarrow.fs as pafs

from configs.schema import is_vehicle_id
from twins.types import Alert

_SUFFIX = ".twin"
_ALERTS_SUFFIX = ".alerts.jsonl"
_SYNC_THREADS = 16  # concurrent fsyncs of one group commit (the journal commits them together)


def open_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, root path) for a URI or a plain local path (relative paths are made absolute)."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    return pafs.FileSystem.from_uri(uri)


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointStore:
    """One object per twin: ``<root>/<quoted vehicle id>.twin``."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._pending: list[tuple[str, str]] | None = None  # inside group(): written, not yet synced and renamed
        self.fs, self.root = open_filesystem(uri)
        self.fs.create_dir(self.root, recursive=True)
        self._atomic_move = isinstance(self.fs, pafs.LocalFileSystem)

    def _path(self, vehicle_id: str) -> str:
        if not is_vehicle_id(vehicle_id):
            raise ValueError(f"vehicle id {vehicle_id[:80]!r}: not a vehicle id (1-64 characters of "
                             "[A-Za-z0-9._:/-], starting alphanumeric); no checkpoint is named after it")
        return f"{self.root}/{quote(vehicle_id, safe='')}{_SUFFIX}"

    def put(self, vehicle_id: str, data: bytes) -> None:
        """Write a checkpoint; inside ``group()`` it takes effect when the group commits."""
        path = self._path(vehicle_id)
        if not self._atomic_move:
            with self.fs.open_output_stream(path) as out:  # object stores: a PUT is atomic already
                out.write(data)
            return
        temporary = f"{path}.{uuid.uuid4().hex}.tmp"
        grouped = False
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                if self._pending is None:
                    os.fsync(out.fileno())  # durable before it replaces the previous checkpoint
            if self._pending is not None:
                self._pending.append((temporary, path))
                grouped = True
                return
            os.replace(temporary, path)
        finally:
            if not grouped and os.path.lexists(temporary):  # the write or the rename failed: leave nothing behind
                os.unlink(temporary)

    @contextlib.contextmanager
    def group(self) -> Iterator[None]:
        """Group commit: the ``put`` calls inside are made durable together when the block ends (their files
        synced concurrently, so the filesystem commits its journal once for all of them instead of once per
        twin; then renamed into place and the folder synced). Raises OSError if the commit fails, in which
        case some of the group's checkpoints may have been replaced and some not: each is whole either way."""
        if not self._atomic_move or self._pending is not None:
            yield
            return
        self._pending = []
        try:
            yield
            pending, self._pending = self._pending, None
            self._commit(pending)
        finally:
            for temporary, _ in self._pending or []:
                if os.path.lexists(temporary):
                    os.unlink(temporary)
            self._pending = None

    def _commit(self, pending: list[tuple[str, str]]) -> None:
        try:
            if len(pending) > 1:
                with ThreadPoolExecutor(max_workers=min(_SYNC_THREADS, len(pending))) as pool:
                    list(pool.map(_fsync_path, [temporary for temporary, _ in pending]))
            elif pending:
                _fsync_path(pending[0][0])
            for temporary, path in pending:
                os.replace(temporary, path)
            if pending:
                _fsync_path(self.root)  # the renames themselves
        finally:
            for temporary, _ in pending:
                if os.path.lexists(temporary):
                    os.unlink(temporary)

    def get(self, vehicle_id: str) -> bytes | None:
        try:
            with self.fs.open_input_stream(self._path(vehicle_id)) as source:
                return source.read()
        except FileNotFoundError:
            return None
        except OSError as exc:  # some filesystems raise a plain OSError for a missing key
            if "not found" in str(exc).lower() or "no such file" in str(exc).lower():
                return None
            raise

    def delete(self, vehicle_id: str) -> None:
        try:
            self.fs.delete_file(self._path(vehicle_id))
        except FileNotFoundError:
            pass

    def list(self) -> list[str]:
        selector = pafs.FileSelector(self.root, allow_not_found=True)
        names = [info.base_name for info in self.fs.get_file_info(selector)]
        return sorted(unquote(n[: -len(_SUFFIX)]) for n in names if n.endswith(_SUFFIX))


class AlertStore:
    """Alert history beside the checkpoints (same URI): ``<root>/<quoted vehicle id>.alerts.jsonl``.

    One JSON line per alert, appended before the frames that raised it are acknowledged. Appending is
    idempotent in effect: an alert re-raised by re-sent frames (after a failed checkpoint) has the same id
    and is read once. Object stores cannot append: there the file is read and written back whole (alerts
    are rare per vehicle, so the file stays small).
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.fs, self.root = open_filesystem(uri)
        self.fs.create_dir(self.root, recursive=True)
        self._can_append = isinstance(self.fs, pafs.LocalFileSystem)

    def _path(self, vehicle_id: str) -> str:
        return f"{self.root}/{quote(vehicle_id, safe='')}{_ALERTS_SUFFIX}"

    def append(self, vehicle_id: str, alerts: list[Alert]) -> None:
        if not alerts:
            return
        lines = "".join(json.dumps(a.to_dict(), sort_keys=True) + "\n" for a in alerts).encode()
        path = self._path(vehicle_id)
        if self._can_append:
            # Synced before the checkpoint that acknowledges the frames: an alert must not be lost to a crash
            # that the checkpoint survives. Owner-only, like the checkpoints.
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, lines)
                os.fsync(fd)
            finally:
                os.close(fd)
            return
        old = self._read_bytes(path) or b""
        with self.fs.open_output_stream(path) as out:
            out.write(old + lines)

    def _read_bytes(self, path: str) -> bytes | None:
        try:
            with self.fs.open_input_stream(path) as source:
                return source.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            if "not found" in str(exc).lower() or "no such file" in str(exc).lower():
                return None
            raise

    def read(self, vehicle_id: str) -> list[Alert]:
        """The vehicle's alerts in the order raised, each id once (a torn last line is skipped)."""
        data = self._read_bytes(self._path(vehicle_id)) or b""
        alerts: dict[str, Alert] = {}
        for line in data.splitlines():
            try:
                alert = Alert.from_dict(json.loads(line))
            except (ValueError, KeyError, TypeError):
                continue  # a write cut short by a crash: that alert was not acknowledged, it is raised again
            alerts.setdefault(alert.alert_id, alert)
        return list(alerts.values())

    def vehicles(self) -> list[str]:
        selector = pafs.FileSelector(self.root, allow_not_found=True)
        names = [info.base_name for info in self.fs.get_file_info(selector)]
        return sorted(unquote(n[: -len(_ALERTS_SUFFIX)]) for n in names if n.endswith(_ALERTS_SUFFIX))

    def read_all(self) -> list[Alert]:
        """Every vehicle's alerts, oldest first (by time, then vehicle and seq)."""
        alerts = [a for vehicle_id in self.vehicles() for a in self.read(vehicle_id)]
        return sorted(alerts, key=lambda a: (a.ts_ms, a.vehicle_id, a.seq))
