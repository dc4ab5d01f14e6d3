"""The documentation against the code, cheaply: the catalog schema version written in docs/catalog.md,
the folder table of docs/ARCHITECTURE.md and the layout paragraph of README.md against the source
folders that exist, every library CMake builds named in ARCHITECTURE.md, and the rule of catalog/catalog.h
that SQL stays in the library files of the modules that own the tables. Each check fails when a side
drifts (a folder added without a row, a schema bump without the docs, SQL written in a CLI)."""
import glob
import os
import re
import unittest

SRC = os.environ.get("UPMOE_SOURCE_DIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def read(rel):
    with open(os.path.join(SRC, rel), encoding="utf-8") as f:
        return f.read()


def source_folders():
    """Top-level folders that build code (a CMakeLists.txt) plus tools/ and tests/."""
    out = set()
    for d in sorted(os.listdir(SRC)):
        if d.startswith(".") or d.startswith("build") or not os.path.isdir(os.path.join(SRC, d)):
            continue
        if os.path.exists(os.path.join(SRC, d, "CMakeLists.txt")):
            out.add(d)
    return out


class Docs(unittest.TestCase):
    def test_schema_version(self):
        code = int(re.search(r"#define UPM_CATALOG_SCHEMA_VERSION (\d+)", read("catalog/catalog.h")).group(1))
        doc = read("docs/catalog.md")
        now = re.search(r"schema version \(now \*\*(\d+)\*\*\)", doc)
        self.assertIsNotNone(now, "docs/catalog.md: no 'schema version (now **N**)'")
        self.assertEqual(int(now.group(1)), code, "docs/catalog.md names another schema version than the code")
        tables = re.search(r"## Tables \(schema version (\d+)\)", doc)
        self.assertIsNotNone(tables)
        self.assertEqual(int(tables.group(1)), code)

    def test_architecture_folder_table(self):
        doc = read("docs/ARCHITECTURE.md")
        rows = dict(re.findall(r"^\| `([a-z]+)/` \|(.*)$", doc, re.M))
        folders = source_folders()
        self.assertTrue(folders >= {"common", "catalog", "tasks", "pipeline", "sampler", "model", "trainer", "jobs",
                                    "tools", "tests"}, folders)
        self.assertEqual(set(rows), folders, "docs/ARCHITECTURE.md's folder table and the source folders differ")
        for folder, row in rows.items():
            self.assertNotIn("created when", row, f"{folder}/ is described as not yet created")

    def test_architecture_names_every_library(self):
        doc = read("docs/ARCHITECTURE.md")
        libs = set()
        for cm in glob.glob(os.path.join(SRC, "*", "CMakeLists.txt")):
            with open(cm, encoding="utf-8") as f:
                libs |= set(re.findall(r"add_library\((upm_\w+)", f.read()))
        self.assertTrue(libs)
        for lib in sorted(libs):
            self.assertTrue(f"`{lib}`" in doc, f"docs/ARCHITECTURE.md does not name the library {lib}")

    def test_readme_layout(self):
        readme = read("README.md")
        layout = readme[readme.index("## Layout"):]
        layout = layout[:layout.index("\n## ", 4)] if "\n## " in layout[4:] else layout
        for folder in sorted(source_folders()):
            self.assertTrue(f"`{folder}/`" in layout, f"README.md's layout omits {folder}/")
        if not glob.glob(os.path.join(SRC, "model", "cuda", "*.cu")):
            self.assertNotRegex(readme.split("\n\n")[1], r"in C and CUDA\b",
                                "README says CUDA while no CUDA source exists")
        else:  # the claim comes with its state: built, and whether a GPU has run it
            self.assertRegex(readme.split("\n\n")[1], r"in C and CUDA \(the CUDA backend is built")

    def test_sql_stays_with_the_table_owners(self):
        """catalog/catalog.h: only the library files of catalog/ and jobs/queue.c include sqlutil.h or call
        SQLite; CLIs and other modules call functions."""
        allowed = {os.path.relpath(p, SRC) for p in glob.glob(os.path.join(SRC, "catalog", "*.c"))}
        allowed |= {"catalog/sqlutil.h", "jobs/queue.c"}
        offenders = []
        for root in ("catalog", "jobs", "common", "tasks", "pipeline", "sampler", "model", "trainer", "tools"):
            for path in glob.glob(os.path.join(SRC, root, "**", "*.[ch]"), recursive=True):
                rel = os.path.relpath(path, SRC)
                with open(path, encoding="utf-8") as f:
                    text = f.read()
                if re.search(r"\bsqlite3_\w+\(|#include [<\"](sqlite3|sqlutil)\.h", text) and rel not in allowed:
                    offenders.append(rel)
        self.assertEqual(offenders, [], "SQL outside the modules that own the tables")


if __name__ == "__main__":
    unittest.main()
