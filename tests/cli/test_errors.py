"""Bad input: exactly one 'upmoe-catalog: error: ...' line naming the offending value, exit 2 for usage errors
and 1 for runtime errors, and the catalog unchanged. Also files that are not catalogs, read-only and newer
catalogs, bad imports, and the schema refusing bad rows by itself (not only the CLI)."""
import json
import os
import sqlite3
import stat
import unittest

from catalog_cli import CatalogTestCase


class Base(CatalogTestCase):
    def setUp(self):
        super().setUp()
        self.init()
        self.label_file = self.write("ok.labels", "a\nb\n")

    def assert_fails_unchanged(self, code, args, contains):
        before = self.snapshot()
        p = self.fails(code, *args, contains=contains)
        self.assertEqual(p.stdout, "", f"{args}: a failing command printed on stdout")
        self.assertEqual(self.snapshot(), before, f"{args} changed the catalog")
        return p


DS = ["add", "dataset", "newds", "--task", "mlm", "--batch", "4"]


class UsageErrorTest(Base):
    """Exit 2: the command line itself is wrong."""

    CASES = [
        # unknown option / command / kind
        (["add", "task", "t", "--formulation", "vocab-mlm", "--input", "txt=text", "--bogus"], "--bogus"),
        (["list", "tasks", "--frobnicate"], "--frobnicate"),
        (DS + ["--colour", "red"], "--colour"),
        (["frobnicate"], "frobnicate"),
        (["list", "widgets"], "list"),
        (["remove", "widget", "x"], "widget"),
        (["show", "widget", "x"], "widget"),
        (["add", "widget", "x"], "widget"),
        (["mixture", "explode", "m"], "explode"),
        (["init", "--preset", "no-such-preset"], "no-such-preset"),
        # --json where a command has no machine-readable output (it would be silently ignored)
        (DS + ["--json"], "--json"),
        (["set", "books-wiki", "weight=2", "--json"], "--json"),
        (["mixture", "create", "m9", "--json"], "--json"),
        # missing argument
        (["add", "dataset", "newds", "--task"], "--task"),
        (["add", "dataset", "newds", "--task", "mlm"], "--batch"),
        (["add", "task", "t", "--formulation"], "--formulation"),
        (["add", "task", "t", "--input", "txt=text"], "--formulation"),
        (["add", "labels", "l"], "FILE"),
        (["set", "books-wiki"], "KEY=VALUE"),
        (["--catalog"], "--catalog"),
        # non-numeric or negative weights
        (DS + ["--weight", "abc"], "abc"),
        (DS + ["--weight", "-0.5"], "-0.5"),
        (DS + ["--weight", "1e999"], "1e999"),
        (DS + ["--loss-weight", "x1"], "x1"),
        (DS + ["--loss-weight", "-2"], "-2"),
        (["add", "task", "t", "--formulation", "vocab-mlm", "--input", "txt=text", "--loss-weight", "heavy"], "heavy"),
        (["set", "books-wiki", "weight=abc"], "abc"),
        (["set", "books-wiki", "weight=-1"], "-1"),
        (["set", "books-wiki", "loss_weight=lots"], "lots"),
        (["mixture", "add", "uniperceiver-moe-pretrain", "imagenet-1k", "--weight", "-3"], "-3"),
        (["mixture", "add", "uniperceiver-moe-pretrain", "imagenet-1k", "--weight", "much"], "much"),
        # bad batch
        (["add", "dataset", "newds", "--task", "mlm", "--batch", "0"], "0"),
        (["add", "dataset", "newds", "--task", "mlm", "--batch", "-4"], "-4"),
        (["add", "dataset", "newds", "--task", "mlm", "--batch", "2.5"], "2.5"),
        (["add", "dataset", "newds", "--task", "mlm", "--batch", "many"], "many"),
        (["add", "dataset", "newds", "--task", "mlm", "--batch", "99999999"], "99999999"),
        (["set", "books-wiki", "batch=0"], "0"),
        (["set", "books-wiki", "batch=big"], "big"),
        # malformed URL patterns
        (DS + ["--url", "/data/shard-{000..009.tar"], "/data/shard-{000..009.tar"),
        (DS + ["--url", "/data/shard-000..009}.tar"], "/data/shard-000..009}.tar"),
        (DS + ["--url", "/data/{9..0}.tar"], "{9..0}"),
        (DS + ["--url", "ftp://host/data/{0..9}.tar"], "ftp"),
        (DS + ["--url", "pipe:cat /data/x.tar"], "pipe"),
        (DS + ["--url", "pipe:cat"], "pipe"),
        (DS + ["--url", "gopher://host/data.tar"], "gopher"),
        (["set", "books-wiki", "url=/d/{1..0}.tar"], "{1..0}"),
        (["set", "books-wiki", "url=ftp://h/x.tar"], "ftp"),
        (["set", "books-wiki", "url=pipe:cat"], "pipe"),
        # unknown formulation / modality / split / key
        (["add", "task", "t", "--formulation", "classify", "--input", "jpg=image"], "classify"),
        (["add", "task", "t", "--formulation", "vocab-mlm", "--input", "wav=audio"], "audio"),
        (["add", "task", "t", "--formulation", "pair", "--input", "jpg=image", "--target", "txt=smell"], "smell"),
        (["add", "task", "t", "--formulation", "vocab-mlm", "--input", "txt"], "txt"),
        (DS + ["--split", "holdout"], "holdout"),
        (["set", "books-wiki", "split=holdout"], "holdout"),
        (DS + ["--augment", "heavy"], "heavy"),
        (DS + ["--augment", ""], "paper, light, none or inherit"),
        (["set", "books-wiki", "augment=heavy"], "heavy"),
        (["set", "books-wiki", "augment=Paper"], "paper, light, none or inherit"),
        (["set", "books-wiki", "augment="], "paper, light, none or inherit"),
        (["set", "books-wiki", "weight=0.5", "augment=strong"], "strong"),
        (["set", "books-wiki", "colour=red"], "colour"),
        (["set", "books-wiki", "justaword"], "justaword"),
        # invalid names
        (["add", "task", "Bad Name", "--formulation", "vocab-mlm", "--input", "txt=text"], "Bad Name"),
        (["add", "dataset", "UPPER", "--task", "mlm", "--batch", "1"], "UPPER"),
        (DS + ["--weight", "nan"], "nan"),
        (DS + ["--weight", "inf"], "inf"),
        (["set", "books-wiki", "weight=nan"], "nan"),
        (["add", "dataset", "x" * 65, "--task", "mlm", "--batch", "1"], "dataset name"),
        # text that is not UTF-8 (the byte 0xff)
        (["add", "task", "t", "--formulation", "vocab-mlm", "--input", "txt=text", "--notes", "bad\udcff"], "notes"),
        (["set", "books-wiki", "license=bad\udcff"], "licence"),
        (["mixture", "create", "m2", "--notes", "bad\udcff"], "notes"),
        # prompts
        (["add", "task", "t", "--formulation", "label", "--input", "txt=text", "--target", "cls", "--labels",
          "sst2-answers", "--prompt", "{txt} <|spe|> <|spe|>"], "<|spe|>"),
        (["add", "task", "t", "--formulation", "label", "--input", "txt=text", "--target", "cls", "--labels",
          "sst2-answers", "--prompt", "{txt} <|bogus|>"], "<|bogus|>"),
        (["add", "task", "t", "--formulation", "label", "--input", "txt=text", "--target", "cls", "--labels",
          "sst2-answers", "--prompt", "{txt <|spe|>"], "{txt <|spe|>"),
        # --shards that contradict the pattern
        (DS + ["--url", "/d/{0..9}.tar", "--shards", "12"], "12"),
    ]

    def test_usage_errors(self):
        for args, contains in self.CASES:
            with self.subTest(args=args):
                self.assert_fails_unchanged(2, args, contains)

    def test_unknown_preset_creates_no_file(self):
        path = os.path.join(self.tmp, "fresh", "c.db")
        self.run_cli("--catalog", path, "init", "--preset", "nope", catalog=False, check=2)
        self.assertFalse(os.path.exists(path))

    def test_no_command(self):
        p = self.run_cli(catalog=False, check=2)
        self.assertIn("usage:", p.stderr)


class RuntimeErrorTest(Base):
    """Exit 1: well-formed commands that the catalog's contents refuse."""

    def test_unknown_names(self):
        cases = [
            (["add", "dataset", "newds", "--task", "no-task", "--batch", "1"], "no-task"),
            (["add", "task", "t", "--formulation", "label", "--input", "jpg=image", "--target", "cls",
              "--labels", "no-labels"], "no-labels"),
            (DS[:4] + ["image-classification", "--batch", "1", "--labels", "no-labels"], "no-labels"),
            (["set", "no-dataset", "weight=1"], "no-dataset"),
            (["set", "books-wiki", "task=no-task"], "no-task"),
            (["set", "imagenet-21k", "labels=no-labels"], "no-labels"),
            (["show", "no-name"], "no-name"),
            (["show", "task", "no-task"], "no-task"),
            (["show", "dataset", "no-dataset"], "no-dataset"),
            (["show", "labels", "no-labels"], "no-labels"),
            (["show", "mixture", "no-mixture"], "no-mixture"),
            (["attributes", "no-task"], "no-task"),
            (["mixture", "show", "no-mixture"], "no-mixture"),
            (["mixture", "add", "no-mixture", "books-wiki"], "no-mixture"),
            (["mixture", "add", "uniperceiver-moe-pretrain", "no-dataset"], "no-dataset"),
            (["mixture", "remove", "uniperceiver-moe-pretrain", "no-dataset"], "no-dataset"),
            (["mixture", "remove", "no-mixture", "books-wiki"], "no-mixture"),
            (["remove", "task", "no-task"], "no-task"),
            (["remove", "dataset", "no-dataset"], "no-dataset"),
            (["remove", "labels", "no-labels"], "no-labels"),
            (["remove", "mixture", "no-mixture"], "no-mixture"),
        ]
        for args, contains in cases:
            with self.subTest(args=args):
                self.assert_fails_unchanged(1, args, contains)

    def test_duplicates(self):
        cases = [
            (["add", "task", "mlm", "--formulation", "vocab-mlm", "--input", "txt=text"], "mlm"),
            (["add", "dataset", "books-wiki", "--task", "mlm", "--batch", "1"], "books-wiki"),
            (["add", "labels", "sst2-answers", self.label_file], "sst2-answers"),
            (["mixture", "create", "uniperceiver-moe-pretrain"], "uniperceiver-moe-pretrain"),
            (["mixture", "add", "uniperceiver-moe-pretrain", "books-wiki"], "books-wiki"),
        ]
        for args, contains in cases:
            with self.subTest(args=args):
                self.assert_fails_unchanged(1, args, contains)

    def test_label_files(self):
        missing = os.path.join(self.tmp, "missing.labels")
        self.assert_fails_unchanged(1, ["add", "labels", "new-set", missing], missing)
        latin1 = self.write("latin1.labels", "ok\ncaf\xe9\n".encode("latin-1"), mode="wb")
        p = self.assert_fails_unchanged(1, ["add", "labels", "new-set", latin1], latin1)
        self.assertIn(":2", p.stderr)  # the line
        self.assertIn("UTF-8", p.stderr)
        self.assert_fails_unchanged(1, ["add", "labels", "sst2-answers", latin1, "--replace"], latin1)
        empty = self.write("empty.labels", "")
        self.assert_fails_unchanged(1, ["add", "labels", "new-set", empty], empty)
        nokey = self.write("nokey.labels", "n01\tcrane\njust-a-label\n")
        self.assert_fails_unchanged(1, ["add", "labels", "new-set", nokey, "--keys"], nokey)
        dupkey = self.write("dupkey.labels", "n01\tcrane\nn01\theron\n")
        self.assert_fails_unchanged(1, ["add", "labels", "new-set", dupkey, "--keys"], "n01")
        a_dir = os.path.join(self.tmp, "a-dir")
        os.mkdir(a_dir)
        p = self.run_cli("add", "labels", "new-set", a_dir)
        self.assertNotEqual(p.returncode, 0)

    def test_missing_catalog_is_not_created(self):
        path = os.path.join(self.tmp, "nowhere", "c.db")
        for args in (["list", "tasks"], ["add", "labels", "x", self.label_file], ["show", "mlm"]):
            with self.subTest(args=args):
                p = self.run_cli("--catalog", path, *args, catalog=False, check=1)
                self.assertIn(path, p.stderr)
                self.assertFalse(os.path.exists(path))
                self.assertFalse(os.path.exists(os.path.dirname(path)))


class NotACatalogTest(CatalogTestCase):
    """Files that are not (writable, current) upmoe catalogs are refused and left byte for byte as they were."""

    READ = ["list", "tasks"]
    WRITE = ["add", "task", "t", "--formulation", "vocab-mlm", "--input", "txt=text"]

    def check_refused(self, path, contains):
        before = self.file_bytes(path)
        for args in (self.READ, self.WRITE, ["init", "--preset", "uniperceiver-moe"], ["show", "x"]):
            with self.subTest(args=args):
                p = self.run_cli("--catalog", path, *args, catalog=False, check=1)
                lines = [l for l in p.stderr.splitlines() if l.strip()]
                self.assertEqual(len(lines), 1, p.stderr)
                self.assertTrue(lines[0].startswith("upmoe-catalog: error: "), lines[0])
                self.assertIn(contains, lines[0])
                self.assertIn(path, lines[0])
                self.assertEqual(self.file_bytes(path), before)
        # plain init refuses too (the file exists)
        self.run_cli("--catalog", path, "init", catalog=False, check=1)
        self.assertEqual(self.file_bytes(path), before)

    def test_text_file(self):
        path = self.write("notes.db", "this is not a database\n" * 100)
        self.check_refused(path, "not a SQLite database")

    def test_foreign_sqlite_database(self):
        path = os.path.join(self.tmp, "other.db")
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, path TEXT)")
        con.execute("INSERT INTO photos (path) VALUES ('a.jpg')")
        con.commit()
        con.close()
        self.check_refused(path, "not an upmoe catalog")

    def test_foreign_sqlite_database_with_its_own_application_id(self):
        """Another application's database that stamps its own application_id and schema version (as upmoe
        does) is 'not an upmoe catalog', not 'a newer upmoe catalog'."""
        path = os.path.join(self.tmp, "other-app.db")
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, path TEXT)")
        con.execute("PRAGMA application_id = 1179929415")  # 'FOSG', another application's id
        con.execute("PRAGMA user_version = 3")
        con.commit()
        con.close()
        self.check_refused(path, "not an upmoe catalog")

    def test_empty_file(self):
        path = self.write("empty.db", "")
        before = self.file_bytes(path)
        p = self.run_cli("--catalog", path, *self.READ, catalog=False, check=1)
        self.assertIn(path, p.stderr)
        self.assertEqual(self.file_bytes(path), before)

    def test_directory(self):
        path = os.path.join(self.tmp, "a-dir")
        os.mkdir(path)
        p = self.run_cli("--catalog", path, *self.READ, catalog=False, check=1)
        self.assertIn(path, p.stderr)


class ReadOnlyAndNewerTest(Base):
    WRITES = [
        ["add", "task", "t", "--formulation", "vocab-mlm", "--input", "txt=text"],
        ["add", "dataset", "newds", "--task", "mlm", "--batch", "1"],
        ["set", "books-wiki", "weight=0.5"],
        ["remove", "mixture", "uniperceiver-moe-pretrain"],
        ["mixture", "create", "m2"],
        ["mixture", "add", "uniperceiver-moe-pretrain", "imagenet-1k"],
        ["init", "--preset", "uniperceiver-moe"],
    ]

    def test_read_only_file(self):
        self.ok("list", "tasks")  # leave the WAL files of a normal session behind, if any
        os.chmod(self.db, 0o444)
        before, raw = self.snapshot(), self.file_bytes()
        writes = self.WRITES + [["add", "labels", "new-set", self.label_file]]
        for args in writes:
            with self.subTest(args=args):
                p = self.fails(1, *args, contains="read-only")
                self.assertIn(self.db, p.stderr)
                self.assertEqual(self.snapshot(), before)
                self.assertEqual(self.file_bytes(), raw)
        export = self.write("export.json", self.ok("export").stdout)
        self.fails(1, "import", export, contains="read-only")
        self.assertEqual(stat.S_IMODE(os.stat(self.db).st_mode), 0o444)
        # reading still works
        self.assertEqual(len(self.json_of("list", "datasets")), 31)
        self.assertEqual(self.json_of("show", "dataset", "books-wiki")["batch_size"], 256)
        self.assertEqual(self.snapshot(), before)

    def test_newer_schema(self):
        con = sqlite3.connect(self.db)
        con.execute("PRAGMA user_version = 99")
        con.commit()
        con.close()
        before, raw = self.snapshot(), self.file_bytes()
        for args in self.WRITES + [["list", "tasks"], ["show", "mlm"], ["export"]]:
            with self.subTest(args=args):
                p = self.fails(1, *args, contains="newer")
                self.assertIn("99", p.stderr)
                self.assertEqual(self.snapshot(), before)
        self.assertEqual(self.sql("PRAGMA user_version")[0][0], 99)
        self.assertEqual(self.file_bytes(), raw)


class ImportErrorTest(CatalogTestCase):
    """A bad import adds nothing at all."""

    def setUp(self):
        super().setUp()
        # the source: a preset catalog plus a few records
        src = os.path.join(self.tmp, "src.db")
        self.run_cli("--catalog", src, "init", "--preset", "uniperceiver-moe", catalog=False, check=0)
        self.export = json.loads(self.run_cli("--catalog", src, "export", catalog=False, check=0).stdout)
        self.init(preset=False)
        self.ok("add", "labels", "mine", self.write("mine.txt", "x\n"))

    def import_doc(self, doc, code, contains):
        path = self.write("bad.json", doc if isinstance(doc, str) else json.dumps(doc))
        before = self.snapshot()
        p = self.fails(code, "import", path, contains=contains)
        self.assertEqual(self.snapshot(), before)
        return p

    def test_malformed_json(self):
        text = json.dumps(self.export)
        self.import_doc(text[: len(text) // 2], 1, "JSON")
        self.import_doc("{\"format\": \"upmoe-catalog\", }", 1, "JSON")
        self.import_doc("", 1, "bad.json")

    def test_not_an_export(self):
        self.import_doc({"hello": "world"}, 1, "bad.json")
        self.import_doc([1, 2, 3], 1, "bad.json")
        self.import_doc(dict(self.export, schema_version=99), 1, "99")

    def test_wrong_types(self):
        cases = [
            ("datasets", "batch_size", "x"),
            ("datasets", "batch_size", 2.5),
            ("datasets", "batch_size", 0),
            ("datasets", "sampling_weight", "heavy"),
            ("datasets", "sampling_weight", -1),
            ("datasets", "split", "holdout"),
            ("datasets", "augment", "heavy"),
            ("datasets", "augment", "inherit"),
            ("datasets", "augment", 1),
            ("datasets", "augment", True),
            ("tasks", "formulation", "classify"),
            ("tasks", "causal", "yes"),
            ("tasks", "loss_weight", None),
            ("label_sets", "synonyms", 1),
        ]
        for section, key, value in cases:
            with self.subTest(section=section, key=key, value=value):
                doc = json.loads(json.dumps(self.export))
                doc[section][-1][key] = value
                path = self.write("bad.json", json.dumps(doc))
                before = self.snapshot()
                p = self.run_cli("import", path)
                self.assertEqual(p.returncode, 1, p.stderr)
                lines = [l for l in p.stderr.splitlines() if l.strip()]
                self.assertEqual(len(lines), 1, p.stderr)
                self.assertTrue(lines[0].startswith("upmoe-catalog: error: "))
                self.assertEqual(self.snapshot(), before)
        # the batch_size case names the record and the key
        doc = json.loads(json.dumps(self.export))
        doc["datasets"][3]["batch_size"] = "x"
        self.import_doc(doc, 1, "datasets[3].batch_size")
        # a bad augmentation names the record, the dataset and the allowed values
        doc = json.loads(json.dumps(self.export))
        doc["datasets"][3]["augment"] = "strong"
        p = self.import_doc(doc, 1, "datasets[3].augment")
        for part in (f"dataset '{doc['datasets'][3]['name']}'", "'strong'", '"paper", "light", "none"'):
            self.assertIn(part, p.stderr)

    def test_duplicate_inside_the_export(self):
        doc = json.loads(json.dumps(self.export))
        doc["datasets"].append(dict(doc["datasets"][0]))
        self.import_doc(doc, 1, doc["datasets"][0]["name"])

    def test_record_already_in_the_catalog(self):
        doc = json.loads(json.dumps(self.export))
        doc["label_sets"].append({"name": "mine", "synonyms": False, "notes": "", "labels": [{"key": None, "names": ["y"]}]})
        self.import_doc(doc, 1, "mine")

    def test_dangling_reference(self):
        doc = json.loads(json.dumps(self.export))
        doc["datasets"][-1]["task"] = "no-such-task"
        self.import_doc(doc, 1, "no-such-task")
        doc = json.loads(json.dumps(self.export))
        doc["mixtures"][0]["datasets"].append({"dataset": "ghost", "sampling_weight": None, "loss_weight": None})
        self.import_doc(doc, 1, "ghost")

    def test_good_import_after_failures(self):
        self.import_doc({"hello": "world"}, 1, "bad.json")
        self.ok("import", self.write("good.json", json.dumps(self.export)))
        self.assertEqual(len(self.json_of("list", "datasets")), 31)


class SchemaIntegrityTest(CatalogTestCase):
    """The schema refuses bad rows written with plain SQL (foreign keys on), whoever writes them."""

    def setUp(self):
        super().setUp()
        self.init()
        self.con = sqlite3.connect(self.db, isolation_level=None)
        self.con.execute("PRAGMA foreign_keys = ON")
        self.task_id = self.con.execute("SELECT id FROM tasks WHERE name = 'mlm'").fetchone()[0]
        self.ls_id = self.con.execute("SELECT id FROM label_sets WHERE name = 'sst2-answers'").fetchone()[0]
        self.addCleanup(self.con.close)

    def insert_dataset(self, **kw):
        row = dict(name="sql-ds", task_id=self.task_id, sampling_weight=1.0, batch_size=4)
        row.update(kw)
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self.con.execute(f"INSERT INTO datasets ({cols}) VALUES ({marks})", tuple(row.values()))

    def insert_task(self, **kw):
        row = dict(name="sql-task", formulation="vocab-mlm", causal=0, target_modality="text")
        row.update(kw)
        cols = ", ".join(row)
        self.con.execute(f"INSERT INTO tasks ({cols}) VALUES ({', '.join('?' for _ in row)})", tuple(row.values()))

    def refused(self, fn, *args, **kw):
        before = self.snapshot()
        with self.assertRaises((sqlite3.IntegrityError)):
            fn(*args, **kw)
        self.assertEqual(self.snapshot(), before)

    def test_good_rows_are_accepted(self):
        """The helpers write valid rows (so the refusals below are due to the one bad value)."""
        self.insert_dataset()
        self.insert_task()
        self.assertEqual(self.con.execute("SELECT count(*) FROM datasets WHERE name = 'sql-ds'").fetchone()[0], 1)

    def test_negative_sampling_weight(self):
        self.refused(self.insert_dataset, sampling_weight=-0.1)
        self.refused(self.con.execute, "UPDATE datasets SET sampling_weight = -1 WHERE name = 'books-wiki'")

    def test_negative_loss_weights(self):
        self.refused(self.insert_dataset, loss_weight=-1.0)
        self.refused(self.insert_task, loss_weight=-1.0)
        self.refused(self.con.execute, "UPDATE mixture_datasets SET sampling_weight = -2")

    def test_batch_size(self):
        self.refused(self.insert_dataset, batch_size=0)
        self.refused(self.insert_dataset, batch_size=-5)
        self.refused(self.con.execute, "UPDATE datasets SET batch_size = 0 WHERE name = 'books-wiki'")

    def test_unknown_augmentation(self):
        self.refused(self.insert_dataset, augment="heavy")
        self.refused(self.insert_dataset, augment=None)
        self.refused(self.con.execute, "UPDATE datasets SET augment = 'inherit' WHERE name = 'books-wiki'")

    def test_unknown_formulation(self):
        self.refused(self.insert_task, formulation="classify")
        self.refused(self.con.execute, "UPDATE tasks SET formulation = 'regression' WHERE name = 'mlm'")

    def test_unknown_modality(self):
        tid = self.con.execute("SELECT id FROM tasks WHERE name = 'image-caption'").fetchone()[0]
        self.refused(self.con.execute, "INSERT INTO task_inputs (task_id, pos, field, modality) VALUES (?, 5, 'wav', "
                     "'audio')", (tid,))
        self.refused(self.insert_task, target_modality="smell")

    def test_strict_types(self):
        self.refused(self.insert_dataset, sampling_weight="abc")
        self.refused(self.insert_dataset, batch_size="four")
        self.refused(self.con.execute, "UPDATE tasks SET loss_weight = 'abc' WHERE name = 'mlm'")

    def test_nonexistent_task_id(self):
        self.refused(self.insert_dataset, task_id=987654)
        self.refused(self.con.execute, "UPDATE datasets SET task_id = 987654 WHERE name = 'books-wiki'")

    def test_delete_task_with_datasets(self):
        self.refused(self.con.execute, "DELETE FROM tasks WHERE name = 'mlm'")

    def test_delete_dataset_in_a_mixture_or_label_set_in_use(self):
        self.refused(self.con.execute, "DELETE FROM datasets WHERE name = 'books-wiki'")
        self.refused(self.con.execute, "DELETE FROM label_sets WHERE name = 'sst2-answers'")

    def test_task_shape_checks(self):
        self.refused(self.insert_task, formulation="label")  # a label task without a label set
        self.refused(self.insert_task, label_set_id=self.ls_id)  # a label set on a vocab-mlm task
        self.refused(self.insert_task, formulation="vocab-caption", causal=0)
        self.refused(self.insert_task, formulation="vocab-mlm", causal=1)
        self.refused(self.insert_task, formulation="pair", target_field=None, target_modality="text")

    def test_names(self):
        self.refused(self.insert_dataset, name="Bad Name")
        self.refused(self.insert_dataset, name="books-wiki")  # unique

    def test_dataset_label_set_needs_a_label_task(self):
        self.refused(self.insert_dataset, label_set_id=self.ls_id)


if __name__ == "__main__":
    unittest.main()
