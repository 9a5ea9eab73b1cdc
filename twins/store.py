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

import json
import os
import uuid
from urllib.parse import quote, unquote

import pyarrow.fs as pafs

from configs.schema import is_vehicle_id
from twins.types import Alert

_SUFFIX = ".twin"
_ALERTS_SUFFIX = ".alerts.jsonl"


def open_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, root path) for a URI or a plain local path (relative paths are made absolute)."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    return pafs.FileSystem.from_uri(uri)


class CheckpointStore:
    """One object per twin: ``<root>/<quoted vehicle id>.twin``."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.fs, self.root = open_filesystem(uri)
        self.fs.create_dir(self.root, recursive=True)
        self._atomic_move = isinstance(self.fs, pafs.LocalFileSystem)

    def _path(self, vehicle_id: str) -> str:
        if not is_vehicle_id(vehicle_id):
            raise ValueError(f"vehicle id {vehicle_id[:80]!r}: not a vehicle id (1-64 characters of "
                             "[A-Za-z0-9._:/-], starting alphanumeric); no checkpoint is named after it")
        return f"{self.root}/{quote(vehicle_id, safe='')}{_SUFFIX}"

    def put(self, vehicle_id: str, data: bytes) -> None:
        path = self._path(vehicle_id)
        if not self._atomic_move:
            with self.fs.open_output_stream(path) as out:  # object stores: a PUT is atomic already
                out.write(data)
            return
        temporary = f"{path}.{uuid.uuid4().hex}.tmp"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())  # durable before it replaces the previous checkpoint
            os.replace(temporary, path)
        finally:
            if os.path.lexists(temporary):  # the write or the rename failed: leave nothing behind
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
            with self.fs.open_append_stream(path) as out:
                out.write(lines)
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
