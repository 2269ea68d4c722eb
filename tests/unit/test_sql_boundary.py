"""SQL lives only in monitor/store: every other module reaches the database through a
named store function, so that a query's text, parameters and row shape are found (and
reviewed) in one place, and the API cannot grow ad-hoc queries that bypass it.

Pure: it reads the source files and inspects their syntax trees; nothing is imported or
run. A module outside monitor/store fails it by calling `.execute(`, `.executemany(`,
`.cursor(` or `.copy(` on anything, or by holding a string literal that reads as SQL.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "monitor"
STORE = PACKAGE / "store"

# Modules outside monitor/store still allowed to hold SQL. Each entry is a debt with an
# owner, not a place where SQL may go: delete the entry with the last statement (the
# second test below fails once an entry is no longer needed, so none can linger).
EXEMPT: frozenset[str] = frozenset()

# The database-driver methods that run or stream a statement. `.copy(` is psycopg's
# `Cursor.copy(statement, ...)`, whose statement is required: a `.copy()` without
# arguments is the container/array copy idiom (numpy in monitor/rules), not SQL.
_DRIVER_CALLS = frozenset({"execute", "executemany", "cursor", "copy"})

# A literal that starts (after whitespace) with an SQL statement. Keywords are matched
# upper-case, as this code base writes SQL, so that prose ("Create a subject", "Update
# the set") in docstrings and messages does not match; each keyword must be followed by
# what makes it a statement (SELECT ... FROM, UPDATE ... SET, ...). SELECT without FROM
# (`SELECT 1`, `SELECT pg_notify(...)`) and the session/COPY/LISTEN forms count as well.
_SQL = re.compile(
    r"""\s*(?:
        SELECT\b.*?\bFROM\b
      | SELECT\s+(?:\d|[A-Za-z_][\w.]*\s*\()
      | INSERT\s+INTO\b
      | UPDATE\s+\S+.*?\bSET\b
      | DELETE\s+FROM\b
      | (?:CREATE|ALTER|DROP)\s+[A-Z]+\b
      | TRUNCATE\s+\S
      | WITH\s+(?:RECURSIVE\s+)?\w+.*?\bAS\b
      | SET\s+(?:TRANSACTION|SESSION|LOCAL|[a-z_]+\s*(?:=|TO\b))
      | COPY\s+\S+.*?\b(?:FROM|TO)\b
      | (?:LISTEN|NOTIFY)\s+\w
    )""",
    re.VERBOSE | re.DOTALL,
)


def _literal_text(node: ast.expr) -> str | None:
    """The text of a string literal; an f-string's replacement fields read as `{}`, and
    a `+` chain of literals reads as their concatenation."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, str):
            return node.value
        if isinstance(node.value, bytes):
            return node.value.decode("latin-1")
        return None
    if isinstance(node, ast.JoinedStr):
        return "".join(
            v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "{}"
            for v in node.values
        )
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _literal_text(node.left), _literal_text(node.right)
        if left is None:
            return None
        return left + (right if right is not None else "{}")
    return None


def violations(source: str, filename: str) -> Iterator[str]:
    """`file:line: what` for every driver call and SQL literal in the source."""
    tree = ast.parse(source, filename=filename)
    # The literal parts of an f-string or `+` chain are judged as part of the whole.
    inner: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            inner.update(id(v) for v in node.values)
        elif isinstance(node, ast.BinOp) and _literal_text(node) is not None:
            inner.update((id(node.left), id(node.right)))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            if name in _DRIVER_CALLS and (
                name != "copy" or node.args or any(k.arg == "statement" for k in node.keywords)
            ):
                yield f"{filename}:{node.lineno}: calls .{name}(...)"
        elif isinstance(node, ast.Constant | ast.JoinedStr | ast.BinOp) and id(node) not in inner:
            text = _literal_text(node)
            if text is not None and _SQL.match(text):
                first = text.strip().splitlines()[0][:60]
                yield f"{filename}:{node.lineno}: SQL literal {first!r}"


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.is_relative_to(STORE):
            continue
        yield path.relative_to(ROOT).as_posix(), path


def _found(name: str, path: Path) -> list[str]:
    found = set(violations(path.read_text(encoding="utf-8"), name))
    return sorted(found, key=lambda v: int(v.split(":")[1]))


def test_sql_only_in_the_store() -> None:
    found = [v for name, path in _modules() if name not in EXEMPT for v in _found(name, path)]
    assert not found, (
        "SQL outside monitor/store (move each statement into a function of the fitting"
        " monitor/store/<noun>.py and call that):\n" + "\n".join(found)
    )


def test_every_exemption_is_still_needed() -> None:
    modules = dict(_modules())
    stale = sorted(
        name for name in EXEMPT if name not in modules or not _found(name, modules[name])
    )
    assert not stale, f"no SQL left in {stale}: delete them from EXEMPT"


def test_the_detector_sees_what_it_must_and_nothing_else() -> None:
    """The rule is only as good as its detector: planted SQL is found, look-alikes not."""
    planted = """
async def f(conn, cur, cols):
    await conn.execute("SELECT 1")
    await conn.executemany(q, rows)
    async with conn.cursor() as c:
        pass
    async with cur.copy("COPY fixes FROM STDIN") as copy:
        pass
    q = f"SELECT {cols} FROM subjects WHERE id = %s"
    q = (
        "INSERT INTO suspensions (subject_id)"
        " VALUES (%s)"
    )
    q = "  UPDATE users SET locked_at = NULL"
    q = "DELETE FROM sessions WHERE token_hash = %s"
    q = "CREATE TABLE t (x int)"
    q = "ALTER TABLE t ADD COLUMN y int"
    q = "TRUNCATE devices"
    q = "WITH recent AS (SELECT 1) SELECT * FROM recent"
    q = "SELECT " + cols + " FROM devices"
    q = b"SELECT pg_notify('rules', %s)"
    q = prefix + "DELETE FROM alerts"
"""
    found = list(violations(planted, "planted.py"))
    lines = sorted({int(v.split(":")[1]) for v in found})
    assert lines == [3, 4, 5, 7, 9, 11, *range(14, 23)], found

    innocent = '''
"""Create a subject, then update the set of zones; select from the list."""
import copy
x = arr.copy()
y = state.dev_t.copy(order="C")
msg = "SELECTED: 3 devices"
label = "Update"
UPDATE = "update"
def execute_plan(): ...
'''
    assert list(violations(innocent, "innocent.py")) == []
