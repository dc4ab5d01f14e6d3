"""A peer run of the paper's recipe, independent of upmoe's trainer: trains the dense Uni-Perceiver encoder
(tests/model/reference.py, written from docs/model.md) on an image-classification folder with label texts,
with its own initialisation (the official code's: timm trunc_normal_(std=0.02) for Linears, N(0, 0.02) for
embeddings, LayerScale 1e-3, the feature projection N(0, D^-0.5), temperature ln(1/0.07)), its own data
loading (PIL: plain bicubic resize to the image size, ToTensor, ImageNet normalisation; no augmentation, or
with --augment paper torchvision's RandomResizedCrop(scale 0.08-1, bicubic) + RandomHorizontalFlip),
torch.optim.AdamW (0.9, 0.98, eps 1e-6, decay 0.05 on Linear weights), linear warmup over 5 % of the
steps then cosine to 1e-6, clip 0.5, cross-entropy with label smoothing 0.1, the label texts
[SPE, words..., <|endoftext|>] encoded every step. Then held-out top-1 over a second folder.

    /usr/bin/python3 tests/trainer/peer_recipe.py TRAIN_DIR HELDOUT_DIR [--steps 120] [--batch 16]
        [--image-size 160] [--seed 0] [--dim 192 --layers 12 --heads 3] [--eps 1e-6] [--augment none|paper]

Folders hold <class>/<image>; classes sorted by name are the label set (their names are the label texts,
tokenized by upmoe-tokenize, which tests/pipeline checks against an independent CLIP tokenizer). Used to
set the bounds of the digit learning test (tests/trainer/test_digits.py)."""
import argparse
import math
import os
import re
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "model"))
import reference as ref  # noqa: E402

BUILD = os.environ.get("UPMOE_BUILD_DIR") or os.path.join(HERE, "..", "..", "build")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SPE, EOT = 49410, 49407


def images(folder, size):
    from PIL import Image
    classes = sorted(os.listdir(folder))
    xs, ys = [], []
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    for ci, c in enumerate(classes):
        for f in sorted(os.listdir(os.path.join(folder, c))):
            im = Image.open(os.path.join(folder, c, f)).convert("RGB").resize((size, size), Image.BICUBIC)
            t = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(size, size, 3).permute(2, 0, 1)
            xs.append((t.float() / 255 - mean) / std)
            ys.append(ci)
    return torch.stack(xs), torch.tensor(ys), classes


def originals(folder):
    """The training pictures as they are (PIL, RGB) for per-step augmentation."""
    from PIL import Image
    return [Image.open(os.path.join(folder, c, f)).convert("RGB") for c in sorted(os.listdir(folder))
            for f in sorted(os.listdir(os.path.join(folder, c)))]


def paper_transform(size):
    """The paper's training transform for classification (torchvision, python3-torchvision)."""
    try:
        from torchvision import transforms as T
    except ImportError:
        sys.exit("peer_recipe.py: --augment paper needs torchvision (apt-get install python3-torchvision)")
    return T.Compose([T.RandomResizedCrop(size, scale=(0.08, 1.0), interpolation=T.InterpolationMode.BICUBIC),
                      T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])


def label_ids(classes):
    p = subprocess.run([os.path.join(BUILD, "upmoe-tokenize"), "--no-specials", "-"], input="\n".join(classes) + "\n",
                       capture_output=True, text=True, check=True)
    rows = [[int(v) for v in line.split()] + [EOT] for line in p.stdout.splitlines()]
    L = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (L - len(r)) for r in rows], dtype=torch.int32)
    return ids, torch.tensor([len(r) for r in rows], dtype=torch.int32)


def init_params(cfg, gen):
    P = {}
    D = cfg["dim"]
    for name, shape in ref.param_shapes(cfg).items():
        t = torch.empty(shape)
        if re.search(r"(patch|qkv|attn\.proj|fc1|fc2)\.weight$", name):
            t.normal_(0, 0.02, generator=gen)  # = trunc_normal_(std=0.02): its cut is at +-2, i.e. 100 std
        elif name in ("embed.token", "embed.text_pos", "embed.temporal", "embed.spe"):
            t.normal_(0, 0.02, generator=gen)
        elif name == "proj.weight":
            t.normal_(0, D ** -0.5, generator=gen)
        elif name.endswith((".ls1", ".ls2")):
            t.fill_(1e-3)
        elif name == "logit_scale":
            t.fill_(math.log(1 / 0.07))
        elif name.endswith("norm.weight") or re.search(r"ln\d\.weight$", name):
            t.fill_(1.0)
        else:
            t.zero_()
        P[name] = t.requires_grad_(True)
    return P


def passes(x, ids, lens):
    B, n = x.shape[0], (x.shape[-1] // 16) ** 2
    inp = {"spe_attr": 0, "segments": [{"modality": "image", "attn": "full", "pixels": x.unsqueeze(1),
                                        "attrs": torch.zeros(B, n, dtype=torch.uint8)}]}
    tgt = {"spe_attr": 0, "segments": [{"modality": "text", "attn": "full", "ids": ids, "lengths": lens,
                                        "attrs": torch.zeros(ids.shape, dtype=torch.uint8)}]}
    return inp, tgt


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("train")
    ap.add_argument("heldout")
    for k, v in (("steps", 120), ("batch", 16), ("image-size", 160), ("seed", 0), ("dim", 192), ("layers", 12),
                 ("heads", 3)):
        ap.add_argument("--" + k, type=int, default=v)
    ap.add_argument("--eps", type=float, default=1e-6)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--augment", choices=("none", "paper"), default="none")
    ap.add_argument("--log-every", type=int, default=10)
    a = ap.parse_args(argv)
    torch.manual_seed(a.seed)  # torchvision's transforms draw from the global generator
    torch.set_num_threads(os.cpu_count() or 1)
    gen = torch.Generator().manual_seed(a.seed)
    X, Y, classes = images(a.train, a.image_size)
    Xh, Yh, _ = images(a.heldout, a.image_size)
    if a.augment == "paper":
        pics, aug = originals(a.train), paper_transform(a.image_size)
    ids, lens = label_ids(classes)
    cfg = {"dim": a.dim, "heads": a.heads, "layers": a.layers, "moe": "none", "vocab": 49411, "max_text": 512}
    P = init_params(cfg, gen)
    decay = [p for n, p in P.items() if re.search(r"(patch|qkv|attn\.proj|fc1|fc2)\.weight$|^proj\.weight$", n)]
    rest = [p for p in P.values() if all(p is not q for q in decay)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.98), eps=a.eps)
    warm = a.steps // 20
    order = torch.randperm(len(X), generator=gen)
    at = 0
    for step in range(a.steps):
        if at + a.batch > len(order):
            order, at = torch.randperm(len(X), generator=gen), 0
        idx = order[at:at + a.batch]
        at += a.batch
        x = torch.stack([aug(pics[int(i)]) for i in idx]) if a.augment == "paper" else X[idx]
        inp, tgt = passes(x, ids, lens)
        out = ref.forward(cfg, P, "label", inp, tgt, Y[idx], 1.0, torch.float32)
        opt.zero_grad()
        out["loss"].sum().backward()
        norm = torch.nn.utils.clip_grad_norm_(list(P.values()), 0.5)
        lr = a.lr * (step + 1) / warm if step < warm else \
            1e-6 + 0.5 * (a.lr - 1e-6) * (1 + math.cos(math.pi * (step - warm) / max(1, a.steps - warm)))
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        if step % a.log_every == 0 or step == a.steps - 1:
            print("step %d loss %.4f gnorm %.3e" % (step + 1, float(out["loss"]), float(norm)), flush=True)
    correct = 0
    with torch.no_grad():
        for i in range(0, len(Xh), 50):
            inp, tgt = passes(Xh[i:i + 50], ids, lens)
            out = ref.forward(cfg, P, "label", inp, tgt, Yh[i:i + 50], 1.0, torch.float32)
            correct += int((out["logits"].argmax(1) == Yh[i:i + 50]).sum())
    print("held-out top-1 %.3f (%d of %d; chance %.3f)" % (correct / len(Xh), correct, len(Xh), 1 / len(classes)))


if __name__ == "__main__":
    main(sys.argv[1:])
