"""A catalog of an older schema version, made from a current one by undoing the later migrations of
catalog/schema.c, newest first, for the migration tests. A new migration adds its undo to UNDO once, and the
tests that start from older versions keep working."""
import sqlite3

# UNDO[v]: what brings a version-v catalog back to version v - 1
UNDO = {
    11: ["DROP TABLE verifications"],
    10: ["DROP TABLE interference"],
    9: ["ALTER TABLE metrics DROP COLUMN balance_loss", "ALTER TABLE metrics DROP COLUMN dropped"],
    8: ["PRAGMA writable_schema = ON",
        "UPDATE sqlite_schema SET sql = replace(sql, 'CHECK (kind IN (''pretrain'', ''eval''))', "
        "'CHECK (kind IN (''pretrain''))') WHERE type = 'table' AND name = 'jobs'",
        "PRAGMA writable_schema = RESET"],
    7: ["DROP TABLE eval_results"],
    6: ["ALTER TABLE datasets DROP COLUMN augment"],
    5: ["ALTER TABLE jobs DROP COLUMN backend_opts"],
}


def make(src, dst, version):
    """Copies catalog src (WAL-safe, through SQLite's backup) to dst at schema `version`."""
    con = sqlite3.connect(dst)
    try:
        s = sqlite3.connect(src)
        s.backup(con)
        s.close()
        now = con.execute("PRAGMA user_version").fetchone()[0]
        for v in range(now, version, -1):
            if v not in UNDO:
                raise ValueError("tests/support/old_catalog.py cannot undo schema version %d" % v)
            for sql in UNDO[v]:
                con.execute(sql)
        con.execute("PRAGMA user_version = %d" % version)
        con.commit()
    finally:
        con.close()
