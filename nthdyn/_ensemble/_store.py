"""The on-disk store of a sweep: one file per finished point, never a partial one.

Layout (one folder):

    sweep.json          the sweep's configuration, its SHA-256 and the list of points
                        (written once, atomically)
    points/p000003.nc   one NetCDF file per finished point, written to a temporary
                        file, fsync'ed and renamed: a point file exists only once it
                        is complete, so its existence is the record that it is done
    log.jsonl           one line per run and per computed point (time, seconds, pid)
    ensemble.nc         the combined result, rewritten at the end of every run
    .lock               held (flock) by the running sweep; released by the kernel
                        when the process dies, however it dies
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .._io import json_default, read_netcdf, write_netcdf
from .._lazy import xr

FORMAT = "nthdyn-sweep/1"


class SweepConfigError(ValueError):
    """A sweep store holds results of a different configuration."""


def canonical(config: dict[str, Any]) -> tuple[str, str]:
    text = json.dumps(config, default=json_default, sort_keys=True, separators=(",", ":"))
    return text, hashlib.sha256(text.encode()).hexdigest()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def _difference(old: dict[str, Any], new: dict[str, Any], limit: int = 8) -> str:
    a, b = _flatten(old), _flatten(new)
    keys = sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>"))

    def short(value: Any) -> str:
        text = json.dumps(value, default=str)
        return text if len(text) <= 80 else text[:77] + "..."

    lines = [f"  {k}: stored {short(a.get(k, '<absent>'))}, now {short(b.get(k, '<absent>'))}"
             for k in keys[:limit]]
    if len(keys) > limit:
        lines.append(f"  ... and {len(keys) - limit} more")
    return "\n".join(lines)


def _store_name(name: str) -> bool:
    """Whether `name` is one of the entries of a sweep store (see the module docstring)."""
    return name in (".lock", "sweep.json", "points", "log.jsonl", "ensemble.nc") or (
        name.startswith((".sweep.json.", ".ensemble.nc.")) and name.endswith(".part"))


class SweepStore:
    """The on-disk store of one sweep (see the module docstring for the layout)."""

    def __init__(self, path: str | os.PathLike, config: dict[str, Any], points: list[dict]):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise SweepConfigError(f"store={str(self.path)!r} is a file: give a folder path "
                                   "for the sweep store.")
        text, digest = canonical(config)
        index = self.path / "sweep.json"
        # Only the names a store is made of (another sweep may be creating them right now,
        # and its lock is checked next): anything else means a folder of someone else's.
        if self.path.is_dir() and not index.exists() and any(
                not _store_name(p.name) for p in self.path.iterdir()):
            raise SweepConfigError(
                f"store={str(self.path)!r} exists and is not an nthdyn sweep store (no "
                "sweep.json): give a new or empty folder.")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = self._acquire()
        try:
            if index.exists():
                stored = json.loads(index.read_text())
                if stored.get("format") != FORMAT:
                    raise SweepConfigError(
                        f"store={str(self.path)!r} has format {stored.get('format')!r}; this "
                        f"nthdyn writes {FORMAT!r}. Use a new store folder.")
                if stored["config_sha256"] != digest:
                    raise SweepConfigError(
                        f"store={str(self.path)!r} holds a sweep with a different "
                        f"configuration (SHA-256 {stored['config_sha256'][:12]} stored, "
                        f"{digest[:12]} now). What differs:\n"
                        f"{_difference(stored['config'], json.loads(text))}\n"
                        "Results of two configurations are never mixed: use another store "
                        "path for the new configuration, or delete this store to start over."
                    )
            else:
                self._write_json(index, {
                    "format": FORMAT,
                    "config_sha256": digest,
                    "created": _now(),
                    "config": json.loads(text),
                    "points": points,
                })
            (self.path / "points").mkdir(exist_ok=True)
            for stale in (self.path / "points").glob(".p*.nc.*.part"):
                stale.unlink(missing_ok=True)  # from a writer that was killed
        except BaseException:
            self.close()
            raise
        self.n_points = len(points)
        self.config_sha256 = digest

    def _acquire(self):
        handle = open(self.path / ".lock", "a+")
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock (do not run two sweeps on one store)
            return handle
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "?"
            handle.close()
            raise SweepConfigError(
                f"store={str(self.path)!r} is in use by another running sweep (pid "
                f"{owner}): wait for it to finish, or use another store path.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        return handle

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the flock
            self._lock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    @staticmethod
    def _write_json(path: Path, content: dict[str, Any]) -> None:
        temporary = path.with_name(f".{path.name}.{os.getpid()}.part")
        with open(temporary, "w") as stream:
            json.dump(content, stream, indent=1, default=json_default, sort_keys=True)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)

    def point_path(self, index: int) -> Path:
        return self.path / "points" / f"p{index:06d}.nc"

    def finished(self) -> set[int]:
        """The points whose files exist (each file is complete: written atomically)."""
        return {i for i in range(self.n_points) if self.point_path(i).exists()}

    def write_point(self, index: int, ds: xr.Dataset) -> None:
        write_netcdf(ds, self.point_path(index))

    def read_point(self, index: int) -> xr.Dataset:
        return read_netcdf(self.point_path(index))

    def log(self, **event: Any) -> None:
        line = json.dumps({"time": _now(), "pid": os.getpid(), **event}, default=json_default)
        with open(self.path / "log.jsonl", "a") as stream:
            stream.write(line + "\n")

    def history(self) -> list[dict[str, Any]]:
        return read_log(self.path)


def read_log(store: str | os.PathLike) -> list[dict[str, Any]]:
    """The events of a store's `log.jsonl` ("start", "point", "end"; a line cut
    short by a kill is skipped)."""
    events = []
    path = Path(store) / "log.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                events.append(json.loads(line))
    return events


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
