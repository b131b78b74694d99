"""Replace a live PostgreSQL table by one built beside it, holding the exclusive lock briefly.

``TableSwap.build`` creates the replacement (same owner, grants and comment as the live table)
in the caller's transaction; ``copy`` fills it from the live table, casting each column to its
new type; ``build_indexes`` recreates the live table's indexes (other than its primary key, which
the replacement's definition carries) under temporary names; ``swap`` takes ACCESS EXCLUSIVE on
the live table and its dependent views with a short ``lock_timeout`` (retrying, readers run
between attempts), drops the live table, renames the replacement and its indexes to the old
names and recreates the dependent views (views bind to a table's OID, so they must be rebuilt
on the new one) with their owners, grants, options and comments. All of it commits with the
caller's transaction, so readers see the old table or the new one, never neither.

After ``terminate_blockers_after_s`` seconds of failed attempts, the backends holding a lock on
the table or its views are terminated (``pg_terminate_backend``), each logged with its pid,
application name, query start, state and the first characters of its query.

Column comments and defaults (serial sequences too) are carried over. Not carried over:
column-level grants, identity columns, CHECK / foreign key constraints, triggers, policies,
indexes of materialized views; UNIQUE constraints come back as unique indexes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from etl_assets.logs import Log
from etl_assets.sinks.postgres.errors import PostgresSinkError
from etl_assets.sinks.postgres.table import TableDef

QUERY_SHOWN = 60  # characters of a terminated backend's query put in the log


@dataclass(frozen=True)
class _Index:
    name: str
    definition: str  # pg_get_indexdef
    unique: bool


@dataclass(frozen=True)
class _View:
    oid: int
    schema: str
    name: str
    kind: str  # 'v' view, 'm' materialized view
    definition: str
    owner: str
    comment: str | None
    options: list[str] | None


def _grants(conn: psycopg.Connection[Any], oid: int, target: sql.Composable,
            kind: sql.SQL) -> list[sql.Composed]:
    """GRANT statements giving ``target`` the privileges others (not the owner) have on ``oid``."""
    rows = conn.execute(
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' "
        "ELSE quote_ident(pg_get_userbyid(a.grantee)) END, a.privilege_type, a.is_grantable "
        "FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = %s AND a.grantee <> c.relowner",
        (oid,)).fetchall()
    return [sql.SQL("GRANT {} ON {} {} TO {}{}").format(
        sql.SQL(privilege), kind, target, sql.SQL(grantee),
        sql.SQL(" WITH GRANT OPTION" if grantable else ""))
        for grantee, privilege, grantable in rows]


def dependent_views(conn: psycopg.Connection[Any], oid: int) -> list[_View]:
    """Views (and materialized views) that depend on relation ``oid``, directly or through
    other views, in an order in which they can be created."""
    rows = conn.execute(
        # path: views can form a cycle (CREATE OR REPLACE VIEW), which must not recurse forever
        """WITH RECURSIVE deps(oid, depth, path) AS (
             SELECT r.ev_class, 1, ARRAY[%(oid)s::oid, r.ev_class] FROM pg_depend d
             JOIN pg_rewrite r ON r.oid = d.objid
             WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
               AND d.refobjid = %(oid)s AND r.ev_class <> %(oid)s
             UNION
             SELECT r.ev_class, deps.depth + 1, deps.path || r.ev_class FROM deps
             JOIN pg_depend d ON d.refobjid = deps.oid AND d.classid = 'pg_rewrite'::regclass
               AND d.refclassid = 'pg_class'::regclass
             JOIN pg_rewrite r ON r.oid = d.objid WHERE r.ev_class <> ALL(deps.path))
           SELECT c.oid, n.nspname, c.relname, c.relkind, pg_get_viewdef(c.oid),
                  pg_get_userbyid(c.relowner), obj_description(c.oid, 'pg_class'), c.reloptions
           FROM (SELECT oid, max(depth) AS depth FROM deps GROUP BY oid) v
           JOIN pg_class c ON c.oid = v.oid JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind IN ('v', 'm') ORDER BY v.depth, c.oid""", {"oid": oid}).fetchall()
    return [_View(*row) for row in rows]


def terminate_blockers(conn: psycopg.Connection[Any], oids: Sequence[int], what: str,
                       log: Log, skip: set[int] | None = None) -> set[int]:
    """Terminate every other backend holding a lock on one of ``oids`` (but those in ``skip``,
    terminated before and still exiting); returns their pids."""
    rows = conn.execute(
        "SELECT DISTINCT a.pid, a.application_name, a.query_start, a.state, "
        "left(a.query, %s) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.granted AND l.relation = ANY(%s) AND l.pid <> pg_backend_pid() "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        (QUERY_SHOWN, list(oids))).fetchall()
    rows = [row for row in rows if row[0] not in (skip or set())]
    for pid, application, started, state, query in rows:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        log.warning(f"{what}: terminated backend pid {pid} (application_name "
                    f"{application!r}, query started {started}, state {state}, query "
                    f"{query!r}...) that blocked the swap")
    return {row[0] for row in rows}


def lock_exclusively(conn: psycopg.Connection[Any], relations: Sequence[tuple[int, str]],
                     what: str, *, log: Log, lock_timeout_s: float = 0.5,
                     retry_pause_s: float = 0.2, terminate_blockers_after_s: float | None = None,
                     give_up_after_s: float | None = None) -> None:
    """ACCESS EXCLUSIVE on ``relations`` ((oid, qualified name)) in the caller's transaction,
    each attempt waiting at most ``lock_timeout_s`` (readers queued behind it wait no longer);
    after ``terminate_blockers_after_s`` the backends holding locks on them are terminated."""
    names = sql.SQL(", ").join(sql.SQL(name) for _, name in relations)
    started = time.monotonic()
    attempts = 0
    terminated: set[int] = set()
    while True:
        attempts += 1
        try:
            with conn.transaction():  # a savepoint: a timed-out attempt keeps earlier work
                conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(
                    sql.Literal(f"{max(1, int(lock_timeout_s * 1000))}ms")))
                conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(names))
            conn.execute("SET LOCAL lock_timeout = DEFAULT")
            if attempts > 1:
                log.info(f"{what}: exclusive lock taken after {attempts} attempts "
                         f"({time.monotonic() - started:.1f} s)")
            return
        except psycopg.errors.LockNotAvailable:
            waited = time.monotonic() - started
            if terminate_blockers_after_s is not None and waited >= terminate_blockers_after_s:
                terminated |= terminate_blockers(conn, [oid for oid, _ in relations], what, log,
                                                 terminated)
            elif give_up_after_s is not None and waited >= give_up_after_s:
                raise PostgresSinkError(f"{what}: could not lock the table for {waited:.0f} s "
                                        f"(other sessions hold it)") from None
            elif attempts % 10 == 1:
                log.info(f"{what}: waiting for other sessions to release the table "
                         f"({waited:.1f} s)")
            time.sleep(retry_pause_s)


class TableSwap:
    """Builds ``replacement`` (a TableDef named like the live table) beside the live table and
    swaps it in. Every method runs in the caller's transaction on ``conn``."""

    def __init__(self, conn: psycopg.Connection[Any], replacement: TableDef, *, log: Log,
                 lock_timeout_s: float = 0.5, terminate_blockers_after_s: float | None = None
                 ) -> None:
        self.conn = conn
        self.desired = replacement
        self.log = log
        self.lock_timeout_s = lock_timeout_s
        self.terminate_blockers_after_s = terminate_blockers_after_s
        self.live = replacement.identifier
        tag = uuid.uuid4().hex[:8]
        self.new_name = f"{replacement.name[:40]}_etl_new_{tag}"
        self.new = sql.Identifier(replacement.schema, self.new_name)
        self._tag = tag
        self._indexes: list[tuple[_Index, str]] = []  # (live index, temporary name)
        self._live_oid: int | None = None
        self._pkey: str | None = None

    @property
    def display(self) -> str:
        return self.desired.display

    def _qualified(self, ident: sql.Identifier) -> str:
        return ident.as_string(self.conn)

    def build(self) -> None:
        """Create the replacement with the live table's owner, grants and comment."""
        conn = self.conn
        row = conn.execute(
            "SELECT c.oid, pg_get_userbyid(c.relowner), obj_description(c.oid, 'pg_class'), "
            "(SELECT conname FROM pg_constraint WHERE conrelid = c.oid AND contype = 'p') "
            "FROM pg_class c WHERE c.oid = %s::regclass", (self._qualified(self.live),)).fetchone()
        assert row is not None
        self._live_oid, owner, comment, self._pkey = row
        # The primary key comes with build_indexes: one sorted build after the copy is faster
        # than maintaining it row by row.
        columns = [sql.SQL("{} {}{}").format(sql.Identifier(c.name), sql.SQL(c.type),
                                             sql.SQL("" if c.nullable else " NOT NULL"))
                   for c in self.desired.columns]
        conn.execute(sql.SQL("CREATE TABLE {} ({})").format(self.new, sql.SQL(", ").join(columns)))
        for name, default in conn.execute(
                "SELECT a.attname, pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d "
                "JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum "
                "WHERE d.adrelid = %s AND a.attgenerated = ''", (self._live_oid,)).fetchall():
            if self.desired.column(name) is not None:
                conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {}").format(
                    self.new, sql.Identifier(name), sql.SQL(default)))
        for grant in _grants(conn, self._live_oid, self.new, sql.SQL("TABLE")):
            conn.execute(grant)
        for name, text in conn.execute(
                "SELECT attname, col_description(attrelid, attnum) FROM pg_attribute "
                "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped "
                "AND col_description(attrelid, attnum) IS NOT NULL", (self._live_oid,)).fetchall():
            if self.desired.column(name) is not None:
                conn.execute(sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
                    self.new, sql.Identifier(name), sql.Literal(text)))
        if comment is not None:
            conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(self.new,
                                                                     sql.Literal(comment)))
        current = conn.execute("SELECT current_user").fetchone()
        if current is not None and current[0] != owner:
            conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(self.new,
                                                                     sql.Identifier(owner)))

    def copy(self, live_columns: Sequence[str], live_types: dict[str, str]) -> int:
        """Copy the live table's rows into the replacement, casting columns whose type changed;
        returns the rows copied. ``live_columns``: the live table's columns to carry over."""
        targets: list[sql.Identifier] = []
        values: list[sql.Composable] = []
        for name in live_columns:
            column = self.desired.column(name)
            if column is None:
                continue
            targets.append(sql.Identifier(name))
            if live_types.get(name) == column.type:
                values.append(sql.Identifier(name))
            else:
                values.append(sql.SQL("CAST({} AS {})").format(sql.Identifier(name),
                                                               sql.SQL(column.type)))
        cur = self.conn.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
            self.new, sql.SQL(", ").join(targets), sql.SQL(", ").join(values), self.live))
        self.conn.execute(sql.SQL("ANALYZE {}").format(self.new))  # readers' plans from the start
        return cur.rowcount

    def build_indexes(self) -> list[str]:
        """Add the primary key and recreate the live table's other indexes on the replacement;
        returns those that no longer apply (their creation failed on the new types; logged,
        not recreated)."""
        if self.desired.primary_key:
            self.conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
                self.new, sql.SQL(", ").join(map(sql.Identifier, self.desired.primary_key))))
        rows = self.conn.execute(
            "SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisunique FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s AND NOT i.indisprimary "
            "ORDER BY c.relname", (self._live_oid,)).fetchall()
        skipped = []
        for n, (name, definition, unique) in enumerate(rows):
            index = _Index(name, definition, unique)
            temporary = f"etl_ix_{self._tag}_{n}"
            tail = definition[definition.index(" USING "):]
            statement = sql.SQL("CREATE {}INDEX {} ON {}{}").format(
                sql.SQL("UNIQUE " if unique else ""), sql.Identifier(temporary), self.new,
                sql.SQL(tail))
            try:
                with self.conn.transaction():
                    self.conn.execute(statement)
            except psycopg.Error as exc:
                self.log.warning(f"{self.display}: index {name} does not apply to the new "
                                 f"table ({exc.diag.message_primary or exc}); not recreated")
                skipped.append(name)
                continue
            self._indexes.append((index, temporary))
        return skipped

    def swap(self) -> None:
        """Lock the live table and its views briefly, drop it, rename the replacement into its
        place and recreate the views on it."""
        conn = self.conn
        assert self._live_oid is not None, "build() first"
        # The live table now: a concurrent run may have swapped in its own since build().
        row = conn.execute("SELECT %s::regclass::oid", (self._qualified(self.live),)).fetchone()
        assert row is not None
        self._live_oid = row[0]
        views = dependent_views(conn, self._live_oid)
        relations = [(self._live_oid, self._qualified(self.live))] + [
            (v.oid, self._qualified(sql.Identifier(v.schema, v.name))) for v in views]
        lock_exclusively(conn, relations, self.display, log=self.log,
                         lock_timeout_s=self.lock_timeout_s,
                         terminate_blockers_after_s=self.terminate_blockers_after_s)
        views = dependent_views(conn, self._live_oid)  # stable now: the table is locked
        grants = {v.oid: _grants(conn, v.oid, sql.Identifier(v.schema, v.name),
                                 sql.SQL("TABLE")) for v in views}
        for sequence, column in conn.execute(  # serial columns: keep their sequences
                "SELECT s.oid::regclass::text, a.attname FROM pg_depend d "
                "JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
                "JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
                "WHERE d.refobjid = %s AND d.deptype = 'a'", (self._live_oid,)).fetchall():
            if self.desired.column(column) is not None:
                conn.execute(sql.SQL("ALTER SEQUENCE {} OWNED BY {}.{}").format(
                    sql.SQL(sequence), self.new, sql.Identifier(column)))
        conn.execute(sql.SQL("DROP TABLE {} CASCADE").format(self.live))
        conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(
            self.new, sql.Identifier(self.desired.name)))
        if self.desired.primary_key:
            current = conn.execute(
                "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass "
                "AND contype = 'p'", (self._qualified(self.live),)).fetchone()
            wanted = self._pkey or f"{self.desired.name[:58]}_pkey"
            if current is not None and current[0] != wanted:
                conn.execute(sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                    self.live, sql.Identifier(current[0]), sql.Identifier(wanted)))
        for index, temporary in self._indexes:
            conn.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                sql.Identifier(self.desired.schema, temporary), sql.Identifier(index.name)))
        for view in views:
            self._recreate(view, grants[view.oid])

    def _recreate(self, view: _View, grants: list[sql.Composed]) -> None:
        conn = self.conn
        name = sql.Identifier(view.schema, view.name)
        options: sql.Composable = sql.SQL("")
        if view.options:
            options = sql.SQL(" WITH ({})").format(sql.SQL(", ").join(
                sql.SQL(o) for o in view.options))
        kind = sql.SQL("MATERIALIZED VIEW" if view.kind == "m" else "VIEW")
        conn.execute(sql.SQL("CREATE {} {}{} AS {}").format(
            kind, name, options, sql.SQL(view.definition.rstrip().rstrip(";"))))
        for grant in grants:
            conn.execute(grant)
        if view.comment is not None:
            conn.execute(sql.SQL("COMMENT ON {} {} IS {}").format(kind, name,
                                                                  sql.Literal(view.comment)))
        current = conn.execute("SELECT current_user").fetchone()
        if current is not None and current[0] != view.owner:
            conn.execute(sql.SQL("ALTER {} {} OWNER TO {}").format(kind, name,
                                                                  sql.Identifier(view.owner)))

    def discard(self) -> None:
        """Drop the replacement (a run that ends before the swap)."""
        self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.new))
