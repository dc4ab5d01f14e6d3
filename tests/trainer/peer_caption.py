"""A peer of the paper's image captioning (the vocab-caption formulation), written with plain torch.nn modules from
the recipe and the sequence layout docs/model.md describes, sharing no code with upmoe or tests/model/reference.py:
[<|spe|>, image patches, caption tokens (causal), one <|gen|> query per caption token]; query j sees <|spe|>, the
image, caption tokens 0..j-1 and itself, and predicts caption token j. The queries' outputs and the vocabulary's
features (each token encoded alone after <|spe|>, read at <|spe|>) pass the shared final LayerNorm + projection +
L2 norm; logits exp(t)·cos over the batch's targets plus N sampled negatives (corrected by -log q); cross-entropy
with label smoothing 0.1; AdamW, warmup then cosine, clipping. Images and captions as peer_nn.py's retrieval task:
folders of <class>/<image>, caption "a handwritten digit <class>" + <|endoftext|>.

    /usr/bin/python3 tests/trainer/peer_caption.py TRAIN_DIR HELDOUT_DIR [--steps 600] [--seed 0] ...

Prints held-out teacher-forced token accuracy against the whole vocabulary and the image-blind predictor's (the
best token per caption position, counted on the held-out captions themselves). Measurements: docs/training.md."""
import argparse
import math
import os
import random
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_mlm import VOCAB, Encoder, candidates  # noqa: E402
from peer_nn import label_ids, load, sincos_2d  # noqa: E402

GEN = 49409


class Captioner(Encoder):
    """peer_mlm's text encoder (token and position embeddings, blocks, head, the vocabulary's features) with an
    image patch embedding and fixed 2-D sin-cos image positions."""

    def __init__(self, D, layers, heads, ls, image_size, max_len=32):
        super().__init__(D, layers, heads, ls, max_len)
        self.patch = nn.Conv2d(3, D, 16, 16)
        nn.init.trunc_normal_(self.patch.weight, std=0.02, a=-2, b=2)
        nn.init.zeros_(self.patch.bias)
        self.register_buffer("image_pos", sincos_2d(image_size // 16, D))

    def captions(self, px, ids, lengths):
        """Query outputs [n, L, D] for images px and captions ids [n, L] (padded), teacher-forced."""
        n, L = ids.shape
        img = self.patch(px).flatten(2).transpose(1, 2) + self.image_pos
        P = img.shape[1]
        text = self.tok(ids) + self.pos[:L]
        query = self.tok(torch.full_like(ids, GEN)) + self.pos[:L]
        x = torch.cat([self.spe.expand(n, 1, -1), img, text, query], 1)
        S, pre = x.shape[1], 1 + P
        j = torch.arange(L)
        valid = j[None, :] < lengths[:, None]  # [n, L]
        allow = torch.zeros(n, S, S, dtype=torch.bool)
        allow[:, :pre, :pre] = True  # SPE and the image: full attention among themselves
        causal = (j[None, :] <= j[:, None])[None] & valid[:, None, :]  # text j sees text 0..j
        allow[:, pre:pre + L, :pre] = True
        allow[:, pre:pre + L, pre:pre + L] = causal
        allow[:, pre + L:, :pre] = True
        allow[:, pre + L:, pre:pre + L] = (j[None, :] < j[:, None])[None] & valid[:, None, :]  # query j: text < j
        allow[:, pre + L:, pre + L:] = torch.eye(L, dtype=torch.bool)[None]  # and itself
        rows_valid = torch.cat([torch.ones(n, pre, dtype=torch.bool), valid, valid], 1)
        allow &= rows_valid[:, :, None] & rows_valid[:, None, :]  # padding attends to nothing, nobody to it
        allow |= torch.eye(S, dtype=torch.bool)[None] & ~rows_valid[:, :, None]  # (a padding row sees itself: no NaN)
        for b in self.blocks:
            x = b(x, allow)
        return x[:, pre + L:]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("train")
    ap.add_argument("heldout")
    for k, v in (("steps", 600), ("batch", 16), ("image-size", 32), ("seed", 0), ("dim", 64), ("layers", 2),
                 ("heads", 4), ("warmup", 20), ("negatives", 256), ("log-every", 100), ("threads", 2)):
        ap.add_argument("--" + k, type=int, default=v)
    for k, v in (("lr", 2e-3), ("min-lr", 1e-6), ("eps", 1e-6), ("clip", 0.5), ("layerscale", 1e-3)):
        ap.add_argument("--" + k, type=float, default=v)
    ap.add_argument("--crop", action="store_true", help="upmoe's --augment none view instead of a plain resize")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    rng = random.Random(a.seed)
    X, Y, classes = load(a.train, a.image_size, a.crop)
    Xh, Yh, _ = load(a.heldout, a.image_size, a.crop)
    caps = label_ids(["a handwritten digit " + c for c in classes])  # [classes, L], each ending <|endoftext|>
    lens = torch.full((len(classes),), caps.shape[1])
    m = Captioner(a.dim, a.layers, a.heads, a.layerscale, a.image_size)
    decay = [p for n, p in m.named_parameters() if n.endswith("weight") and p.dim() >= 2 and not n.startswith("tok")]
    rest = [p for p in m.parameters() if all(p is not q for q in decay)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.98), eps=a.eps)

    def lr_at(step):
        if step <= a.warmup:
            return a.lr * step / a.warmup
        t = (step - a.warmup) / max(1, a.steps - a.warmup)
        return a.min_lr + 0.5 * (a.lr - a.min_lr) * (1 + math.cos(math.pi * t))

    gen = torch.Generator().manual_seed(a.seed)
    order, at, t0 = torch.randperm(len(X), generator=gen), 0, time.time()
    for step in range(1, a.steps + 1):
        if at + a.batch > len(order):
            order, at = torch.randperm(len(X), generator=gen), 0
        idx = order[at:at + a.batch]
        at += a.batch
        ids, n = caps[Y[idx]], lens[Y[idx]]
        valid = torch.arange(ids.shape[1])[None, :] < n[:, None]
        cand, corr, yi = candidates(ids[valid].tolist(), a.negatives, rng)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        u = m.feature(m.captions(X[idx], ids, n)[valid])
        logits = m.logit_scale.exp().clamp(max=100) * u @ m.vocab_features(cand).T + corr
        loss = F.cross_entropy(logits, yi, label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(m.parameters(), a.clip)
        opt.step()
        if step == 1 or step % a.log_every == 0:
            print(f"step {step} loss {loss.item():.4f} gnorm {gn:.3g} lr {lr_at(step):.2e} {time.time() - t0:.0f} s",
                  flush=True)
    m.eval()
    right = total = 0
    per_pos = {}
    with torch.no_grad():
        vf = torch.cat([m.vocab_features(c) for c in torch.arange(VOCAB).split(8192)])
        for i in range(0, len(Xh), 80):
            ids, n = caps[Yh[i:i + 80]], lens[Yh[i:i + 80]]
            valid = torch.arange(ids.shape[1])[None, :] < n[:, None]
            pred = (m.feature(m.captions(Xh[i:i + 80], ids, n)) @ vf.T).argmax(-1)
            right += int((pred == ids)[valid].sum())
            total += int(valid.sum())
            for row in ids.tolist():
                for j, v in enumerate(row):
                    per_pos.setdefault(j, {}).setdefault(v, 0)
                    per_pos[j][v] += 1
    blind = sum(max(c.values()) for c in per_pos.values()) / total
    print(f"held-out token accuracy {right / total:.4f} over {total} tokens, image-blind {blind:.4f}")


if __name__ == "__main__":
    main()
