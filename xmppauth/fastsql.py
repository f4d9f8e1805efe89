"""Lean single statements for the login hot path, where building an ORM query costs more than running it.

A full login runs about eight statements (certificate status, account, hosted domains, the auth event, the
session row and its conflict lookup, the row's delete). Through the ORM each costs 150–400 µs of Python to
compile, against 20–50 µs to run on SQLite (``bench/profile_login.py`` shows where the time goes). These
helpers build the SQL once per database vendor from the models' own metadata, so table and column names
still come from one place, and prepare values with the fields' own ``get_db_prep_value`` (UUIDs as hex on
SQLite, aware datetimes as the backend wants them).

Everything here runs on the calling thread's ``django.db.connection``; callers keep to autocommit or their
own ``transaction.atomic()`` block, as with the ORM. Each helper looks that connection up once (:func:`_db`):
every attribute read through ``django.db.connection`` is a lookup in asgiref's thread-critical ``Local``,
which the auth event's insert alone did once per column and again per value.

On SQLite a statement goes straight to the open ``sqlite3`` connection under Django's error wrapper
(:func:`_run`): Django's cursor (its thread and event-loop checks, execute wrappers, the ``%s`` to ``?``
rewrite by regular expression at every call) cost about 27 µs of a 31 µs INSERT. Where Django logs queries
(``DEBUG``, ``assertNumQueries``, ``CaptureQueriesContext``), has execute wrappers installed
(``connection.execute_wrapper``: the fault tests' outages), or has no connection open yet, Django's cursor
runs it, so what is counted, wrapped or refused stays the same.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, connections, models, transaction
from django.db.backends.sqlite3.base import FORMAT_QMARK_REGEX
from django.utils import timezone

_statements: dict[tuple[str, str], str] = {}
_lock = threading.Lock()


def _db() -> Any:
    """The calling thread's default connection (what ``django.db.connection`` stands for), looked up once."""
    return connections[DEFAULT_DB_ALIAS]


def table(model: type[models.Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def column(model: type[models.Model], name: str) -> str:
    return connection.ops.quote_name(model._meta.get_field(name).column)


def statement(key: str, build: Callable[[], str]) -> str:
    """The SQL ``build()`` makes, built once per database vendor under ``key``."""
    cache_key = (_db().vendor, key)
    sql = _statements.get(cache_key)
    if sql is None:
        sql = build()
        with _lock:
            _statements[cache_key] = sql
    return sql


def param(model: type[models.Model], name: str, value: Any) -> Any:
    """``value`` as the database stores field ``name`` (for a comparison or an insert)."""
    return model._meta.get_field(name).get_db_prep_value(value, _db(), prepared=False)


QMARK_STATEMENTS_HELD = 1024  # statements: every caller's SQL comes from statement() or a plan, a fixed set


@functools.lru_cache(maxsize=QMARK_STATEMENTS_HELD)
def _qmark(sql: str) -> str:
    """``sql`` with ``?`` placeholders, as Django's ``SQLiteCursorWrapper.convert_query`` makes it."""
    return FORMAT_QMARK_REGEX.sub("?", sql).replace("%%", "%")


def _run(
    db: Any, sql: str, params: Sequence[Any], answer: Callable[[Any], Any], *, many: bool = False
) -> Any:
    """``answer(cursor)`` after ``sql`` ran with ``params`` (``%s`` placeholders; with ``many``, a sequence of
    rows of them) on ``db``: on SQLite's open connection directly, unless Django logs or wraps queries here
    (module doc); Django's exceptions either way."""
    raw = db.connection
    if db.vendor != "sqlite" or raw is None or db.queries_logged or db.execute_wrappers:
        with db.cursor() as cursor:
            if many:
                cursor.executemany(sql, params)
            else:
                cursor.execute(sql, params)
            return answer(cursor)
    with db.wrap_database_errors:
        return answer(raw.executemany(_qmark(sql), params) if many else raw.execute(_qmark(sql), params))


def _rows(cursor: Any) -> list[tuple[Any, ...]]:
    return cursor.fetchall()


def _rowcount(cursor: Any) -> int:
    return cursor.rowcount


def fetch_all(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """The rows of one SELECT built by :func:`statement`."""
    return _run(_db(), sql, params, _rows)


def insert_row(model: type[models.Model], **values: Any) -> None:
    """One INSERT of ``values``; other concrete fields take their default (``auto_now_add``: now).

    No signals, no model instance: for append-only rows written on every login (the auth event, the session
    row). An auto primary key is left to the database.
    """
    db = _db()
    sql, params = _insert_statement(db, model, values)
    _run(db, sql, params, _rowcount)


def insert_new(model: type[models.Model], **values: Any) -> bool:
    """:func:`insert_row` of a row whose key may exist already: False, and nothing written, when it does. The
    caller's transaction stays usable: PostgreSQL needs a savepoint around the INSERT for that; SQLite does
    not, a failed statement undoes only itself (sqlite.org/lang_conflict.html, ABORT)."""
    db = _db()
    sql, params = _insert_statement(db, model, values)
    try:
        if db.in_atomic_block and db.vendor != "sqlite":
            with transaction.atomic(using=db.alias):
                _run(db, sql, params, _rowcount)
        else:
            _run(db, sql, params, _rowcount)
    except IntegrityError:
        return False
    return True


@dataclasses.dataclass(frozen=True)
class _RowPlan:
    """What :func:`insert_row` needs of a model and the fields it is given, worked out once per vendor."""

    sql: str
    # each concrete field in column order: (field, given by the caller, auto_now(_add), a plain text field)
    steps: tuple[tuple[models.Field, bool, bool, bool], ...]


_row_plans: dict[tuple[str, type[models.Model], tuple[str, ...]], _RowPlan] = {}


def _insert_statement(db: Any, model: type[models.Model], values: dict[str, Any]) -> tuple[str, list[Any]]:
    key = (db.vendor, model, tuple(values))
    plan = _row_plans.get(key)
    if plan is None:
        plan = _row_plan(db, model, values)
        with _lock:
            _row_plans[key] = plan
    now = None
    params = []
    for field, given, auto_now, plain_text in plan.steps:
        if given:
            value = values[field.name]
            if plain_text and type(value) is str:  # what CharField/TextField's preparation returns for a str
                params.append(value)
                continue
        elif auto_now:
            now = now or timezone.now()
            value = now
        else:
            value = field.get_default()
        params.append(field.get_db_prep_save(value, db))
    return plan.sql, params


def _row_plan(db: Any, model: type[models.Model], values: dict[str, Any]) -> _RowPlan:
    fields = [
        field
        for field in model._meta.concrete_fields
        if field.name in values or not (field.primary_key and isinstance(field, models.AutoField))
    ]
    steps = tuple(
        (
            field,
            field.name in values,
            bool(getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False)),
            type(field) in (models.CharField, models.TextField),
        )
        for field in fields
    )
    return _RowPlan(_insert_sql(*_table_and_columns(db, model, fields), len(fields)), steps)


def _table_and_columns(db: Any, model: type[models.Model], fields: Sequence[Any]) -> tuple[str, str]:
    """The model's table and ``fields``' columns, quoted for ``db``."""
    return db.ops.quote_name(model._meta.db_table), ", ".join(db.ops.quote_name(f.column) for f in fields)


def _insert_sql(quoted_table: str, columns: str, count: int) -> str:
    """``INSERT INTO table (columns) VALUES (%s, ...)`` for ``count`` columns: one row (``executemany`` for
    many); ``quoted_table`` and ``columns`` as :func:`_table_and_columns` gives them."""
    return f"INSERT INTO {quoted_table} ({columns}) VALUES ({', '.join(['%s'] * count)})"


def delete_rows(model: type[models.Model], name: str, value: Any) -> int:
    """``DELETE ... WHERE name = value`` without the ORM's collector (no cascades, no signals: rows that
    nothing references); returns the rows deleted."""
    sql = statement(
        f"delete:{model._meta.label}:{name}",
        lambda: f"DELETE FROM {table(model)} WHERE {column(model, name)} = %s",
    )
    return _run(_db(), sql, [param(model, name, value)], _rowcount)


MAX_PARAMS_PER_STATEMENT = 10_000  # where the backend names no limit (PostgreSQL's protocol allows 65,535)


def _per_statement(columns: int) -> int:
    """Rows of ``columns`` values one statement may carry: within the backend's parameter limit (Django's
    ``max_query_params``: 999 on SQLite), and at most :data:`MAX_PARAMS_PER_STATEMENT` parameters."""
    limit = connection.features.max_query_params or MAX_PARAMS_PER_STATEMENT
    return max(1, min(limit, MAX_PARAMS_PER_STATEMENT) // columns)


def insert_many(
    model: type[models.Model], names: Sequence[str], rows: Iterable[Sequence[Any]], *, prepared: bool = False
) -> int:
    """Bulk insert of ``rows`` (values in ``names`` order); returns the rows inserted.

    For bulk writes of rows nothing references (a CRL's serials): no model instances, no signals. PostgreSQL
    gets one ``COPY`` (psycopg 3: no SQL text to build and parse for 100,000 rows), SQLite one
    ``executemany`` (one statement, its loop in C; no parameter limit to split for). Each value is
    prepared by its field (``get_db_prep_save``) unless ``prepared`` says the caller did it (for a datetime,
    ``connection.ops.adapt_datetimefield_value``), which costs far less per row.
    """
    db = _db()
    plan = _insert_plan(db, model, tuple(names))
    if not prepared:
        rows = [[prep(value, db) for prep, value in zip(plan.prepare, row, strict=True)] for row in rows]
    if db.vendor != "postgresql":
        return _run(db, plan.insert_sql, rows, _rowcount, many=True)
    # psycopg's COPY is not behind Django's cursor wrapper: its errors are made Django's here, so that an
    # outage is OperationalError (xmppauth.outage) and a duplicate IntegrityError, as on every other path
    with db.cursor() as cursor, db.wrap_database_errors:
        inserted = 0
        with cursor.copy(plan.copy_sql) as copy:
            for row in rows:
                copy.write_row(row)
                inserted += 1
        return inserted


@dataclasses.dataclass(frozen=True)
class _InsertPlan:
    """What :func:`insert_many` needs of a model and its columns, worked out once per database vendor."""

    insert_sql: str  # INSERT ... VALUES (%s, ...): one row, for executemany
    copy_sql: str  # COPY ... FROM STDIN (PostgreSQL)
    prepare: tuple[Callable[[Any, Any], Any], ...]  # each column's field.get_db_prep_save


_insert_plans: dict[tuple[str, str, tuple[str, ...]], _InsertPlan] = {}


def _insert_plan(db: Any, model: type[models.Model], names: tuple[str, ...]) -> _InsertPlan:
    key = (db.vendor, model._meta.label, names)
    plan = _insert_plans.get(key)
    if plan is None:
        fields = [model._meta.get_field(name) for name in names]
        quoted_table, columns = _table_and_columns(db, model, fields)
        plan = _InsertPlan(
            insert_sql=_insert_sql(quoted_table, columns, len(fields)),
            copy_sql=f"COPY {quoted_table} ({columns}) FROM STDIN",
            prepare=tuple(field.get_db_prep_save for field in fields),  # type: ignore[union-attr]
        )
        with _lock:
            _insert_plans[key] = plan
    return plan


def delete_in(model: type[models.Model], name: str, value: Any, in_name: str, values: Sequence[Any]) -> int:
    """``DELETE ... WHERE name = value AND in_name IN (values)`` in statements within the parameter limit,
    without the ORM's collector (rows that nothing references); returns the rows deleted."""
    per_statement = _per_statement(1) - 1
    head = f"DELETE FROM {table(model)} WHERE {column(model, name)} = %s AND {column(model, in_name)} IN "
    deleted = 0
    with connection.cursor() as cursor:
        for start in range(0, len(values), per_statement):
            chunk = [param(model, in_name, item) for item in values[start : start + per_statement]]
            cursor.execute(
                head + "(" + ", ".join(["%s"] * len(chunk)) + ")", [param(model, name, value), *chunk]
            )
            deleted += cursor.rowcount
    return deleted


@dataclasses.dataclass
class Staged:
    """Rows made ready for :func:`insert_staged`: in a SQLite TEMP table, or kept here for a COPY."""

    model: type[models.Model]
    names: tuple[str, ...]
    rows: list[Sequence[Any]] = dataclasses.field(default_factory=list)
    temp_table: str = ""


def stage_rows(model: type[models.Model], names: Sequence[str], rows: list[Sequence[Any]]) -> Staged:
    """Prepared ``rows`` to be inserted later by :func:`insert_staged`, inside a write transaction.

    Call it before that transaction. On SQLite the rows go now into a TEMP table, which lives in its own
    database: writing it takes no lock on the main one, so the other processes' writers (every login) do not
    wait for it; inside the transaction one ``INSERT ... SELECT`` copies them in C, several times faster than
    the ``executemany`` would be. Elsewhere the rows stay in memory (PostgreSQL's COPY blocks no login).
    """
    staged = Staged(model, tuple(names))
    if connection.vendor != "sqlite" or not rows:
        staged.rows = rows
        return staged
    staged.temp_table = connection.ops.quote_name(f"staged_{model._meta.db_table}")
    columns = ", ".join(column(model, name) for name in names)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS temp.{staged.temp_table}")
        cursor.execute(f"CREATE TEMP TABLE {staged.temp_table} ({columns})")
        marks = ", ".join(["%s"] * len(names))
        cursor.executemany(f"INSERT INTO temp.{staged.temp_table} VALUES ({marks})", rows)
    return staged


def insert_staged(staged: Staged) -> int:
    """Insert what :func:`stage_rows` made ready (once); returns the rows inserted."""
    if not staged.temp_table:
        return insert_many(staged.model, staged.names, staged.rows, prepared=True) if staged.rows else 0
    columns = ", ".join(column(staged.model, name) for name in staged.names)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table(staged.model)} ({columns}) SELECT {columns} FROM temp.{staged.temp_table}"
        )
        inserted = cursor.rowcount
        cursor.execute(f"DROP TABLE temp.{staged.temp_table}")
    return inserted
