"""The results store: recorded runs, the series they feed, and each run's point in each series.

One code path for SQLite and PostgreSQL (SQLAlchemy Core). The store carries its schema
version; an older one is migrated in place, a newer one is refused, never misread. A run is
recorded in one transaction (SQLite: taken for writing at once, so two runs finishing together
queue instead of failing), and recording a run the store has is a no-op.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    create_engine,
    delete,
    event,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, NoSuchModuleError

from runner.errors import BadInputError, ExprunError
from runner.history.location import StoreLocation
from runner.history.record import RunRecord
from schemas.history import Point, RecordedRun

SCHEMA_VERSION = 1
CONNECT_TIMEOUT_S = 5  # a PostgreSQL that does not answer: the error within 10 s
SQLITE_BUSY_TIMEOUT_S = 60  # another run recording into the same file: wait for it
EVERY_POINT = 2**31 - 1  # a limit no series reaches

metadata = MetaData()
meta = Table(
    "exprun_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
runs = Table(
    "exprun_runs",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("run_key", String(300), nullable=False, unique=True),
    Column("spec_name", String(200), nullable=False, index=True),
    Column("spec_sha256", String(64)),
    Column("spec_commit", String(64)),
    Column("spec_branch", String(200)),
    Column("spec_dirty", Boolean),
    Column("label", Text),
    Column("commit", String(200)),
    Column("testbed", String(300), nullable=False),
    Column("started_at", String(40)),
    Column("finished_at", String(40)),
    Column("recorded_at", String(40)),
    Column("run_folder", Text),
    Column("environment", Text),  # JSON: machine, broker and client versions
)
series = Table(
    "exprun_series",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("spec_name", String(200), nullable=False),
    Column("testbed", String(300), nullable=False),
    Column("broker", String(200), nullable=False),
    Column("variant", String(200), nullable=False),
    Column("scenario", String(200), nullable=False),
    Column("metric", String(200), nullable=False),
    UniqueConstraint("spec_name", "testbed", "broker", "variant", "scenario", "metric"),
)
points = Table(
    "exprun_points",
    metadata,
    Column("series_pk", Integer, ForeignKey("exprun_series.pk"), primary_key=True),
    Column("run_pk", Integer, ForeignKey("exprun_runs.pk"), primary_key=True),
    # The run's start, kept beside each point: a series' newest points are read by an index.
    Column("started_at", String(40)),
    Column("median", Float),
    Column("ci_low", Float),
    Column("ci_high", Float),
    Column("n", Integer, nullable=False),
    Column("trials", Text, nullable=False),  # JSON list: every measured trial's value
    Column("settings", String(64), nullable=False),  # digest of the cell's resolved settings
    Index("exprun_points_by_run", "run_pk"),
    Index("exprun_points_by_series_time", "series_pk", "started_at"),
)
SERIES_KEY = ("spec_name", "testbed", "broker", "variant", "scenario", "metric")
_newest = (
    select(points)
    .where(points.c.series_pk == bindparam("pk"))
    .order_by(points.c.started_at.desc(), points.c.run_pk.desc())
    .limit(bindparam("last"))
    .subquery()
)
NEWEST_POINTS = select(
    runs.c.run_key,
    runs.c.spec_commit,
    runs.c.commit,
    runs.c.label,
    runs.c.run_folder,
    _newest.c.started_at,
    _newest.c.median,
    _newest.c.ci_low,
    _newest.c.ci_high,
    _newest.c.n,
    _newest.c.trials,
    _newest.c.settings,
).join(runs, runs.c.pk == _newest.c.run_pk)
# Migrations from each older schema version to the next, in order (none yet: version 1).
MIGRATIONS: dict[int, Callable[[Connection], None]] = {}


class StoreError(ExprunError):
    """The store cannot be reached, read or written; str() is one line, password hidden."""


@dataclass(frozen=True)
class SeriesKey:
    spec_name: str
    testbed: str
    broker: str
    variant: str
    scenario: str
    metric: str
    pk: int = field(default=0, compare=False)  # the store's own number for it


class Store:
    """An open store (its schema checked and current)."""

    def __init__(self, engine: Engine, location: StoreLocation) -> None:
        self.engine, self.location = engine, location

    @contextmanager
    def _transaction(self, doing: str) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except DBAPIError as error:
            raise StoreError(f"store {self.location.shown}: {doing}: {_why(error)}") from None

    # --- writing -------------------------------------------------------------------------

    def record(self, record: RunRecord) -> bool:
        """Record a run with its points; False if the store already has it (nothing done)."""
        run = record.run
        row = run.model_dump()
        row["environment"] = json.dumps(record.environment, sort_keys=True)
        # A writer recording the same run at the same moment makes this one a no-op (the
        # database decides which, on the run's unique key), never a failure.
        insert = self._insert(runs).values(**row).on_conflict_do_nothing(index_elements=["run_key"])
        with self._transaction(f"recording run {run.run_key}") as conn:
            run_pk = conn.execute(insert.returning(runs.c.pk)).scalar_one_or_none()
            if run_pk is None:
                return False
            keys = [
                SeriesKey(run.spec_name, run.testbed, f.broker, f.variant, f.scenario, f.metric)
                for f in record.figures
            ]
            pks = self._series_pks(conn, set(keys))
            rows = [
                {
                    "series_pk": pks[key],
                    "run_pk": run_pk,
                    "started_at": run.started_at,
                    "median": f.median,
                    "ci_low": f.ci_low,
                    "ci_high": f.ci_high,
                    "n": f.n,
                    "trials": json.dumps(f.trials),
                    "settings": f.settings,
                }
                for key, f in zip(keys, record.figures, strict=True)
            ]
            if rows:
                conn.execute(points.insert(), rows)
        return True

    def _insert(self, table: Table) -> Any:
        """An INSERT that can do nothing on a conflict, in this store's dialect."""
        return (postgresql if self.dialect == "postgresql" else sqlite).insert(table)

    def _series_pks(self, conn: Connection, keys: set[SeriesKey]) -> dict[SeriesKey, int]:
        """The series of these keys, created where missing (another writer may race us)."""
        if not keys:
            return {}
        # In one order for every writer: two creating the same series never wait on each other
        # in a circle (PostgreSQL's deadlock).
        ordered = sorted(keys, key=lambda key: tuple(getattr(key, name) for name in SERIES_KEY))
        rows = [{name: getattr(key, name) for name in SERIES_KEY} for key in ordered]
        insert = self._insert(series).on_conflict_do_nothing(index_elements=list(SERIES_KEY))
        conn.execute(insert, rows)
        spec_names = {key.spec_name for key in keys}
        found = conn.execute(
            select(series.c.pk, *(series.c[name] for name in SERIES_KEY)).where(
                series.c.spec_name.in_(spec_names)
            )
        )
        wanted = {}
        for pk, *values in found:
            key = SeriesKey(*values)
            if key in keys:
                wanted[key] = pk
        return wanted

    def forget(self, run_key: str) -> None:
        """Remove a run and its points; BadInputError if the store does not have it."""
        with self._transaction(f"forgetting run {run_key}") as conn:
            pk = conn.scalar(select(runs.c.pk).where(runs.c.run_key == run_key))
            if pk is None:
                raise BadInputError(f"no run {run_key!r} in the store {self.location.shown}")
            conn.execute(delete(points).where(points.c.run_pk == pk))
            conn.execute(delete(runs).where(runs.c.pk == pk))

    # --- reading -------------------------------------------------------------------------

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def runs(self) -> list[RecordedRun]:
        """Every recorded run, oldest first."""
        with self._transaction("reading the runs") as conn:
            return self._runs(conn)

    def _runs(self, conn: Connection) -> list[RecordedRun]:
        query = select(*(runs.c[name] for name in RecordedRun.model_fields))
        rows = conn.execute(query.order_by(runs.c.started_at, runs.c.pk)).mappings()
        return [RecordedRun.model_validate(dict(row)) for row in rows]

    def series_keys(self, **equal: str | None) -> list[SeriesKey]:
        """The series whose key fields equal the given values (None: any)."""
        query = select(*(series.c[name] for name in SERIES_KEY), series.c.pk)
        for name, value in equal.items():
            if value is not None:
                query = query.where(series.c[name] == value)
        with self._transaction("reading the series") as conn:
            found = conn.execute(query.order_by(series.c.pk)).mappings()
            return [SeriesKey(**row) for row in found]

    def points(self, key: SeriesKey, last: int | None = None) -> list[Point]:
        """The series' points, oldest first (the newest `last` of them)."""
        with self._transaction("reading a series") as conn:
            pk = key.pk or conn.scalar(
                select(series.c.pk).where(
                    *(series.c[name] == getattr(key, name) for name in SERIES_KEY)
                )
            )
            # One statement for every series (a spec's --changes reads thousands of them).
            newest = conn.execute(NEWEST_POINTS, {"pk": pk, "last": last or EVERY_POINT})
            rows = sorted(newest.mappings(), key=_in_time)
        found: list[Point] = []
        previous: str | None = None
        for row in rows:
            folder = row["run_folder"]
            # Rows this store wrote itself: built without validating them again (200k points
            # of a whole spec's --changes spent 2 s in validation).
            found.append(
                Point.model_construct(
                    run_key=row["run_key"],
                    started_at=row["started_at"],
                    spec_commit=row["spec_commit"],
                    commit=row["commit"],
                    label=row["label"],
                    median=row["median"],
                    ci_low=row["ci_low"],
                    ci_high=row["ci_high"],
                    n=row["n"],
                    trials=json.loads(row["trials"]),
                    settings_changed=previous is not None and previous != row["settings"],
                    report=f"{folder}/report.html" if folder else None,
                )
            )
            previous = row["settings"]
        return found

    def close(self) -> None:
        self.engine.dispose()


def _in_time(row: Any) -> tuple[str, str]:
    return row["started_at"] or "", row["run_key"]


def open_store(location: StoreLocation) -> Store:
    """The store at `location`, created or migrated to this exprun's schema if need be."""
    engine = _engine(location)
    store = Store(engine, location)
    try:
        _prepare_schema(store)
    except StoreError:
        engine.dispose()
        raise
    return store


def _engine(location: StoreLocation) -> Engine:
    url = location.url
    path = location.sqlite_file
    try:
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise StoreError(
                    f"store {location.shown}: cannot create {path.parent}: "
                    f"{error.strerror or error}"
                ) from None
            engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
            _serialize_sqlite_writers(engine)
            return engine
        return create_engine(
            url, connect_args={"connect_timeout": CONNECT_TIMEOUT_S}, pool_pre_ping=True
        )
    except (NoSuchModuleError, ModuleNotFoundError):
        raise StoreError(
            f"store {location.shown}: a PostgreSQL store needs psycopg: "
            "pip install 'exprun[postgres]'"
        ) from None


def _serialize_sqlite_writers(engine: Engine) -> None:
    """Every transaction takes the file for writing at once (BEGIN IMMEDIATE): concurrent runs
    wait their turn instead of failing to upgrade a read lock."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's begin() below does it
        dbapi_connection.execute("PRAGMA journal_mode=WAL")

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _prepare_schema(store: Store) -> None:
    for attempt in range(2):
        try:
            with store._transaction("preparing its tables") as conn:
                metadata.create_all(conn, checkfirst=True)
                found = conn.scalar(select(meta.c.value).where(meta.c.key == "schema_version"))
                if found is None:
                    conn.execute(meta.insert().values(key="schema_version", value="1"))
                    return
                _migrate(store, conn, int(found))
                return
        except StoreError:
            # Two first writers may both create the tables: the loser tries once more.
            if attempt:
                raise


def _migrate(store: Store, conn: Connection, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"store {store.location.shown} has schema version {version}, written by a newer "
            f"exprun; this one reads version {SCHEMA_VERSION} (upgrade exprun)"
        )
    while version < SCHEMA_VERSION:
        MIGRATIONS[version](conn)
        version += 1
        conn.execute(meta.update().where(meta.c.key == "schema_version").values(value=str(version)))


def _why(error: DBAPIError) -> str:
    """The driver's own first line (SQLAlchemy's wrapping repeats the statement)."""
    original = getattr(error, "orig", None) or error
    lines = [line.strip() for line in str(original).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(original).__name__


def record_run(location: StoreLocation, record: RunRecord) -> bool:
    """Open the store, record the run (False: it was there already), close."""
    store = open_store(location)
    try:
        return store.record(record)
    finally:
        store.close()
