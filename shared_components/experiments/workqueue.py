"""A benchmark grid shared by several machines through one SQL database (``sqlite:///file.db`` on one machine,
``postgresql://...`` across machines; SQLAlchemy, which Optuna depends on): each (bundle, fold) run is claimed by
one worker, kept alive by its heartbeat, and stored with its results when it ends, so any machine's report reads
every run. A claim whose heartbeat stopped (its worker died) is taken over; a failed run is retried by a later
invocation, not by the workers of the one that saw it fail.

Table ``benchmark_runs``: ``grid`` (dataset and a digest of the settings the runs must share), ``bundle``,
``fold``, ``status`` (running/done/failed), ``worker`` (host:pid), ``heartbeat``/``started``/``finished`` (Unix
seconds), ``record`` (``run.json``) and ``files`` (JSON ``{path in the run folder: text}``: per-case metrics,
summary, history).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from shared_components.evaluation.report import PER_CASE, SUMMARY_CSV, SUMMARY_JSON, write_json
from shared_components.files import write_text_atomic

TABLE = "benchmark_runs"
HEARTBEAT = 60
# what a report needs from a run folder (eval/cases.csv is left out: its prediction paths are the worker's)
FILES = (f"eval/{PER_CASE}", f"eval/{SUMMARY_JSON}", f"eval/{SUMMARY_CSV}", "logs/history.csv")
GRID_KEYS = ("seed", "max_epochs", "time_budget_minutes", "val_interval", "overrides")


def grid_id(settings: Mapping[str, Any]) -> str:
    """``<dataset>/<digest>``: the same on every machine running the same grid (paths may differ; the datalist's
    content may not)."""
    shared = {k: settings.get(k) for k in GRID_KEYS}
    datalist = Path(str(settings.get("datalist", "")))
    shared["datalist"] = hashlib.sha1(datalist.read_bytes()).hexdigest() if datalist.is_file() else datalist.name
    digest = hashlib.sha1(json.dumps(shared, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{settings['name']}/{digest}"


class WorkQueue:
    """Claims and results of one grid's runs in the database at ``url``."""

    def __init__(self, url: str, grid: str, heartbeat: int = HEARTBEAT):
        import sqlalchemy as sa

        from shared_components.experiments.tune import storage_url

        self.url, self.grid, self.heartbeat = storage_url(url), grid, int(heartbeat)
        self.grace = 3 * self.heartbeat
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.since = time.time()  # failed runs older than this invocation are retried
        sqlite = self.url.startswith("sqlite:///")
        if sqlite:
            Path(self.url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        kwargs = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
        self.engine = sa.create_engine(self.url, **kwargs)
        meta = sa.MetaData()
        self.table = sa.Table(
            TABLE,
            meta,
            sa.Column("grid", sa.String(255), primary_key=True),
            sa.Column("bundle", sa.String(255), primary_key=True),
            sa.Column("fold", sa.Integer, primary_key=True),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("worker", sa.String(255)),
            sa.Column("heartbeat", sa.Float),
            sa.Column("started", sa.Float),
            sa.Column("finished", sa.Float),
            sa.Column("record", sa.Text),
            sa.Column("files", sa.Text),
        )
        try:
            meta.create_all(self.engine, checkfirst=True)
        except sa.exc.DBAPIError:  # another worker created it at the same moment
            meta.create_all(self.engine, checkfirst=True)

    def _key(self, bundle: str, fold: int) -> Any:
        t = self.table.c
        return (t.grid == self.grid) & (t.bundle == bundle) & (t.fold == int(fold))

    def row(self, bundle: str, fold: int) -> Any:
        import sqlalchemy as sa

        with self.engine.connect() as c:
            return c.execute(sa.select(self.table).where(self._key(bundle, fold))).first()

    def claim(self, bundle: str, fold: int, force: bool = False) -> bool:
        """Take the run unless another worker holds it (live heartbeat) or it is done (``force``: redo runs
        finished before this invocation); a failed run is retried once per invocation."""
        import sqlalchemy as sa

        now = time.time()
        mine = {"status": "running", "worker": self.worker, "heartbeat": now, "started": now, "finished": None}
        try:
            with self.engine.begin() as c:
                c.execute(sa.insert(self.table).values(grid=self.grid, bundle=bundle, fold=int(fold), **mine))
            return True
        except sa.exc.IntegrityError:
            pass
        old = self.row(bundle, fold)
        if old is None:
            return self.claim(bundle, fold, force)
        stale = old.status == "running" and (old.heartbeat or 0) < now - self.grace
        retry = old.status == "failed" and (old.finished or 0) < self.since
        redo = force and old.status == "done" and (old.finished or 0) < self.since
        if not (stale or retry or redo):
            return False
        t = self.table.c
        same = self._key(bundle, fold) & (t.status == old.status) & (t.worker == old.worker)
        same &= t.heartbeat.is_(None) if old.heartbeat is None else (t.heartbeat == old.heartbeat)
        with self.engine.begin() as c:  # only one worker's update matches the row it read
            return c.execute(sa.update(self.table).where(same).values(**mine)).rowcount == 1

    @contextlib.contextmanager
    def holding(self, bundle: str, fold: int) -> Iterator[None]:
        """Beat the claim's heartbeat while the block runs."""
        import sqlalchemy as sa

        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.heartbeat):
                with contextlib.suppress(sa.exc.SQLAlchemyError), self.engine.begin() as c:
                    t = self.table.c
                    mine = self._key(bundle, fold) & (t.worker == self.worker)
                    c.execute(sa.update(self.table).where(mine).values(heartbeat=time.time()))

        thread = threading.Thread(target=beat, daemon=True, name=f"beat-{bundle}-{fold}")
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(10)

    def finish(self, bundle: str, fold: int, record: Mapping[str, Any], run_dir: Path) -> None:
        """Store the run's record and result files (the run then counts as done or failed everywhere)."""
        import sqlalchemy as sa

        files = {f: (Path(run_dir) / f).read_text() for f in FILES if (Path(run_dir) / f).is_file()}
        status = "done" if record.get("status") == "done" else "failed"
        values = {
            "status": status,
            "heartbeat": time.time(),
            "finished": time.time(),
            "record": json.dumps(dict(record), default=str),
            "files": json.dumps(files),
        }
        t = self.table.c
        with self.engine.begin() as c:
            c.execute(sa.update(self.table).where(self._key(bundle, fold) & (t.worker == self.worker)).values(**values))

    def rows(self) -> list[Any]:
        import sqlalchemy as sa

        with self.engine.connect() as c:
            return list(c.execute(sa.select(self.table).where(self.table.c.grid == self.grid)))

    def busy(self) -> list[tuple[str, int, bool]]:
        """(bundle, fold, stale) of the runs other workers hold."""
        now = time.time()
        return [
            (r.bundle, r.fold, (r.heartbeat or 0) < now - self.grace)
            for r in self.rows()
            if r.status == "running" and r.worker != self.worker
        ]

    def materialize(self, run_path: Any, results: Path) -> int:
        """Write the runs finished elsewhere into this machine's run folders (``run_path(results, bundle, fold)``)
        unless a finished run is there already; returns how many were written."""
        from shared_components.experiments.runs import RUN_FILE, read_run

        n = 0
        for r in self.rows():
            if r.status not in ("done", "failed") or not r.record:
                continue
            run_dir = Path(run_path(results, r.bundle, r.fold))
            local = read_run(run_dir)
            if local.get("status") == "done" or (local and r.status == "failed"):
                continue
            for rel, text in json.loads(r.files or "{}").items():
                write_text_atomic(run_dir / rel, text)
            write_json(run_dir / RUN_FILE, {**json.loads(r.record), "worker": r.worker})
            n += 1
        return n
