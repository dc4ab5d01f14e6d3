"""A small real pretraining setup for the trainer tests: shards built by upmoe-shard from the fetched
test data (pysiogame images with their classes and made-up captions, a Gutenberg book), a catalog
with the paper's preset tasks, and mixtures over them. Built once per test class in a temp dir."""
import os
import sqlite3
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.environ.get("UPMOE_BUILD_DIR") or os.path.join(HERE, "..", "..", "build")
CAT = os.path.join(BUILD, "upmoe-catalog")
SHARD = os.path.join(BUILD, "upmoe-shard")
TRAIN = os.path.join(BUILD, "upmoe-train")


def testdata():
    d = os.environ.get("UPMOE_TESTDATA")
    if not d or not os.path.isdir(os.path.join(d, "images", "art4apps")):
        raise AssertionError("UPMOE_TESTDATA is not set or empty: run tools/fetch-testdata and point it at its folder")
    return d


def run(*argv, ok=True, timeout=600, **kw):
    p = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, **kw)
    if ok and p.returncode != 0:
        raise AssertionError(f"{argv} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


def pattern(folder, prefix):
    n = len([f for f in os.listdir(folder) if f.startswith(prefix + "-") and f.endswith(".tar")])
    return os.path.join(folder, f"{prefix}-{{000000..{n - 1:06d}}}.tar")


def build(tmp, heldout_every=0):
    """Catalog at tmp/catalog.db with datasets images (label), captions (vocab-caption), book (vocab-mlm),
    retrieval (pair) and mixtures three (images, captions, book), images-only. With heldout_every = k,
    every k-th image of each class goes to a separate held-out dataset images-heldout (mixture heldout)."""
    td = testdata()
    art = os.path.join(td, "images", "art4apps")
    data = os.path.join(tmp, "data")
    os.makedirs(data, exist_ok=True)
    env = dict(os.environ, UPMOE_CATALOG=os.path.join(tmp, "catalog.db"),
               UPMOE_BPE_VOCAB=os.path.join(td, "clip", "bpe_simple_vocab_16e6.txt"))
    train_dir, held_dir = os.path.join(tmp, "train-images"), os.path.join(tmp, "heldout-images")
    for cls in sorted(os.listdir(art)):
        files = sorted(os.listdir(os.path.join(art, cls)))
        for i, f in enumerate(files):
            dst = held_dir if heldout_every and i % heldout_every == heldout_every - 1 else train_dir
            os.makedirs(os.path.join(dst, cls), exist_ok=True)
            os.symlink(os.path.join(art, cls, f), os.path.join(dst, cls, f))
    run(SHARD, "folder", train_dir, "--kind", "image-class", "--out", data, "--prefix", "images", "--shuffle", 1,
        "--max-samples", 100, "--write-classes", os.path.join(data, "classes.txt"))
    if heldout_every:
        run(SHARD, "folder", held_dir, "--kind", "image-class", "--out", data, "--prefix", "heldout", "--shuffle", 1,
            "--max-samples", 100)  # the same class subfolders, so the same indices
    with open(os.path.join(data, "captions.csv"), "w") as f:
        f.write("path,caption\n")
        for cls in sorted(os.listdir(art)):
            for name in sorted(os.listdir(os.path.join(art, cls))):
                f.write(f"{os.path.join(art, cls, name)},a picture of a {name[:-4].replace('_', ' ')}\n")
    run(SHARD, "annotations", os.path.join(data, "captions.csv"), "--kind", "image-caption", "--out", data,
        "--prefix", "captions", "--max-samples", 100, "--shuffle", 1)
    run(SHARD, "text", os.path.join(td, "text", "pg1661.txt"), "--out", data, "--prefix", "book",
        "--max-samples", 500)
    c = lambda *a: run(CAT, *a, env=env)  # noqa: E731
    c("init", "--preset", "uniperceiver-moe")
    c("add", "labels", "classes", os.path.join(data, "classes.txt"))
    c("add", "task", "classification", "--formulation", "label", "--input", "jpg=image", "--target", "cls",
      "--labels", "classes")
    c("add", "dataset", "images", "--task", "classification", "--batch", 16, "--weight", 0.4,
      "--url", pattern(data, "images"))
    c("add", "dataset", "captions", "--task", "image-caption", "--batch", 16, "--weight", 0.3,
      "--url", pattern(data, "captions"))
    c("add", "dataset", "retrieval", "--task", "image-text-retrieval", "--batch", 16, "--weight", 0.2,
      "--url", pattern(data, "captions"))
    c("add", "dataset", "book", "--task", "mlm", "--batch", 16, "--weight", 0.3, "--url", pattern(data, "book"))
    c("mixture", "create", "three")
    c("mixture", "add", "three", "images", "captions", "book")
    c("mixture", "create", "images-only")
    c("mixture", "add", "images-only", "images")
    c("mixture", "create", "four")
    c("mixture", "add", "four", "images", "captions", "book", "retrieval")
    if heldout_every:
        c("add", "dataset", "images-heldout", "--task", "classification", "--batch", 16, "--split", "val",
          "--url", pattern(data, "heldout"))
        c("mixture", "create", "heldout")
        c("mixture", "add", "heldout", "images-heldout")
    return env


def add_split(env, name, task, batch, train_url, heldout_url):
    """Datasets `name` (train) and `name`-heldout (split val) of `task` in the catalog of env, and one mixture
    of each name, for a held-out check: train on mixture `name`, evaluate on `name`-heldout."""
    c = lambda *a: run(CAT, *a, env=env)  # noqa: E731
    c("add", "dataset", name, "--task", task, "--batch", batch, "--url", train_url)
    c("add", "dataset", name + "-heldout", "--task", task, "--batch", batch, "--split", "val", "--url", heldout_url)
    for n in (name, name + "-heldout"):
        c("mixture", "create", n)
        c("mixture", "add", n, n)


def add_book(tmp, env, batch=16):
    """Sherlock Holmes for MLM with a held-out part: its first 90 % of paragraphs as dataset `book`, the last
    10 % (261 paragraphs) as `book-heldout` (split val), task mlm, one mixture of each name, in the catalog
    of env. Returns the two text files (train, held out)."""
    td = testdata()
    with open(os.path.join(td, "text", "pg1661.txt"), encoding="utf-8") as f:
        paras = [p for p in f.read().split("\n\n") if p.strip()]
    cut = len(paras) * 9 // 10
    data = os.path.join(tmp, "data")
    os.makedirs(data, exist_ok=True)
    files = []
    for name, prefix, part in (("book", "text-train", paras[:cut]), ("book-heldout", "text-heldout", paras[cut:])):
        path = os.path.join(tmp, name + ".txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n\n".join(part) + "\n")
        run(SHARD, "text", path, "--out", data, "--prefix", prefix, "--max-samples", 500)
        files.append(path)
    add_split(env, "book", "mlm", batch, pattern(data, "text-train"), pattern(data, "text-heldout"))
    return files


def sanitized():
    """Whether this build's trainer runs under AddressSanitizer (several times slower)."""
    with open(TRAIN, "rb") as f:
        return b"__asan_init" in f.read()


def mpi_env(env):
    """env plus what MPI ranks of this build need (root permission for Open MPI; sanitizer settings)."""
    env = dict(env)
    if os.getuid() == 0:  # Open MPI refuses root unless told twice
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    # Sanitizer builds: Open MPI keeps allocations for the whole process (exempted by library in
    # lsan-mpi.supp) and has no frame pointers; its plugins stay loaded (keep_plugins.c) and stacks are
    # unwound the exact way, so that the exemptions match and everything of ours is checked.
    if sanitized():
        keep = os.path.join(os.path.dirname(TRAIN), "libupmoe-keep-plugins.so")
        supp = os.path.join(HERE, "..", "lsan-mpi.supp")
        env["LD_PRELOAD"] = keep
        env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0:fast_unwind_on_malloc=0"
                               ":malloc_context_size=16").lstrip(":")
        env["LSAN_OPTIONS"] = (env.get("LSAN_OPTIONS", "") + f":suppressions={supp}:print_suppressions=0").lstrip(":")
    return env


def query(db, q, *args):
    """Rows of a query on the catalog at db, with a connection of its own (closed at once)."""
    con = sqlite3.connect(db)
    try:
        return con.execute(q, args).fetchall()
    finally:
        con.close()
