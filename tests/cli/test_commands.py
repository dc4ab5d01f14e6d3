"""Every upmoe-catalog command doing its job: add task/dataset/labels, set, remove, list, show, mixture, and the
JSON each prints. Ends with the README-style tour: MSVD and a GLUE task added by hand to an empty catalog."""
import json
import os
import re
import sqlite3
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import old_catalog  # noqa: E402
from catalog_cli import (DATASET_KEYS, LABELSET_KEYS, MEMBER_KEYS, MIXTURE_KEYS, TASK_KEYS, CatalogTestCase)


class Base(CatalogTestCase):
    def setUp(self):
        super().setUp()
        self.init(preset=False)

    def add_labels(self, name, text, *flags):
        path = self.write(f"{name}.labels", text)
        return self.ok("add", "labels", name, path, *flags)

    def basic(self):
        """A small catalog: a label task, an MLM task, three datasets."""
        self.add_labels("animals", "cat\ndog\nbird\n")
        self.ok("add", "task", "animal-cls", "--formulation", "label", "--input", "jpg=image", "--target", "cls",
                "--labels", "animals")
        self.ok("add", "task", "lm", "--formulation", "vocab-mlm", "--input", "txt=text", "--loss-weight", "0.25")
        self.ok("add", "dataset", "pets", "--task", "animal-cls", "--batch", "16")
        self.ok("add", "dataset", "zoo", "--task", "animal-cls", "--batch", "8", "--weight", "0.5")
        self.ok("add", "dataset", "wiki", "--task", "lm", "--batch", "64", "--weight", "2")


class AddTaskTest(Base):
    def test_label_task_and_defaults(self):
        self.add_labels("animals", "cat\ndog\n")
        p = self.ok("add", "task", "animal-cls", "--formulation", "label", "--input", "jpg=image", "--target", "cls",
                    "--labels", "animals")
        self.assertIn("animal-cls", p.stdout)
        t = self.json_of("show", "task", "animal-cls")
        self.assertEqual(list(t), TASK_KEYS)
        self.assertEqual(t, {
            "name": "animal-cls", "formulation": "label", "causal": False,
            "inputs": [{"field": "jpg", "modality": "image"}], "target_field": "cls", "target_modality": "text",
            "label_set": "animals", "prompt": None, "max_text_len": 64, "max_target_len": 32, "loss_weight": 1,
            "notes": ""})

    def test_pair_task(self):
        self.ok("add", "task", "itr", "--formulation", "pair", "--input", "jpg=image", "--target", "txt=text")
        t = self.json_of("show", "task", "itr")
        self.assertEqual((t["formulation"], t["target_field"], t["target_modality"], t["causal"], t["label_set"]),
                         ("pair", "txt", "text", False, None))
        self.ok("add", "task", "t2i", "--formulation", "pair", "--input", "txt=text", "--target", "jpg=image")
        t = self.json_of("show", "task", "t2i")
        self.assertEqual((t["target_field"], t["target_modality"]), ("jpg", "image"))

    def test_vocab_mlm_task(self):
        self.ok("add", "task", "lm", "--formulation", "vocab-mlm", "--input", "txt=text")
        t = self.json_of("show", "task", "lm")
        self.assertEqual((t["formulation"], t["causal"], t["target_field"], t["target_modality"]),
                         ("vocab-mlm", False, "txt", "text"))

    def test_vocab_caption_task_is_causal(self):
        self.ok("add", "task", "cap", "--formulation", "vocab-caption", "--input", "jpg=image", "--input", "txt=text")
        t = self.json_of("show", "task", "cap")
        self.assertTrue(t["causal"])
        self.assertEqual(t["target_field"], "txt")  # the text input whose tokens are predicted
        self.assertEqual(t["inputs"], [{"field": "jpg", "modality": "image"}, {"field": "txt", "modality": "text"}])

    def test_causal_flag(self):
        self.add_labels("yn", "yes\nno\n")
        self.ok("add", "task", "causal-cls", "--formulation", "label", "--input", "txt=text", "--target", "cls",
                "--labels", "yn", "--causal")
        self.assertTrue(self.json_of("show", "task", "causal-cls")["causal"])
        self.ok("add", "task", "bidi-cls", "--formulation", "label", "--input", "txt=text", "--target", "cls",
                "--labels", "yn")
        self.assertFalse(self.json_of("show", "task", "bidi-cls")["causal"])
        self.assertRegex(self.ok("show", "task", "causal-cls").stdout, r"\n\s+causal\s+yes")
        self.assertRegex(self.ok("show", "task", "bidi-cls").stdout, r"\n\s+causal\s+no")

    def test_prompt_with_placeholders(self):
        self.add_labels("nli", "yes\nmaybe\nno\n")
        prompt = "{json:premise} ? <|endoftext|> it is <|spe|> , {json:hypothesis} <|endoftext|>"
        self.ok("add", "task", "nli", "--formulation", "label", "--input", "json:premise=text",
                "--input", "json:hypothesis=text", "--target", "json:label", "--labels", "nli", "--prompt", prompt,
                "--max-text-len", "128", "--max-target-len", "8", "--loss-weight", "0.75", "--notes", "GLUE-like")
        t = self.json_of("show", "task", "nli")
        self.assertEqual(t["prompt"], prompt)
        self.assertEqual((t["max_text_len"], t["max_target_len"], t["loss_weight"], t["notes"]), (128, 8, 0.75, "GLUE-like"))
        self.assertEqual([i["field"] for i in t["inputs"]], ["json:premise", "json:hypothesis"])
        self.assertIn(prompt, self.ok("show", "task", "nli").stdout)

    def test_prompt_must_name_text_inputs(self):
        self.add_labels("yn", "yes\nno\n")
        before = self.snapshot()
        self.fails(2, "add", "task", "bad", "--formulation", "label", "--input", "txt=text", "--target", "cls",
                   "--labels", "yn", "--prompt", "{nope} <|spe|>", contains="{nope}")
        self.fails(2, "add", "task", "bad", "--formulation", "label", "--input", "txt=text", "--target", "cls",
                   "--labels", "yn", "--prompt", "no field <|spe|>", contains="{txt}")
        self.assertEqual(self.snapshot(), before)

    def test_task_appears_in_list(self):
        self.ok("add", "task", "lm", "--formulation", "vocab-mlm", "--input", "txt=text", "--loss-weight", "0.5")
        rows = self.table(self.ok("list", "tasks").stdout)
        self.assertEqual(rows, [{"NAME": "lm", "FORMULATION": "vocab-mlm", "INPUTS": "txt(text)",
                                 "TARGET": "vocabulary (txt)", "CAUSAL": "no", "LOSS-W": "0.5"}])


class AddDatasetTest(Base):
    def setUp(self):
        super().setUp()
        self.add_labels("animals", "cat\ndog\n")
        self.add_labels("birds", "crow\nrobin\n")
        self.ok("add", "task", "animal-cls", "--formulation", "label", "--input", "jpg=image", "--target", "cls",
                "--labels", "animals", "--loss-weight", "0.25")

    def test_all_options(self):
        url = "https://data.example.org/pets/shard-{000..099}.tar"
        self.ok("add", "dataset", "pets", "--task", "animal-cls", "--batch", "32", "--url", url, "--split", "val",
                "--samples", "12345", "--shards", "100", "--weight", "0.125", "--loss-weight", "0.3",
                "--labels", "birds", "--license", "CC BY 4.0", "--notes", "café notes")
        d = self.json_of("show", "dataset", "pets")
        self.assertEqual(list(d), DATASET_KEYS)
        self.assertEqual(d, {"name": "pets", "task": "animal-cls", "split": "val", "url": url, "num_samples": 12345,
                             "num_shards": 100, "sampling_weight": 0.125, "loss_weight": 0.3, "batch_size": 32,
                             "label_set": "birds", "augment": None, "license": "CC BY 4.0", "notes": "café notes"})

    def test_defaults_inherit_the_task(self):
        self.ok("add", "dataset", "pets", "--task", "animal-cls", "--batch", "7")
        d = self.json_of("show", "dataset", "pets")
        self.assertEqual(d, {"name": "pets", "task": "animal-cls", "split": "train", "url": None, "num_samples": None,
                             "num_shards": None, "sampling_weight": 1, "loss_weight": None, "batch_size": 7,
                             "label_set": None, "augment": None, "license": "", "notes": ""})
        out = self.ok("show", "dataset", "pets").stdout
        self.assertRegex(out, r"loss weight\s+0\.25 \(the task's\)")
        self.assertRegex(out, r"label set\s+animals \(the task's\)")
        rows = self.table(self.ok("list", "datasets").stdout)
        self.assertEqual(rows[0]["LOSS-W"], "0.25")

    def test_relative_path_stored_absolute(self):
        here = os.path.realpath(self.tmp)
        self.ok("add", "dataset", "rel", "--task", "animal-cls", "--batch", "1", "--url", "shards/p-{0..3}.tar")
        self.assertEqual(self.json_of("show", "dataset", "rel")["url"], f"{here}/shards/p-{{0..3}}.tar")
        self.ok("add", "dataset", "dot", "--task", "animal-cls", "--batch", "1", "--url", "./s/{a,b}.tar")
        self.assertEqual(self.json_of("show", "dataset", "dot")["url"], f"{here}/s/{{a,b}}.tar")
        # absolute paths and URLs are kept as given
        for name, url in (("abs", "/data/x-{0..1}.tar"), ("fil", "file:///data/y.tar"),
                          ("web", "http://host:8080/z/{0..2}.tar")):
            self.ok("add", "dataset", name, "--task", "animal-cls", "--batch", "1", "--url", url)
            self.assertEqual(self.json_of("show", "dataset", name)["url"], url)

    def test_shard_count_from_pattern(self):
        cases = [("one", "/d/single.tar", 1), ("rng", "/d/shard-{000000..000575}.tar", 576),
                 ("lst", "/d/{train,extra}.tar", 2), ("both", "/d/{a,b,c}/part-{00..09}.tar", 30),
                 ("unpadded", "https://h/p/{1..12}.tar", 12)]
        for name, url, n in cases:
            with self.subTest(url=url):
                self.ok("add", "dataset", name, "--task", "animal-cls", "--batch", "1", "--url", url)
                self.assertEqual(self.json_of("show", "dataset", name)["num_shards"], n)
        out = self.ok("show", "dataset", "both").stdout
        self.assertIn("/d/a/part-00.tar ... /d/c/part-09.tar", out)
        out = self.ok("show", "dataset", "rng").stdout
        self.assertIn("/d/shard-000000.tar ... /d/shard-000575.tar", out)
        rows = {r["NAME"]: r for r in self.table(self.ok("list", "datasets").stdout)}
        self.assertEqual(rows["both"]["SHARDS"], "30")

    def test_matching_shards_accepted_mismatch_refused(self):
        self.ok("add", "dataset", "ok", "--task", "animal-cls", "--batch", "1", "--url", "/d/{0..9}.tar", "--shards", "10")
        self.assertEqual(self.json_of("show", "dataset", "ok")["num_shards"], 10)
        before = self.snapshot()
        p = self.fails(2, "add", "dataset", "bad", "--task", "animal-cls", "--batch", "1", "--url", "/d/{0..9}.tar",
                       "--shards", "11")
        self.assertIn("11", p.stderr)
        self.assertIn("10", p.stderr)
        self.assertEqual(self.snapshot(), before)

    def test_shards_without_url(self):
        self.ok("add", "dataset", "s", "--task", "animal-cls", "--batch", "1", "--shards", "5", "--samples", "0")
        d = self.json_of("show", "dataset", "s")
        self.assertEqual((d["num_shards"], d["num_samples"], d["url"]), (5, 0, None))

    def test_dataset_label_set_needs_a_label_task(self):
        self.ok("add", "task", "lm", "--formulation", "vocab-mlm", "--input", "txt=text")
        before = self.snapshot()
        # well-formed arguments that the catalog's contents refuse (lm is not a label task): exit 1
        self.fails(1, "add", "dataset", "x", "--task", "lm", "--batch", "1", "--labels", "birds", contains="lm")
        self.assertEqual(self.snapshot(), before)


class AddLabelsTest(Base):
    def labels_of(self, name):
        return self.json_of("show", "labels", name)

    def test_plain(self):
        p = self.add_labels("colors", "red\ngreen\r\n  blue  \n")
        self.assertIn("3 labels", p.stdout)
        ls = self.labels_of("colors")
        self.assertEqual(list(ls), LABELSET_KEYS)
        self.assertFalse(ls["synonyms"])
        self.assertEqual(ls["labels"], [{"key": None, "names": ["red"]}, {"key": None, "names": ["green"]},
                                        {"key": None, "names": ["blue"]}])

    def test_plain_keeps_commas(self):
        self.add_labels("c", "salt, pepper\n")
        self.assertEqual(self.labels_of("c")["labels"], [{"key": None, "names": ["salt, pepper"]}])

    def test_synonyms(self):
        self.add_labels("syn", "tabby, tabby cat, cat\ndog,domestic dog\nbird\n", "--synonyms")
        ls = self.labels_of("syn")
        self.assertTrue(ls["synonyms"])
        self.assertEqual([l["names"] for l in ls["labels"]],
                         [["tabby", "tabby cat", "cat"], ["dog", "domestic dog"], ["bird"]])
        self.assertTrue(all(l["key"] is None for l in ls["labels"]))
        out = self.ok("show", "labels", "syn").stdout
        self.assertIn("tabby | tabby cat | cat", out)
        self.assertIn("with synonyms", out)

    def test_keys(self):
        self.add_labels("wn", "n02012849\tcrane\nn03126707\tcrane\nn01440764\ttench\n", "--keys")
        ls = self.labels_of("wn")
        self.assertEqual(ls["labels"], [{"key": "n02012849", "names": ["crane"]},
                                        {"key": "n03126707", "names": ["crane"]},
                                        {"key": "n01440764", "names": ["tench"]}])
        rows = self.table(self.ok("show", "labels", "wn").stdout, first="INDEX")
        self.assertEqual([(r["INDEX"], r["KEY"], r["NAMES"]) for r in rows],
                         [("0", "n02012849", "crane"), ("1", "n03126707", "crane"), ("2", "n01440764", "tench")])

    def test_keys_with_synonyms(self):
        self.add_labels("wn", "n1\tcrane, grus\nn2\tcrane, derrick\n", "--keys", "--synonyms")
        self.assertEqual(self.labels_of("wn")["labels"], [{"key": "n1", "names": ["crane", "grus"]},
                                                          {"key": "n2", "names": ["crane", "derrick"]}])

    def test_replace(self):
        self.add_labels("l", "a\nb\n")
        self.ok("add", "task", "t", "--formulation", "label", "--input", "jpg=image", "--target", "cls", "--labels", "l")
        before = self.snapshot()
        path = self.write("new.txt", "x\ny\nz\n")
        self.fails(1, "add", "labels", "l", path, contains="'l'")
        self.assertEqual(self.snapshot(), before)
        p = self.ok("add", "labels", "l", path, "--replace")
        self.assertIn("3 labels", p.stdout)
        self.assertEqual([l["names"] for l in self.labels_of("l")["labels"]], [["x"], ["y"], ["z"]])
        self.assertEqual(self.json_of("show", "task", "t")["label_set"], "l")  # still used by the task
        # --replace can switch the flavour too
        self.ok("add", "labels", "l", self.write("syn.txt", "p, q\n"), "--replace", "--synonyms")
        ls = self.labels_of("l")
        self.assertTrue(ls["synonyms"])
        self.assertEqual(ls["labels"], [{"key": None, "names": ["p", "q"]}])

    def test_replace_fills_a_preset_set(self):
        os.remove(self.db)
        self.init()
        self.ok("add", "labels", "imagenet-21k", self.write("in21k.txt", "n00004475\torganism, being\n"),
                "--replace", "--synonyms", "--keys")
        ls = self.labels_of("imagenet-21k")
        self.assertEqual(ls["labels"], [{"key": "n00004475", "names": ["organism", "being"]}])
        rows = {r["NAME"]: r for r in self.table(self.ok("list", "labels").stdout)}
        self.assertEqual(rows["imagenet-21k"]["LABELS"], "1")
        self.assertEqual(rows["kinetics-700"]["LABELS"], "0 (empty)")

    def test_utf8_round_trip(self):
        words = ["café", "naïve", "日本語", "Ünïcødé ✓", "crème brûlée"]
        self.add_labels("intl", "\n".join(words) + "\n", "--notes", "accents: é")
        ls = self.labels_of("intl")
        self.assertEqual([l["names"][0] for l in ls["labels"]], words)
        self.assertEqual(ls["notes"], "accents: é")
        out = self.ok("show", "labels", "intl").stdout
        for w in words:
            self.assertIn(w, out)
        rows = self.table(out, first="INDEX")
        self.assertEqual([r["NAMES"] for r in rows], words)
        # non-ASCII keys keep the table aligned
        self.add_labels("keyed", "clé\tcafé\nn2\tdeux\n", "--keys")
        rows = self.table(self.ok("show", "labels", "keyed").stdout, first="INDEX")
        self.assertEqual([(r["KEY"], r["NAMES"]) for r in rows], [("clé", "café"), ("n2", "deux")])
        # a UTF-8 byte order mark is not part of the first label
        self.ok("add", "labels", "bom", self.write("bom.txt", "\ufeffcafé\nthé\n"))
        self.assertEqual([l["names"] for l in self.labels_of("bom")["labels"]], [["café"], ["thé"]])

    def test_list_labels(self):
        self.add_labels("a-set", "x\ny\n")
        self.add_labels("b-set", "p, q\n", "--synonyms")
        out = self.ok("list", "labels").stdout
        rows = self.table(out)
        self.assertEqual([(r["NAME"], r["LABELS"], r["SYNONYMS"]) for r in rows], [("a-set", "2", "no"), ("b-set", "1", "yes")])
        js = self.json_of("list", "labels")
        self.assertEqual(js, [{"name": "a-set", "synonyms": False, "count": 2, "notes": ""},
                              {"name": "b-set", "synonyms": True, "count": 1, "notes": ""}])


class SetTest(Base):
    def setUp(self):
        super().setUp()
        self.basic()
        self.add_labels("birds", "crow\n")

    def ds(self, name="pets"):
        return self.json_of("show", "dataset", name)

    def test_each_key(self):
        cases = [
            ("url=/data/p/{0..4}.tar", {"url": "/data/p/{0..4}.tar", "num_shards": 5}),
            ("split=test", {"split": "test"}),
            ("augment=light", {"augment": "light"}),
            ("augment=inherit", {"augment": None}),
            ("samples=999", {"num_samples": 999}),
            ("weight=0.75", {"sampling_weight": 0.75}),
            ("loss_weight=0.2", {"loss_weight": 0.2}),
            ("batch=48", {"batch_size": 48}),
            ("labels=birds", {"label_set": "birds"}),
            ("license=MIT", {"license": "MIT"}),
            ("notes=hello world", {"notes": "hello world"}),
            ("shards=5", {"num_shards": 5}),
        ]
        for pair, changes in cases:
            with self.subTest(pair=pair):
                before = self.ds()
                p = self.ok("set", "pets", pair)
                self.assertIn("pets", p.stdout)
                after = self.ds()
                expected = dict(before, **changes)
                self.assertEqual(after, expected)

    def test_task_key(self):
        self.ok("add", "task", "animal-cls2", "--formulation", "label", "--input", "jpg=image", "--target", "cls",
                "--labels", "birds")
        self.ok("set", "pets", "task=animal-cls2")
        self.assertEqual(self.ds()["task"], "animal-cls2")
        self.assertIn("pets", self.ok("show", "task", "animal-cls2").stdout)

    def test_inherit(self):
        self.ok("set", "wiki", "loss_weight=0.9")
        self.assertEqual(self.ds("wiki")["loss_weight"], 0.9)
        self.ok("set", "wiki", "loss_weight=inherit")
        self.assertIsNone(self.ds("wiki")["loss_weight"])
        rows = {r["NAME"]: r for r in self.table(self.ok("list", "datasets").stdout)}
        self.assertEqual(rows["wiki"]["LOSS-W"], "0.25")  # the task's
        self.ok("set", "pets", "labels=birds")
        self.assertEqual(self.ds()["label_set"], "birds")
        self.ok("set", "pets", "labels=inherit")
        self.assertIsNone(self.ds()["label_set"])

    def test_several_keys_at_once(self):
        self.ok("set", "pets", "weight=0.3", "batch=12", "notes=n")
        d = self.ds()
        self.assertEqual((d["sampling_weight"], d["batch_size"], d["notes"]), (0.3, 12, "n"))

    def test_all_or_nothing(self):
        before = self.snapshot()
        self.fails(2, "set", "pets", "weight=0.3", "batch=zero", contains="zero")
        self.fails(1, "set", "pets", "weight=0.3", "task=nope", contains="nope")
        self.assertEqual(self.snapshot(), before)

    def test_url_change_recomputes_shards(self):
        self.ok("set", "pets", "url=/d/{0..9}.tar")
        self.assertEqual(self.ds()["num_shards"], 10)
        self.ok("set", "pets", "url=/d/{0..4}.tar")
        self.assertEqual(self.ds()["num_shards"], 5)
        self.ok("set", "pets", "url=/d/one.tar")
        self.assertEqual(self.ds()["num_shards"], 1)
        self.ok("set", "pets", "url=/d/{a,b,c}.tar", "shards=3")
        self.assertEqual(self.ds()["num_shards"], 3)
        before = self.snapshot()
        self.fails(2, "set", "pets", "url=/d/{0..7}.tar", "shards=3", contains="3")
        self.assertEqual(self.snapshot(), before)
        # a changed count alone must match the pattern too
        self.fails(2, "set", "pets", "shards=4", contains="4")
        self.assertEqual(self.snapshot(), before)

    def test_empty_url_makes_a_placeholder_again(self):
        self.ok("set", "pets", "url=/d/{0..9}.tar")
        self.ok("set", "pets", "url=")
        d = self.ds()
        self.assertEqual((d["url"], d["num_shards"]), (None, None))
        rows = {r["NAME"]: r for r in self.table(self.ok("list", "datasets").stdout)}
        self.assertIn("placeholder", rows["pets"]["URL"])

    def test_url_value_may_contain_equals(self):
        self.ok("set", "pets", "url=https://h/p/{0..1}.tar?sig=abc")
        self.assertEqual((self.ds()["url"], self.ds()["num_shards"]), ("https://h/p/{0..1}.tar?sig=abc", 2))

    def test_relative_url_made_absolute(self):
        self.ok("set", "pets", "url=rel/{0..1}.tar")
        self.assertEqual(self.ds()["url"], os.path.realpath(self.tmp) + "/rel/{0..1}.tar")

    def test_set_carries_into_mixture(self):
        self.ok("mixture", "create", "mix")
        self.ok("mixture", "add", "mix", "pets", "wiki")
        self.ok("set", "pets", "weight=3")
        rows = {r["DATASET"]: r for r in self.table(self.ok("mixture", "show", "mix").stdout, first="DATASET")}
        self.assertEqual(rows["pets"]["WEIGHT"], "3")
        self.assertEqual(rows["pets"]["PROB"], "60.00%")
        self.assertEqual(rows["wiki"]["PROB"], "40.00%")


class AugmentTest(Base):
    """The per-dataset training augmentation (schema version 6): '' in the catalog, null in JSON and
    'inherit (the run's --augment)' in `show` mean the run's choice."""

    def setUp(self):
        super().setUp()
        self.basic()

    def augment(self, name):
        return self.sql("SELECT augment FROM datasets WHERE name = ?", name)[0][0]

    def test_add_set_show_round_trip(self):
        self.assertEqual(self.augment("pets"), "")
        self.assertIsNone(self.json_of("show", "dataset", "pets")["augment"])
        self.assertRegex(self.ok("show", "dataset", "pets").stdout, r"augment\s+inherit \(the run's --augment\)")
        for mode in ("paper", "light", "none"):
            with self.subTest(mode=mode):
                self.ok("add", "dataset", f"pets-{mode}", "--task", "animal-cls", "--batch", "4", "--augment", mode)
                self.assertEqual(self.augment(f"pets-{mode}"), mode)
                self.assertEqual(self.json_of("show", "dataset", f"pets-{mode}")["augment"], mode)
                self.assertRegex(self.ok("show", "dataset", f"pets-{mode}").stdout, rf"\n  augment\s+{mode}\n")
                self.ok("set", "pets", f"augment={mode}")
                self.assertEqual(self.augment("pets"), mode)
                self.assertEqual(self.json_of("show", "dataset", "pets")["augment"], mode)
        self.ok("add", "dataset", "pets-inherit", "--task", "animal-cls", "--batch", "4", "--augment", "inherit")
        self.assertEqual(self.augment("pets-inherit"), "")
        self.ok("set", "pets", "augment=inherit", "notes=back to the run's")
        self.assertEqual(self.augment("pets"), "")
        self.assertIsNone(self.json_of("show", "dataset", "pets")["augment"])
        listed = {d["name"]: d["augment"] for d in self.json_of("list", "datasets")}
        self.assertEqual(listed["pets-light"], "light")
        self.assertIsNone(listed["zoo"])

    def test_other_changes_keep_it(self):
        self.ok("set", "zoo", "augment=none")
        self.ok("set", "zoo", "weight=0.25", "batch=12", "split=val")
        self.assertEqual(self.augment("zoo"), "none")

    def test_bad_values_change_nothing(self):
        self.ok("set", "zoo", "augment=light")
        before = self.snapshot()
        for args in (["set", "zoo", "augment=heavy"], ["set", "zoo", "augment="], ["set", "zoo", "augment=PAPER"],
                     ["set", "zoo", "batch=3", "augment=strong"],
                     ["add", "dataset", "new", "--task", "lm", "--batch", "1", "--augment", "heavy"]):
            with self.subTest(args=args):
                self.fails(2, *args, contains="paper, light, none or inherit")
                self.assertEqual(self.snapshot(), before)

    def test_export_import_round_trip(self):
        self.ok("set", "pets", "augment=paper")
        self.ok("set", "zoo", "augment=light")
        self.ok("set", "wiki", "augment=none")
        self.ok("add", "dataset", "pets2", "--task", "animal-cls", "--batch", "4")
        first = self.ok("export").stdout
        doc = json.loads(first)
        self.assertEqual(doc["schema_version"], 11)
        self.assertEqual({d["name"]: d["augment"] for d in doc["datasets"]},
                         {"pets": "paper", "zoo": "light", "wiki": "none", "pets2": None})
        other = os.path.join(self.tmp, "other.db")
        self.run_cli("--catalog", other, "init", catalog=False, check=0)
        self.run_cli("--catalog", other, "import", self.write("e.json", first), catalog=False, check=0)
        self.assertEqual(self.run_cli("--catalog", other, "export", catalog=False, check=0).stdout, first)
        self.assertEqual(self.sql("SELECT name, augment FROM datasets ORDER BY name", path=other),
                         [("pets", "paper"), ("pets2", ""), ("wiki", "none"), ("zoo", "light")])

    def test_import_without_the_key_or_with_empty_string_inherits(self):
        doc = json.loads(self.ok("export").stdout)
        doc["schema_version"] = 5  # an export written before the key existed
        del doc["datasets"][0]["augment"]
        doc["datasets"][1]["augment"] = ""
        doc["datasets"][2]["augment"] = "light"
        other = os.path.join(self.tmp, "other.db")
        self.run_cli("--catalog", other, "init", catalog=False, check=0)
        self.run_cli("--catalog", other, "import", self.write("e.json", json.dumps(doc)), catalog=False, check=0)
        self.assertEqual([r[0] for r in self.sql("SELECT augment FROM datasets ORDER BY name", path=other)],
                         ["", "", "light"])

    def test_migration_of_older_catalogs(self):
        """A catalog of schema version 5 (and 4) gets datasets.augment = '' on its first write open."""
        self.ok("set", "pets", "augment=light")
        for old in (5, 4):
            with self.subTest(version=old):
                path = os.path.join(self.tmp, f"v{old}.db")
                old_catalog.make(self.db, path, old)
                self.assertNotIn("augment", [r[1] for r in self.sql("PRAGMA table_info(datasets)", path=path)])
                # a reader cannot migrate: it asks for one write open
                self.run_cli("--catalog", path, "show", "dataset", "pets", catalog=False, check=1)
                self.run_cli("--catalog", path, "set", "zoo", "augment=none", catalog=False, check=0)
                self.assertEqual(self.sql("PRAGMA user_version", path=path)[0][0], 11)  # the newest
                self.assertEqual(self.sql("SELECT name, augment FROM datasets ORDER BY name", path=path),
                                 [("pets", ""), ("wiki", ""), ("zoo", "none")])
                if old <= 4:
                    self.assertIn("backend_opts", [r[1] for r in self.sql("PRAGMA table_info(jobs)", path=path)])
                self.assertEqual(self.sql("SELECT count(*) FROM eval_results", path=path), [(0,)])
                out = self.run_cli("--catalog", path, "show", "dataset", "pets", catalog=False, check=0).stdout
                self.assertRegex(out, r"augment\s+inherit \(the run's --augment\)")
                self.assertEqual(self.sql("PRAGMA foreign_key_check", path=path), [])
                self.assertEqual(self.sql("PRAGMA integrity_check", path=path), [("ok",)])


class RemoveTest(Base):
    def setUp(self):
        super().setUp()
        self.basic()
        self.add_labels("zoo-labels", "lion\ntiger\n")
        self.ok("set", "zoo", "labels=zoo-labels")
        self.ok("mixture", "create", "mix")
        self.ok("mixture", "add", "mix", "pets", "zoo", "wiki")
        self.ok("mixture", "create", "mix2")
        self.ok("mixture", "add", "mix2", "zoo")

    def names(self, kind):
        return sorted(x["name"] for x in self.json_of("list", kind))

    def members(self, mixture):
        return sorted(m["dataset"] for m in self.json_of("mixture", "show", mixture)["datasets"])

    def test_refused_with_dependents_listed(self):
        before = self.snapshot()
        cases = [
            (("task", "animal-cls"), ["dataset pets", "dataset zoo"]),
            (("dataset", "zoo"), ["mixture mix", "mixture mix2"]),
            (("labels", "animals"), ["task animal-cls"]),
            (("labels", "zoo-labels"), ["dataset zoo"]),
        ]
        for (kind, name), deps in cases:
            with self.subTest(kind=kind, name=name):
                p = self.fails(1, "remove", kind, name, contains=name)
                for d in deps:
                    self.assertIn(d, p.stderr)
                self.assertIn("--cascade", p.stderr)
                self.assertEqual(p.stdout, "")
                self.assertEqual(self.snapshot(), before)

    def test_remove_without_dependents(self):
        self.ok("add", "dataset", "lonely", "--task", "lm", "--batch", "1")
        p = self.ok("remove", "dataset", "lonely")
        self.assertIn("lonely", p.stdout)
        self.assertNotIn("lonely", self.names("datasets"))
        self.add_labels("unused", "x\n")
        self.ok("remove", "labels", "unused")
        self.assertNotIn("unused", self.names("labels"))

    def test_remove_mixture_keeps_datasets(self):
        self.ok("remove", "mixture", "mix")
        self.assertEqual(self.names("mixtures"), ["mix2"])
        self.assertEqual(self.names("datasets"), ["pets", "wiki", "zoo"])
        self.assertEqual(self.sql("SELECT count(*) FROM mixture_datasets")[0][0], 1)

    def test_cascade_task(self):
        p = self.ok("remove", "task", "animal-cls", "--cascade")
        self.assertIn("animal-cls", p.stdout)
        self.assertEqual(self.names("tasks"), ["lm"])
        self.assertEqual(self.names("datasets"), ["wiki"])
        self.assertEqual(self.members("mix"), ["wiki"])
        self.assertEqual(self.members("mix2"), [])
        self.assertEqual(self.names("mixtures"), ["mix", "mix2"])  # mixtures stay
        self.assertEqual(self.names("labels"), ["animals", "zoo-labels"])  # label sets stay
        self.assertEqual(self.sql("PRAGMA foreign_key_check"), [])

    def test_cascade_dataset(self):
        self.ok("remove", "dataset", "zoo", "--cascade")
        self.assertEqual(self.names("datasets"), ["pets", "wiki"])
        self.assertEqual(self.members("mix"), ["pets", "wiki"])
        self.assertEqual(self.members("mix2"), [])

    def test_cascade_labels_of_a_task(self):
        self.ok("remove", "labels", "animals", "--cascade")
        self.assertEqual(self.names("labels"), ["zoo-labels"])
        self.assertEqual(self.names("tasks"), ["lm"])
        self.assertEqual(self.names("datasets"), ["wiki"])
        self.assertEqual(self.members("mix"), ["wiki"])
        self.assertEqual(self.sql("PRAGMA foreign_key_check"), [])

    def test_cascade_labels_of_a_dataset(self):
        self.ok("remove", "labels", "zoo-labels", "--cascade")
        self.assertEqual(self.names("labels"), ["animals"])
        self.assertEqual(self.names("tasks"), ["animal-cls", "lm"])
        self.assertEqual(self.names("datasets"), ["pets", "wiki"])
        self.assertEqual(self.members("mix"), ["pets", "wiki"])

    def test_unknown(self):
        before = self.snapshot()
        for kind in ("task", "dataset", "labels", "mixture"):
            with self.subTest(kind=kind):
                self.fails(1, "remove", kind, "ghost", contains="ghost")
        self.assertEqual(self.snapshot(), before)


class ListShowTest(Base):
    def setUp(self):
        super().setUp()
        os.remove(self.db)
        self.init()  # the preset gives long, varied rows

    def test_tables_are_aligned_and_match_json(self):
        for kind, key in (("tasks", "NAME"), ("datasets", "NAME"), ("labels", "NAME"), ("mixtures", "NAME")):
            with self.subTest(kind=kind):
                rows = self.table(self.ok("list", kind).stdout)
                js = self.json_of("list", kind)
                self.assertIsInstance(js, list)
                self.assertEqual([r[key] for r in rows], [x["name"] for x in js])
                self.assertEqual([x["name"] for x in js], sorted(x["name"] for x in js))

    def test_dataset_table_cells(self):
        rows = {r["NAME"]: r for r in self.table(self.ok("list", "datasets").stdout)}
        for d in self.json_of("list", "datasets"):
            r = rows[d["name"]]
            self.assertEqual(r["TASK"], d["task"])
            self.assertEqual(r["SPLIT"], d["split"])
            self.assertEqual(int(r["BATCH"]), d["batch_size"])
            self.assertEqual(float(r["WEIGHT"]), d["sampling_weight"])

    def test_json_keys(self):
        for t in self.json_of("list", "tasks"):
            self.assertEqual(list(t), TASK_KEYS)
            for i in t["inputs"]:
                self.assertEqual(list(i), ["field", "modality"])
        for d in self.json_of("list", "datasets"):
            self.assertEqual(list(d), DATASET_KEYS)
        for l in self.json_of("list", "labels"):
            self.assertEqual(list(l), ["name", "synonyms", "count", "notes"])
        for m in self.json_of("list", "mixtures"):
            self.assertEqual(list(m), ["name", "datasets", "notes"])
        self.assertEqual(list(self.json_of("show", "task", "mlm")), TASK_KEYS)
        self.assertEqual(list(self.json_of("show", "dataset", "books-wiki")), DATASET_KEYS)
        self.assertEqual(list(self.json_of("show", "labels", "sst2-answers")), LABELSET_KEYS)
        mix = self.json_of("show", "mixture", "uniperceiver-moe-pretrain")
        self.assertEqual(list(mix), MIXTURE_KEYS)
        for m in mix["datasets"]:
            self.assertEqual(list(m), MEMBER_KEYS)

    def test_json_goes_anywhere_on_the_line(self):
        a = self.run_cli("--json", "list", "tasks", check=0).stdout
        b = self.run_cli("list", "--json", "tasks", check=0).stdout
        self.assertEqual(json.loads(a), json.loads(b))

    def test_show_by_name_and_by_kind(self):
        for kind, name, first in (("task", "mlm", "task mlm"), ("dataset", "books-wiki", "dataset books-wiki"),
                                  ("labels", "sst2-answers", "label set sst2-answers"),
                                  ("mixture", "uniperceiver-moe-pretrain", "mixture uniperceiver-moe-pretrain")):
            with self.subTest(name=name):
                a = self.ok("show", name).stdout
                b = self.ok("show", kind, name).stdout
                self.assertEqual(a, b)
                self.assertTrue(a.startswith(first), a)
                self.assertEqual(self.json_of("show", name), self.json_of("show", kind, name))

    def test_show_dataset_human(self):
        out = self.ok("show", "dataset", "imagenet-21k").stdout
        self.assertRegex(out, r"task\s+image-classification")
        self.assertRegex(out, r"batch size\s+220 per GPU")
        self.assertRegex(out, r"sampling weight\s+0\.2486")
        self.assertRegex(out, r"mixtures\s+uniperceiver-moe-pretrain")
        self.assertIn("placeholder", out)

    def test_ambiguous_name(self):
        before = self.snapshot()
        # the name is well-formed; what makes it ambiguous is the catalog's contents: a runtime error (exit 1)
        p = self.fails(1, "show", "imagenet-21k", contains="imagenet-21k")
        self.assertIn("dataset", p.stderr)
        self.assertIn("label set", p.stderr)
        self.assertEqual(self.snapshot(), before)
        # naming the kind resolves it
        self.assertEqual(self.json_of("show", "dataset", "imagenet-21k")["name"], "imagenet-21k")
        self.assertEqual(self.json_of("show", "labels", "imagenet-21k")["name"], "imagenet-21k")

    def test_ambiguous_task_and_mixture(self):
        self.ok("mixture", "create", "mlm")
        p = self.fails(1, "show", "mlm", contains="mlm")
        self.assertIn("task", p.stderr)
        self.assertIn("mixture", p.stderr)

    def test_show_wrong_kind_or_unknown(self):
        self.fails(1, "show", "task", "books-wiki", contains="books-wiki")
        self.fails(1, "show", "nothing-here", contains="nothing-here")


class MixtureTest(Base):
    def setUp(self):
        super().setUp()
        self.basic()

    def test_create_add_show_remove(self):
        p = self.ok("mixture", "create", "mix", "--notes", "my mixture")
        self.assertIn("mix", p.stdout)
        self.ok("mixture", "add", "mix", "pets", "zoo")  # inherit: 1 and 0.5
        self.ok("mixture", "add", "mix", "wiki", "--weight", "1.5", "--loss-weight", "0.1")
        js = self.json_of("mixture", "show", "mix")
        self.assertEqual(js, {"name": "mix", "notes": "my mixture", "datasets": [
            {"dataset": "pets", "sampling_weight": None, "loss_weight": None},
            {"dataset": "wiki", "sampling_weight": 1.5, "loss_weight": 0.1},
            {"dataset": "zoo", "sampling_weight": None, "loss_weight": None}]})
        out = self.ok("mixture", "show", "mix").stdout
        self.assertIn("my mixture", out)
        rows = {r["DATASET"]: r for r in self.table(out, first="DATASET")}
        self.assertEqual(set(rows), {"pets", "zoo", "wiki"})
        self.assertEqual(rows["wiki"]["WEIGHT"], "1.5*")
        self.assertEqual(rows["wiki"]["LOSS-W"], "0.1*")
        self.assertEqual(rows["pets"]["WEIGHT"], "1")
        self.assertEqual(rows["pets"]["LOSS-W"], "1")
        self.assertEqual(rows["zoo"]["WEIGHT"], "0.5")
        self.assertEqual(rows["wiki"]["TASK"], "lm")
        self.assertEqual(rows["wiki"]["BATCH"], "64")
        probs = {k: float(r["PROB"].rstrip("%")) for k, r in rows.items()}
        self.assertAlmostEqual(sum(probs.values()), 100.0, delta=0.02)
        self.assertAlmostEqual(probs["pets"], 100 / 3, delta=0.006)
        self.assertAlmostEqual(probs["zoo"], 50 / 3, delta=0.006)
        self.assertAlmostEqual(probs["wiki"], 50.0, delta=0.006)
        self.assertIn("total weight 3", out)
        # show MIXTURE (no kind) is the same view
        self.assertEqual(self.ok("show", "mix").stdout, out)
        # list mixtures counts members
        self.assertEqual(self.json_of("list", "mixtures"), [{"name": "mix", "datasets": 3, "notes": "my mixture"}])
        p = self.ok("mixture", "remove", "mix", "zoo")
        self.assertIn("removed 1 dataset from mixture mix", p.stdout)
        self.assertEqual([m["dataset"] for m in self.json_of("mixture", "show", "mix")["datasets"]], ["pets", "wiki"])
        rows = self.table(self.ok("mixture", "show", "mix").stdout, first="DATASET")
        self.assertAlmostEqual(sum(float(r["PROB"].rstrip("%")) for r in rows), 100.0, delta=0.02)

    def test_many_members_prob_sums_to_100(self):
        os.remove(self.db)
        self.init()
        rows = self.table(self.ok("mixture", "show", "uniperceiver-moe-pretrain").stdout, first="DATASET")
        self.assertEqual(len(rows), 16)
        self.assertAlmostEqual(sum(float(r["PROB"].rstrip("%")) for r in rows), 100.0, delta=0.1)

    def test_refusals_change_nothing(self):
        self.ok("mixture", "create", "mix")
        self.ok("mixture", "add", "mix", "pets")
        before = self.snapshot()
        self.fails(1, "mixture", "create", "mix", contains="mix")
        self.fails(1, "mixture", "add", "mix", "pets", contains="pets")
        self.fails(1, "mixture", "add", "mix", "zoo", "ghost", contains="ghost")  # all or nothing
        self.fails(1, "mixture", "remove", "mix", "wiki", contains="wiki")
        self.fails(1, "mixture", "add", "nomix", "pets", contains="nomix")
        self.assertEqual(self.snapshot(), before)

    def test_empty_mixture(self):
        self.ok("mixture", "create", "empty")
        self.assertEqual(self.json_of("mixture", "show", "empty")["datasets"], [])
        self.ok("mixture", "show", "empty")


class TourTest(CatalogTestCase):
    """The README tour: novel tasks added to an empty catalog with nothing but CLI commands."""

    def test_msvd_and_glue_by_hand(self):
        self.init(preset=False)
        # MSVD: video caption and video-text retrieval
        self.ok("add", "task", "video-caption", "--formulation", "vocab-caption", "--input", "mp4=video",
                "--input", "txt=text", "--max-text-len", "32")
        self.ok("add", "task", "video-text-retrieval", "--formulation", "pair", "--input", "mp4=video",
                "--target", "txt=text")
        self.ok("add", "dataset", "msvd-caption", "--task", "video-caption", "--batch", "8", "--split", "test",
                "--url", "https://example.org/msvd/caption-{000..009}.tar", "--samples", "670")
        self.ok("add", "dataset", "msvd-retrieval", "--task", "video-text-retrieval", "--batch", "8",
                "--split", "test", "--url", "/data/msvd/retrieval-{000..009}.tar")
        # GLUE SST-2: answer words, a prompt, a dataset
        answers = self.write("sst2-answers.txt", "bad\nwonderful\n")
        self.ok("add", "labels", "sst2-answers", answers, "--notes", "SST-2: negative, positive")
        prompt = "{json:sentence} <|endoftext|> It is <|spe|>. <|endoftext|>"
        self.ok("add", "task", "glue-sst2", "--formulation", "label", "--input", "json:sentence=text",
                "--target", "json:label", "--labels", "sst2-answers", "--prompt", prompt,
                "--max-text-len", "128", "--max-target-len", "8")
        self.ok("add", "dataset", "sst2", "--task", "glue-sst2", "--batch", "32", "--split", "val",
                "--url", "/data/glue/sst2-dev.tar")
        self.ok("mixture", "create", "novel", "--notes", "section 4.5")
        self.ok("mixture", "add", "novel", "msvd-caption", "msvd-retrieval", "sst2")

        # attributes follow from the declarations
        att = {k["tokens"]: k["attributes"] for k in self.json_of("attributes", "video-caption")["tokens"]
               if k["side"] == "input"}
        self.assertEqual(att, {"<|spe|>": [1, 1, 0, 1, 1, 0, 0, 1], "mp4 frame patches": [1, 1, 0, 1, 1, 0, 0, 1],
                               "txt tokens": [1, 1, 0, 1, 0, 1, 1, 1]})
        toks = self.json_of("attributes", "video-text-retrieval")["tokens"]
        self.assertEqual([k["attributes"] for k in toks],
                         [[1, 0, 0, 1, 1, 0, 0, 1], [1, 0, 0, 1, 1, 0, 0, 1], [1, 0, 0, 1, 0, 1, 0, 0],
                          [1, 0, 0, 1, 0, 1, 0, 0]])
        toks = self.json_of("attributes", "glue-sst2")["tokens"]
        self.assertEqual([(k["side"], k["attributes"]) for k in toks],
                         [("input", [0, 1, 0, 1, 0, 1, 0, 1]), ("input", [0, 1, 0, 1, 0, 1, 0, 1]),
                          ("target", [0, 1, 0, 1, 0, 1, 0, 0]), ("target", [0, 1, 0, 1, 0, 1, 0, 0])])

        # show
        out = self.ok("show", "glue-sst2").stdout
        self.assertIn(prompt, out)
        self.assertIn("sst2-answers", out)
        self.assertRegex(out, r"datasets\s+sst2")
        out = self.ok("show", "msvd-caption").stdout
        self.assertRegex(out, r"shard count\s+10")
        self.assertIn("https://example.org/msvd/caption-000.tar ... https://example.org/msvd/caption-009.tar", out)
        self.assertRegex(out, r"mixtures\s+novel")
        self.assertEqual([l["names"] for l in self.json_of("show", "labels", "sst2-answers")["labels"]],
                         [["bad"], ["wonderful"]])
        rows = self.table(self.ok("mixture", "show", "novel").stdout, first="DATASET")
        self.assertEqual([r["DATASET"] for r in rows], ["msvd-caption", "msvd-retrieval", "sst2"])
        self.assertTrue(all(r["URL"] == "set" for r in rows))
        self.assertAlmostEqual(sum(float(r["PROB"].rstrip("%")) for r in rows), 100.0, delta=0.02)

        # the hand-made tasks equal the preset's (notes aside)
        mine = {t["name"]: t for t in self.json_of("list", "tasks")}
        other = os.path.join(self.tmp, "preset.db")
        self.run_cli("--catalog", other, "init", "--preset", "uniperceiver-moe", catalog=False, check=0)
        for name in ("video-caption", "video-text-retrieval", "glue-sst2"):
            theirs = json.loads(self.run_cli("--catalog", other, "show", "task", name, "--json", catalog=False,
                                             check=0).stdout)
            with self.subTest(task=name):
                self.assertEqual(dict(mine[name], notes=""), dict(theirs, notes=""))

if __name__ == "__main__":
    unittest.main()
