"""upmoe-catalog attributes: the 8-bit token attributes of paper Table 2, for every task of the preset and for
tasks added by hand. The expected vectors are derived by hand from Table 2 and written out literally:
  0 visual modality in the task's inputs      4 the token is visual
  1 text modality in the task's inputs        5 the token is text
  2 visual modality in the task's targets     6 the token's attention mask is causal
  3 text modality in the task's targets       7 the token comes from the inputs, not the targets
The <|spe|> token that starts a sequence takes the attributes of its sequence's first field."""
import unittest

from catalog_cli import CatalogTestCase

# Image (or video) in, label texts out: the paper's own example for the inputs, [1, 0, 0, 1, 1, 0, 0, 1].
VISUAL_IN_LABEL_OUT = [1, 0, 0, 1, 1, 0, 0, 1]
LABEL_TEXT_TARGET = [1, 0, 0, 1, 0, 1, 0, 0]

# task -> [(side, tokens, modality, attributes)], in the order the program lists them.
EXPECTED = {
    "image-classification": [
        ("input", "<|spe|>", "image", [1, 0, 0, 1, 1, 0, 0, 1]),
        ("input", "jpg patches", "image", [1, 0, 0, 1, 1, 0, 0, 1]),
        ("target", "<|spe|>", "text", [1, 0, 0, 1, 0, 1, 0, 0]),
        ("target", "label texts (imagenet-21k)", "text", [1, 0, 0, 1, 0, 1, 0, 0]),
    ],
    "video-classification": [
        ("input", "<|spe|>", "video", [1, 0, 0, 1, 1, 0, 0, 1]),
        ("input", "mp4 frame patches", "video", [1, 0, 0, 1, 1, 0, 0, 1]),
        ("target", "<|spe|>", "text", [1, 0, 0, 1, 0, 1, 0, 0]),
        ("target", "label texts (kinetics-700)", "text", [1, 0, 0, 1, 0, 1, 0, 0]),
    ],
    "mlm": [
        ("input", "<|spe|>", "text", [0, 1, 0, 1, 0, 1, 0, 1]),
        ("input", "txt tokens", "text", [0, 1, 0, 1, 0, 1, 0, 1]),
        ("target", "<|spe|>", "text", [0, 1, 0, 1, 0, 1, 0, 0]),
        ("target", "vocabulary words", "text", [0, 1, 0, 1, 0, 1, 0, 0]),
    ],
    "image-caption": [
        ("input", "<|spe|>", "image", [1, 1, 0, 1, 1, 0, 0, 1]),
        ("input", "jpg patches", "image", [1, 1, 0, 1, 1, 0, 0, 1]),
        ("input", "txt tokens", "text", [1, 1, 0, 1, 0, 1, 1, 1]),
        ("target", "<|spe|>", "text", [1, 1, 0, 1, 0, 1, 0, 0]),
        ("target", "vocabulary words", "text", [1, 1, 0, 1, 0, 1, 0, 0]),
    ],
    "image-text-retrieval": [
        ("input", "<|spe|>", "image", [1, 0, 0, 1, 1, 0, 0, 1]),
        ("input", "jpg patches", "image", [1, 0, 0, 1, 1, 0, 0, 1]),
        ("target", "<|spe|>", "text", [1, 0, 0, 1, 0, 1, 0, 0]),
        ("target", "txt tokens", "text", [1, 0, 0, 1, 0, 1, 0, 0]),
    ],
    "video-caption": [
        ("input", "<|spe|>", "video", [1, 1, 0, 1, 1, 0, 0, 1]),
        ("input", "mp4 frame patches", "video", [1, 1, 0, 1, 1, 0, 0, 1]),
        ("input", "txt tokens", "text", [1, 1, 0, 1, 0, 1, 1, 1]),
        ("target", "<|spe|>", "text", [1, 1, 0, 1, 0, 1, 0, 0]),
        ("target", "vocabulary words", "text", [1, 1, 0, 1, 0, 1, 0, 0]),
    ],
    "video-text-retrieval": [
        ("input", "<|spe|>", "video", [1, 0, 0, 1, 1, 0, 0, 1]),
        ("input", "mp4 frame patches", "video", [1, 0, 0, 1, 1, 0, 0, 1]),
        ("target", "<|spe|>", "text", [1, 0, 0, 1, 0, 1, 0, 0]),
        ("target", "txt tokens", "text", [1, 0, 0, 1, 0, 1, 0, 0]),
    ],
}
# GLUE: text inputs (bidirectional), answer-word label texts as targets.
GLUE_INPUTS = {
    "glue-mnli": ["json:premise", "json:hypothesis"],
    "glue-qnli": ["json:question", "json:sentence"],
    "glue-qqp": ["json:question1", "json:question2"],
    "glue-rte": ["json:sentence1", "json:sentence2"],
    "glue-mrpc": ["json:sentence1", "json:sentence2"],
    "glue-sst2": ["json:sentence"],
    "glue-cola": ["json:sentence"],
}
for _task, _fields in GLUE_INPUTS.items():
    EXPECTED[_task] = (
        [("input", "<|spe|>", "text", [0, 1, 0, 1, 0, 1, 0, 1])]
        + [("input", f"{f} tokens", "text", [0, 1, 0, 1, 0, 1, 0, 1]) for f in _fields]
        + [("target", "<|spe|>", "text", [0, 1, 0, 1, 0, 1, 0, 0]),
           ("target", f"label texts ({_task[5:]}-answers)", "text", [0, 1, 0, 1, 0, 1, 0, 0])])


def byte_of(vec):
    return sum(b << i for i, b in enumerate(vec))


class AttributesCase(CatalogTestCase):
    def check_task(self, task, expected):
        doc = self.json_of("attributes", task)
        self.assertEqual(doc["task"], task)
        self.assertEqual(doc["formulation"], self.json_of("show", "task", task)["formulation"])
        got = [(k["side"], k["tokens"], k["modality"], k["attributes"]) for k in doc["tokens"]]
        self.assertEqual(got, expected)
        for k in doc["tokens"]:
            self.assertEqual(k["bits"], "".join(str(b) for b in k["attributes"]))
            self.assertEqual(k["byte"], byte_of(k["attributes"]), k)
            self.assertEqual([k["byte"] >> i & 1 for i in range(8)], k["attributes"])
        # the human table: one row per kind of token with the bits and the paper-style list
        out = self.ok("attributes", task).stdout
        self.assertIn(task, out.splitlines()[0])
        rows = self.table(out, first="SIDE")
        self.assertEqual(len(rows), len(expected))
        for row, (side, what, mod, vec) in zip(rows, expected):
            self.assertEqual(row["SIDE"], side)
            self.assertEqual(row["TOKENS"], what)
            self.assertEqual(row["MODALITY"], mod)
            self.assertEqual(row["BITS"], "".join(map(str, vec)))
            self.assertEqual(row["ATTRIBUTES"], "[" + ", ".join(map(str, vec)) + "]")
        return out


class AttributesTest(AttributesCase):
    def setUp(self):
        super().setUp()
        self.init()

    def test_every_preset_task_is_covered(self):
        tasks = {t["name"] for t in self.json_of("list", "tasks")}
        self.assertEqual(tasks, set(EXPECTED))

    def test_preset_tasks(self):
        for task, expected in EXPECTED.items():
            with self.subTest(task=task):
                self.check_task(task, expected)

    def test_paper_example(self):
        """Table 2: any token of the input sequences of image classification is [1, 0, 0, 1, 1, 0, 0, 1]."""
        doc = self.json_of("attributes", "image-classification")
        inputs = [k for k in doc["tokens"] if k["side"] == "input"]
        self.assertTrue(inputs)
        for k in inputs:
            self.assertEqual(k["attributes"], VISUAL_IN_LABEL_OUT)
            self.assertEqual(k["bits"], "10011001")
            self.assertEqual(k["byte"], 1 + 8 + 16 + 128)
        targets = [k for k in doc["tokens"] if k["side"] == "target"]
        self.assertTrue(all(k["attributes"] == LABEL_TEXT_TARGET for k in targets))

    def test_show_task_prints_the_same_attributes(self):
        out = self.ok("show", "task", "image-caption").stdout
        self.assertIn("token attributes (paper Table 2)", out)
        rows = self.table(out, first="SIDE")
        self.assertEqual([(r["SIDE"], r["TOKENS"], r["BITS"]) for r in rows],
                         [(s, w, "".join(map(str, v))) for s, w, _, v in EXPECTED["image-caption"]])

    def test_label_set_named_by_the_task(self):
        self.check_task("glue-sst2", EXPECTED["glue-sst2"])
        self.assertIn("label texts (sst2-answers)", self.ok("attributes", "glue-sst2").stdout)

    def test_unknown_task(self):
        self.fails(1, "attributes", "no-such-task", contains="no-such-task")


class HandAddedTaskTest(AttributesCase):
    """A new task is data: its attributes follow from its declaration without any code change."""

    def setUp(self):
        super().setUp()
        self.init(preset=False)

    def test_video_question_answering_causal_label_task(self):
        self.ok("add", "labels", "qa-answers", self.write("qa.txt", "yes\nno\n"))
        self.ok("add", "task", "video-qa", "--formulation", "label", "--input", "mp4=video", "--input", "txt=text",
                "--target", "json:answer", "--labels", "qa-answers", "--causal")
        expected = [
            ("input", "<|spe|>", "video", [1, 1, 0, 1, 1, 0, 0, 1]),
            ("input", "mp4 frame patches", "video", [1, 1, 0, 1, 1, 0, 0, 1]),
            ("input", "txt tokens", "text", [1, 1, 0, 1, 0, 1, 1, 1]),   # causal text input
            ("target", "<|spe|>", "text", [1, 1, 0, 1, 0, 1, 0, 0]),
            ("target", "label texts (qa-answers)", "text", [1, 1, 0, 1, 0, 1, 0, 0]),
        ]
        self.check_task("video-qa", expected)

    def test_text_to_video_retrieval_has_visual_targets(self):
        self.ok("add", "task", "text-video-retrieval", "--formulation", "pair", "--input", "txt=text",
                "--target", "mp4=video")
        expected = [
            ("input", "<|spe|>", "text", [0, 1, 1, 0, 0, 1, 0, 1]),
            ("input", "txt tokens", "text", [0, 1, 1, 0, 0, 1, 0, 1]),
            ("target", "<|spe|>", "video", [0, 1, 1, 0, 1, 0, 0, 0]),
            ("target", "mp4 frame patches", "video", [0, 1, 1, 0, 1, 0, 0, 0]),
        ]
        self.check_task("text-video-retrieval", expected)

    def test_text_first_multimodal_input_spe_follows_first_field(self):
        """The input <|spe|> takes the first field's modality: text here, although an image follows."""
        self.ok("add", "task", "vqa-caption", "--formulation", "vocab-caption", "--input", "question.txt=text",
                "--input", "jpg=image", "--target", "question.txt")
        expected = [
            ("input", "<|spe|>", "text", [1, 1, 0, 1, 0, 1, 1, 1]),
            ("input", "question.txt tokens", "text", [1, 1, 0, 1, 0, 1, 1, 1]),
            ("input", "jpg patches", "image", [1, 1, 0, 1, 1, 0, 0, 1]),
            ("target", "<|spe|>", "text", [1, 1, 0, 1, 0, 1, 0, 0]),
            ("target", "vocabulary words", "text", [1, 1, 0, 1, 0, 1, 0, 0]),
        ]
        self.check_task("vqa-caption", expected)

    def test_image_video_pair(self):
        self.ok("add", "task", "image-video-match", "--formulation", "pair", "--input", "jpg=image",
                "--target", "mp4=video")
        expected = [
            ("input", "<|spe|>", "image", [1, 0, 1, 0, 1, 0, 0, 1]),
            ("input", "jpg patches", "image", [1, 0, 1, 0, 1, 0, 0, 1]),
            ("target", "<|spe|>", "video", [1, 0, 1, 0, 1, 0, 0, 0]),
            ("target", "mp4 frame patches", "video", [1, 0, 1, 0, 1, 0, 0, 0]),
        ]
        self.check_task("image-video-match", expected)


if __name__ == "__main__":
    unittest.main()
