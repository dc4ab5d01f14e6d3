"""upmoe-catalog init: where the catalog file goes, what the file is (WAL, schema version, application id),
and the uniperceiver-moe preset checked value by value against the paper's Table 7."""
import os
import re
import sqlite3
import subprocess
import unittest

from catalog_cli import BIN, PAPER, CatalogTestCase

# Paper Table 7, typed in: (task, dataset, batch size per GPU, sampling weight, loss weight).
TABLE7 = [
    ("image-classification", "imagenet-21k", 220, 0.2486, 1.0),
    ("video-classification", "kinetics-700", 6, 0.01, 0.1),
    ("video-classification", "moments-in-time", 24, 0.02, 0.1),
    ("mlm", "books-wiki", 256, 0.275, 0.5),
    ("image-caption", "yfcc-caption", 100, 0.0584, 1.0),
    ("image-caption", "cc12m-caption", 100, 0.05057, 1.0),
    ("image-caption", "cc3m-caption", 100, 0.026295, 1.0),
    ("image-caption", "visual-genome-caption", 100, 0.01766, 1.0),
    ("image-caption", "coco-caption", 100, 0.01144, 1.0),
    ("image-caption", "sbu-caption", 100, 0.01383, 1.0),
    ("image-text-retrieval", "yfcc-retrieval", 160, 0.0584, 0.5),
    ("image-text-retrieval", "cc12m-retrieval", 160, 0.05057, 0.5),
    ("image-text-retrieval", "cc3m-retrieval", 160, 0.026295, 0.5),
    ("image-text-retrieval", "visual-genome-retrieval", 160, 0.01766, 0.5),
    ("image-text-retrieval", "coco-retrieval", 160, 0.01144, 0.5),
    ("image-text-retrieval", "sbu-retrieval", 160, 0.01383, 0.5),
]

# The paper's names -> ours.
PAPER_TASKS = {
    "Image Classification": "image-classification",
    "Video Classification": "video-classification",
    "Masked Language Modeling": "mlm",
    "Image Caption": "image-caption",
    "Image-Text Retrieval": "image-text-retrieval",
}
PAPER_DATASETS = {
    "ImageNet-21k": "imagenet-21k",
    "Kinetics-700": "kinetics-700",
    "Moments in Time": "moments-in-time",
    "Books&Wiki": "books-wiki",
    # the image-text sets get the task's suffix
    "YFCC": "yfcc", "CC12M": "cc12m", "CC3M": "cc3m", "Visual Genome": "visual-genome",
    "COCO Caption": "coco", "SBU": "sbu",
}
SUFFIX = {"image-caption": "-caption", "image-text-retrieval": "-retrieval"}

MIXTURE = "uniperceiver-moe-pretrain"

GLUE_ANSWERS = {
    "glue-sst2": ["bad", "wonderful"],
    "glue-cola": ["incorrect", "correct"],
    "glue-mnli": ["yes", "maybe", "no"],
    "glue-rte": ["yes", "no"],
    "glue-qnli": ["yes", "no"],
    "glue-mrpc": ["no", "yes"],
    "glue-qqp": ["no", "yes"],
}


def parse_table7(path):
    """Rows of Table 7 of the paper text, mapped to our names: (task, dataset, batch, sampling w., loss w.)."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("Table 7:"))
    header = next(i for i in range(start, len(lines)) if lines[i].lower().startswith("task\tdataset"))
    cols = [c.strip().lower() for c in lines[header].split("\t")]
    assert cols == ["task", "dataset", "batch size/gpu", "sampling weight", "loss weight"], cols
    rows, task = [], None
    for line in lines[header + 1:]:
        if not line.strip():
            break
        cells = [c.strip() for c in line.split("\t")]
        assert len(cells) == 5, f"Table 7 row with {len(cells)} cells: {line!r}"
        if cells[0]:
            task = PAPER_TASKS[cells[0]]
        name = re.sub(r"\s*\[\d+\]$", "", cells[1])
        ours = PAPER_DATASETS[name] + SUFFIX.get(task, "")
        rows.append((task, ours, int(cells[2]), float(cells[3]), float(cells[4])))
    return rows


class InitPathTest(CatalogTestCase):
    """Where init creates the catalog."""

    def env_with(self, **kw):
        env = dict(self.env)
        env.update(kw)
        return env

    def test_catalog_option_creates_file_and_parent_dirs(self):
        path = os.path.join(self.tmp, "a", "b", "c", "cat.db")
        p = self.run_cli("--catalog", path, "init", catalog=False, check=0)
        self.assertTrue(os.path.isfile(path))
        self.assertIn(path, p.stdout)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, ".upmoe")))
        # later commands find it by the same option
        self.run_cli("--catalog", path, "list", "tasks", catalog=False, check=0)

    def test_catalog_option_after_the_command(self):
        path = os.path.join(self.tmp, "late.db")
        self.run_cli("init", "--catalog", path, catalog=False, check=0)
        self.assertTrue(os.path.isfile(path))

    def test_upmoe_catalog_env(self):
        path = os.path.join(self.tmp, "env", "dir", "env.db")
        env = self.env_with(UPMOE_CATALOG=path)
        self.run_cli("init", catalog=False, env=env, check=0)
        self.assertTrue(os.path.isfile(path))
        self.assertFalse(os.path.exists(os.path.join(self.tmp, ".upmoe")))
        p = self.run_cli("list", "labels", "--json", catalog=False, env=env, check=0)
        self.assertEqual(p.stdout.strip(), "[]")

    def test_upmoe_home_env(self):
        home = os.path.join(self.tmp, "uphome", "x")
        env = self.env_with(UPMOE_HOME=home)
        self.run_cli("init", catalog=False, env=env, check=0)
        self.assertTrue(os.path.isfile(os.path.join(home, "catalog.db")))
        self.assertFalse(os.path.exists(os.path.join(self.tmp, ".upmoe")))

    def test_default_is_home_dot_upmoe(self):
        self.run_cli("init", catalog=False, check=0)
        self.assertTrue(os.path.isfile(os.path.join(self.tmp, ".upmoe", "catalog.db")))
        self.run_cli("list", "tasks", catalog=False, check=0)

    def test_precedence_option_over_env_over_home(self):
        opt = os.path.join(self.tmp, "opt.db")
        envp = os.path.join(self.tmp, "envp.db")
        home = os.path.join(self.tmp, "h")
        env = self.env_with(UPMOE_CATALOG=envp, UPMOE_HOME=home)
        self.run_cli("--catalog", opt, "init", catalog=False, env=env, check=0)
        self.assertTrue(os.path.isfile(opt))
        self.assertFalse(os.path.exists(envp))
        self.assertFalse(os.path.exists(home))
        self.assertFalse(os.path.exists(os.path.join(self.tmp, ".upmoe")))
        # without the option, UPMOE_CATALOG wins over UPMOE_HOME
        self.run_cli("init", catalog=False, env=env, check=0)
        self.assertTrue(os.path.isfile(envp))
        self.assertFalse(os.path.exists(home))
        # without both, UPMOE_HOME wins over HOME
        env2 = self.env_with(UPMOE_HOME=home)
        self.run_cli("init", catalog=False, env=env2, check=0)
        self.assertTrue(os.path.isfile(os.path.join(home, "catalog.db")))
        self.assertFalse(os.path.exists(os.path.join(self.tmp, ".upmoe")))

    def test_init_twice_fails_and_changes_nothing(self):
        self.init()
        self.ok("add", "dataset", "extra", "--task", "mlm", "--batch", "3")
        before, raw = self.snapshot(), self.file_bytes()
        p = self.fails(1, "init", contains=self.db)
        self.assertEqual(p.stdout, "")
        self.assertEqual(self.snapshot(), before)
        self.assertEqual(self.file_bytes(), raw)

    def test_init_twice_without_preset_on_empty_catalog(self):
        self.init(preset=False)
        before = self.snapshot()
        self.fails(1, "init", contains="already exists")
        self.assertEqual(self.snapshot(), before)

    def test_preset_applied_to_an_existing_empty_catalog(self):
        self.init(preset=False)
        self.ok("init", "--preset", "uniperceiver-moe")
        self.assertEqual(len(self.json_of("list", "datasets")), 31)
        self.assertEqual(len(self.json_of("list", "tasks")), 14)

    def test_file_format(self):
        self.init()
        con = sqlite3.connect(self.db)
        try:
            self.assertEqual(con.execute("PRAGMA journal_mode").fetchone()[0], "wal")
            self.assertEqual(con.execute("PRAGMA user_version").fetchone()[0], 11)
            self.assertEqual(con.execute("PRAGMA application_id").fetchone()[0], 0x55504D6F)
            self.assertEqual(con.execute("PRAGMA integrity_check").fetchone()[0], "ok")
            self.assertEqual(con.execute("PRAGMA foreign_key_check").fetchall(), [])
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
        finally:
            con.close()
        self.assertTrue({"tasks", "task_inputs", "datasets", "label_sets", "labels", "mixtures",
                         "mixture_datasets"} <= tables, tables)

    def test_file_format_without_preset(self):
        self.init(preset=False)
        self.assertEqual(self.sql("PRAGMA journal_mode")[0][0], "wal")
        self.assertEqual(self.sql("PRAGMA user_version")[0][0], 11)
        self.assertEqual(self.sql("PRAGMA application_id")[0][0], 0x55504D6F)
        self.assertEqual(self.json_of("list", "tasks"), [])

    def test_version_and_help(self):
        p = self.run_cli("--version", catalog=False, check=0)
        self.assertTrue(p.stdout.startswith("upmoe-catalog "), p.stdout)
        self.assertRegex(p.stdout, r"\d+\.\d+")
        p = self.run_cli("--help", catalog=False, check=0)
        self.assertIn("usage: upmoe-catalog", p.stdout)
        for cmd in ("init", "add", "set", "remove", "list", "show", "mixture", "attributes", "export", "import"):
            with self.subTest(cmd=cmd):
                p = self.run_cli(cmd, "--help", catalog=False, check=0)
                self.assertIn(f"usage: upmoe-catalog {cmd}", p.stdout)
        # neither needs nor creates a catalog
        self.assertEqual(os.listdir(self.tmp), [])


class PresetTest(CatalogTestCase):
    """The uniperceiver-moe preset against the paper."""

    def setUp(self):
        super().setUp()
        self.init()

    def effective_loss_weight(self, ds):
        if ds["loss_weight"] is not None:
            return ds["loss_weight"]
        return self.json_of("show", "task", ds["task"])["loss_weight"]

    def check_against(self, table):
        self.assertEqual(len(table), 16)
        mix = self.json_of("mixture", "show", MIXTURE)
        members = {m["dataset"]: m for m in mix["datasets"]}
        self.assertEqual(sorted(members), sorted(r[1] for r in table), "the mixture holds exactly Table 7")
        self.assertEqual(len(mix["datasets"]), 16)
        human = self.table(self.ok("mixture", "show", MIXTURE).stdout, first="DATASET")
        human = {r["DATASET"]: r for r in human}
        listed = {r["NAME"]: r for r in self.table(self.ok("list", "datasets").stdout)}
        for task, name, batch, weight, loss in table:
            with self.subTest(dataset=name):
                ds = self.json_of("show", "dataset", name)
                self.assertEqual(ds["task"], task)
                self.assertEqual(ds["split"], "train")
                self.assertEqual(ds["batch_size"], batch)
                self.assertEqual(ds["sampling_weight"], weight)
                self.assertEqual(self.effective_loss_weight(ds), loss)
                m = members[name]
                mw = m["sampling_weight"] if m["sampling_weight"] is not None else ds["sampling_weight"]
                ml = m["loss_weight"] if m["loss_weight"] is not None else self.effective_loss_weight(ds)
                self.assertEqual(mw, weight)
                self.assertEqual(ml, loss)
                # the human views agree
                self.assertEqual(human[name]["TASK"], task)
                self.assertEqual(int(human[name]["BATCH"]), batch)
                self.assertEqual(float(human[name]["WEIGHT"].rstrip("*")), weight)
                self.assertEqual(float(human[name]["LOSS-W"].rstrip("*")), loss)
                self.assertEqual(listed[name]["TASK"], task)
                self.assertEqual(int(listed[name]["BATCH"]), batch)
                self.assertEqual(float(listed[name]["WEIGHT"]), weight)
                self.assertEqual(float(listed[name]["LOSS-W"]), loss)

    def test_table7_typed_in(self):
        self.check_against(TABLE7)

    def test_table7_parsed_from_paper(self):
        if not os.path.isfile(PAPER):
            self.skipTest(f"paper text not found at {PAPER} (set UPMOE_PAPER to check Table 7 against it)")
        parsed = parse_table7(PAPER)
        self.check_against(parsed)
        # and the typed-in table of this file says the same as the paper
        self.assertEqual(sorted(parsed), sorted(TABLE7))

    def test_mixture_probabilities_follow_the_weights(self):
        rows = self.table(self.ok("mixture", "show", MIXTURE).stdout, first="DATASET")
        total = sum(w for _, _, _, w, _ in TABLE7)
        probs = {r["DATASET"]: float(r["PROB"].rstrip("%")) for r in rows}
        for _, name, _, w, _ in TABLE7:
            self.assertAlmostEqual(probs[name], 100 * w / total, delta=0.006, msg=name)
        self.assertAlmostEqual(sum(probs.values()), 100.0, delta=0.1)

    def test_task_loss_weights(self):
        expected = {"image-classification": 1.0, "video-classification": 0.1, "mlm": 0.5, "image-caption": 1.0,
                    "image-text-retrieval": 0.5}
        for task, lw in expected.items():
            with self.subTest(task=task):
                self.assertEqual(self.json_of("show", "task", task)["loss_weight"], lw)

    def test_downstream_evaluation_sets(self):
        expected = {
            "imagenet-1k": ("image-classification", "val"),
            "kinetics-400": ("video-classification", "val"),
            "coco-caption-test": ("image-caption", "test"),
            "flickr30k-retrieval-test": ("image-text-retrieval", "test"),
        }
        for name, (task, split) in expected.items():
            with self.subTest(dataset=name):
                ds = self.json_of("show", "dataset", name)
                self.assertEqual(ds["task"], task)
                self.assertEqual(ds["split"], split)
        # the classification sets name their own label sets
        self.assertEqual(self.json_of("show", "dataset", "imagenet-1k")["label_set"], "imagenet-1k")
        self.assertEqual(self.json_of("show", "dataset", "kinetics-400")["label_set"], "kinetics-400")
        # and none of them is in the pretraining mixture
        members = {m["dataset"] for m in self.json_of("mixture", "show", MIXTURE)["datasets"]}
        self.assertFalse(set(expected) & members)

    def test_zeroshot_mixture_holds_every_evaluation_set(self):
        """The mixture upmoe-eval takes to reproduce the paper's zero-shot tables: every preset dataset of a
        val or test split (downstream sets, MSVD, GLUE dev), none of the pretraining sets."""
        datasets = self.json_of("list", "datasets")
        evaluation = {d["name"] for d in datasets if d["split"] in ("val", "test")}
        self.assertTrue({"imagenet-1k", "kinetics-400", "coco-retrieval-test", "msvd-caption", "cola"} <= evaluation)
        members = {m["dataset"] for m in self.json_of("mixture", "show", "uniperceiver-moe-zeroshot")["datasets"]}
        self.assertEqual(members, evaluation)
        pretrain = {m["dataset"] for m in self.json_of("mixture", "show", MIXTURE)["datasets"]}
        self.assertFalse(members & pretrain)
        # evaluating it before the URLs are set names every dataset still missing one, before any model loads
        self.ok("set", "cola", f"url={self.tmp}/cola-{{000..003}}.tar")
        p = subprocess.run([os.path.join(os.path.dirname(BIN), "upmoe-eval"), "--catalog", self.db, "--checkpoint",
                            os.path.join(self.tmp, "no-such-run"), "--mixture", "uniperceiver-moe-zeroshot"],
                           capture_output=True, text=True, env=self.env, timeout=120)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn(f"{len(members) - 1} datasets have no shard URL yet: coco-caption-test, coco-retrieval-test, "
                      "flickr30k-caption-test", p.stderr)
        self.assertNotIn("cola", p.stderr)

    def test_novel_video_tasks(self):
        vc = self.json_of("show", "task", "video-caption")
        self.assertEqual(vc["formulation"], "vocab-caption")
        self.assertTrue(vc["causal"])
        self.assertEqual(vc["inputs"], [{"field": "mp4", "modality": "video"}, {"field": "txt", "modality": "text"}])
        self.assertEqual(vc["target_modality"], "text")
        vr = self.json_of("show", "task", "video-text-retrieval")
        self.assertEqual(vr["formulation"], "pair")
        self.assertFalse(vr["causal"])
        self.assertEqual(vr["inputs"], [{"field": "mp4", "modality": "video"}])
        self.assertEqual((vr["target_field"], vr["target_modality"]), ("txt", "text"))
        self.assertEqual(self.json_of("show", "dataset", "msvd-caption")["task"], "video-caption")
        self.assertEqual(self.json_of("show", "dataset", "msvd-retrieval")["task"], "video-text-retrieval")

    def test_glue_tasks_and_answer_words(self):
        datasets = self.json_of("list", "datasets")
        for task, words in GLUE_ANSWERS.items():
            with self.subTest(task=task):
                t = self.json_of("show", "task", task)
                self.assertEqual(t["formulation"], "label")
                self.assertTrue(all(i["modality"] == "text" for i in t["inputs"]), t["inputs"])
                self.assertIsNotNone(t["prompt"])
                self.assertEqual(t["prompt"].count("<|spe|>"), 1, t["prompt"])
                for i in t["inputs"]:
                    self.assertIn("{" + i["field"] + "}", t["prompt"])
                ls = self.json_of("show", "labels", t["label_set"])
                self.assertEqual([l["names"] for l in ls["labels"]], [[w] for w in words])
                self.assertTrue(any(d["task"] == task for d in datasets), f"no dataset of {task}")

    def test_placeholders_listed_and_counted(self):
        n = len(self.json_of("list", "datasets"))
        self.assertEqual(n, 31)
        out = self.ok("list", "datasets").stdout
        rows = self.table(out)
        self.assertEqual(len(rows), n)
        for r in rows:
            self.assertIn("placeholder", r["URL"], r)
        m = re.search(r"(\d+) of the datasets still need", out)
        self.assertIsNotNone(m, out)
        self.assertEqual(int(m.group(1)), n)


class PresetUrlTest(CatalogTestCase):
    def test_setting_a_url_clears_the_placeholder(self):
        self.init()
        self.ok("set", "imagenet-21k", "url=/data/in21k/shard-{000000..000099}.tar")
        out = self.ok("list", "datasets").stdout
        rows = {r["NAME"]: r for r in self.table(out)}
        self.assertEqual(rows["imagenet-21k"]["URL"], "/data/in21k/shard-{000000..000099}.tar")
        self.assertNotIn("placeholder", rows["imagenet-21k"]["URL"])
        self.assertEqual(rows["imagenet-21k"]["SHARDS"], "100")
        self.assertIn("placeholder", rows["books-wiki"]["URL"])
        m = re.search(r"(\d+) of the datasets still need", out)
        self.assertEqual(int(m.group(1)), 30)
        ds = self.json_of("show", "dataset", "imagenet-21k")
        self.assertEqual(ds["url"], "/data/in21k/shard-{000000..000099}.tar")
        self.assertEqual(ds["num_shards"], 100)
        # the mixture view too
        mix = {r["DATASET"]: r for r in self.table(self.ok("mixture", "show", MIXTURE).stdout, first="DATASET")}
        self.assertEqual(mix["imagenet-21k"]["URL"], "set")
        self.assertEqual(mix["books-wiki"]["URL"], "placeholder")

    def test_no_placeholder_line_when_all_are_set(self):
        self.init(preset=False)
        self.ok("add", "task", "m", "--formulation", "vocab-mlm", "--input", "txt=text")
        self.ok("add", "dataset", "d", "--task", "m", "--batch", "4", "--url", "/x/{0..3}.tar")
        out = self.ok("list", "datasets").stdout
        self.assertNotIn("placeholder", out)
        self.assertNotIn("still need", out)
        self.ok("add", "dataset", "e", "--task", "m", "--batch", "4")
        out = self.ok("list", "datasets").stdout
        self.assertRegex(out, r"\b1 of the datasets still needs\b")


if __name__ == "__main__":
    unittest.main()
