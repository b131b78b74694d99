"""A table's name as a spec writes it: ``table``, ``schema.table``, with double-quoted parts
holding dots or quotes (``"my.schema"."tbl.x"``, ``""`` for a quote), and an optional
separate ``schema``.

A part is quoted when it starts with a quote; unquoted parts are taken as written (case
kept, no folding to lower case, a quote inside kept). Every statement quotes the parts
(:meth:`TableName.sql`), so a name means the same in every statement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from psycopg import sql

from etl_assets.errors import ConfigurationError

_PLAIN = re.compile(r"[^\s.\"]+")  # a part shown without quotes


class TableNameError(ConfigurationError, ValueError):
    """A table name that cannot be read; the message says why."""


def _parts(text: str) -> list[str]:
    parts: list[str] = []
    position = 0
    while True:
        if text.startswith('"', position):
            end = position + 1
            value = []
            while True:
                quote = text.find('"', end)
                if quote < 0:
                    raise TableNameError(f"{text!r}: a quoted part is not closed")
                value.append(text[end:quote])
                if text.startswith('""', quote):
                    value.append('"')
                    end = quote + 2
                    continue
                position = quote + 1
                break
            part = "".join(value)
            if position < len(text) and text[position] != ".":
                raise TableNameError(f"{text!r}: a quoted part must end at a dot or the end")
        else:
            dot = text.find(".", position)
            end = len(text) if dot < 0 else dot
            part = text[position:end]  # as written, quotes inside it included
            position = end
        if not part:
            raise TableNameError(f"{text!r}: an empty part")
        parts.append(part)
        if position >= len(text):
            return parts
        position += 1  # the dot
        if position == len(text):
            raise TableNameError(f"{text!r}: an empty part after the last dot")


@dataclass(frozen=True)
class TableName:
    """``schema`` (None: the connection's default) and ``name``, unquoted."""

    schema: str | None
    name: str

    @classmethod
    def parse(cls, text: str, schema: str | None = None) -> TableName:
        """``text`` as a spec writes it; ``schema``: a separate ``schema`` field, which
        ``text`` must then not repeat. Raises :class:`TableNameError`."""
        parts = _parts(text.strip())
        if len(parts) > 2:
            raise TableNameError(f"{text!r} has {len(parts)} parts; give schema.table (quote "
                                 f"a part that holds a dot: \"my.schema\".\"my.table\")")
        if schema is not None:
            if not schema:
                raise TableNameError("`schema` is empty")
            if len(parts) == 2:
                raise TableNameError(f"{text!r} names a schema and so does `schema`: give it "
                                     f"in one of them")
            return cls(schema, parts[0])
        return cls(parts[0], parts[1]) if len(parts) == 2 else cls(None, parts[0])

    def in_schema(self, default: str) -> TableName:
        """This name with ``default`` as its schema when it has none."""
        return self if self.schema else TableName(default, self.name)

    def sql(self) -> sql.Identifier:
        """The name as psycopg quotes it in a statement."""
        return sql.Identifier(self.schema, self.name) if self.schema else \
            sql.Identifier(self.name)

    @property
    def display(self) -> str:
        """The name as a spec writes it: parts quoted only when they must be."""
        return ".".join(_shown(p) for p in (self.schema, self.name) if p is not None)

    def __str__(self) -> str:
        return self.display


def _shown(part: str) -> str:
    return part if _PLAIN.fullmatch(part) else '"' + part.replace('"', '""') + '"'
