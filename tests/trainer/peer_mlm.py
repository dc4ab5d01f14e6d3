"""A peer of the paper's masked language modelling, written with plain torch.nn modules from the recipe (paper §3,
the design notes §5), sharing no code with upmoe or with tests/model/reference.py: a dense pre-LN encoder with
<|spe|> first and learned text positions, LayerScale; the masked positions' outputs and the vocabulary's features
(each token encoded alone after <|spe|>, read at <|spe|>) through the shared final LayerNorm + projection + L2 norm;
logits exp(t)·cos; cross-entropy with label smoothing 0.1 over the batch's targets plus N sampled negatives (their
logits corrected by -log q, the sampled softmax of Jean et al.); AdamW with decay on the Linear weights, warmup then
cosine, clipping. Whole-word masking of 15 % of the words, 80 % <|mask|> / 10 % a random token / 10 % kept.

Its text handling is its own: paragraphs split at blank lines, CLIP's word ends read from the merges file as CLIP
builds its vocabulary; token ids come from upmoe-tokenize (checked against an independent CLIP BPE port).

    /usr/bin/python3 tests/trainer/peer_mlm.py BOOK.txt [--steps 1500] [--batch 32] [--lr 3e-3] [--seed 0] ...

The first 90 % of the paragraphs train, the last 10 % are held out (as tests/trainer/train_fixture.add_book).
Prints the training loss every --log-every steps, then held-out masked-token accuracy against the whole vocabulary
and the context-blind predictor's (the training text's most frequent token). Measurements: docs/training.md."""
import argparse
import gzip
import math
import os
import random
import subprocess
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.environ.get("UPMOE_BUILD_DIR") or os.path.join(HERE, "..", "..", "build")
SOT, EOT, MASK, SPE, VOCAB = 49406, 49407, 49408, 49410, 49411


def word_ends(merges_path):
    """Ids whose token ends a word ('</w>'), in CLIP's vocabulary order: 256 byte tokens, their '</w>' forms, one
    token per merge, then the specials."""
    opener = gzip.open if merges_path.endswith(".gz") else open
    with opener(merges_path, "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1:49152 - 256 - 2 + 1]
    ends = [False] * 256 + [True] * 256
    ends += [m.split()[1].endswith("</w>") for m in merges]
    return ends + [False] * (VOCAB - len(ends))


def paragraphs(path):
    with open(path, encoding="utf-8") as f:
        return [" ".join(p.split()) for p in f.read().split("\n\n") if p.strip()]


def tokenize(texts, vocab):
    p = subprocess.run([os.path.join(BUILD, "upmoe-tokenize"), "--vocab", vocab, "--no-specials", "-"],
                       input="\n".join(texts) + "\n", capture_output=True, text=True, check=True)
    return [[int(v) for v in line.split()] for line in p.stdout.split("\n")[:len(texts)]]


def mask_words(ids, ends, rng, rate=0.15):
    """Whole-word masking: returns (input ids, [(position, target)]). Specials belong to no word."""
    words, cur = [], []
    for i, v in enumerate(ids):
        if v >= SOT:
            if cur:
                words.append(cur)
            cur = []
            continue
        cur.append(i)
        if ends[v]:
            words.append(cur)
            cur = []
    if cur:
        words.append(cur)
    k = min(len(words), max(1, round(rate * len(words)))) if words else 0
    out, targets = list(ids), []
    for w in sorted(rng.sample(range(len(words)), k)):
        for i in words[w]:
            targets.append((i, ids[i]))
            u = rng.random()
            out[i] = MASK if u < 0.8 else rng.randrange(SOT) if u < 0.9 else ids[i]
    return out, targets


class Block(nn.Module):
    """Pre-LN block with LayerScale; allow: which keys each query may attend to ([n, S, S], or [n, 1, S] for a
    key mask alone), None for all. The other peers build their blocks from this one."""

    def __init__(self, D, heads, ls):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.fc1, self.fc2 = nn.Linear(D, 4 * D), nn.Linear(4 * D, D)
        self.gamma1, self.gamma2 = nn.Parameter(torch.full((D,), ls)), nn.Parameter(torch.full((D,), ls))

    def forward(self, x, allow=None):
        n, S, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).reshape(n, S, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        att = q @ k.transpose(-1, -2) / math.sqrt(D // self.heads)
        if allow is not None:
            att = att.masked_fill(~allow[:, None], float("-inf"))
        x = x + self.gamma1 * self.proj((torch.softmax(att, -1) @ v).transpose(1, 2).reshape(n, S, D))
        return x + self.gamma2 * self.fc2(F.gelu(self.fc1(self.ln2(x))))


class Encoder(nn.Module):
    def __init__(self, D, layers, heads, ls, max_len):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, D)
        self.pos = nn.Parameter(torch.zeros(max_len, D))
        self.spe = nn.Parameter(torch.zeros(D))
        self.blocks = nn.ModuleList(Block(D, heads, ls) for _ in range(layers))
        self.ln, self.out = nn.LayerNorm(D), nn.Linear(D, D)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02, a=-2, b=2)
                nn.init.zeros_(m.bias)
        for p in (self.tok.weight, self.pos, self.spe):
            nn.init.trunc_normal_(p, std=0.02, a=-2, b=2)

    def forward(self, ids, lengths):
        """ids [n, L] (text), lengths [n]: outputs [n, 1 + L, D], SPE first."""
        n, L = ids.shape
        x = torch.cat([self.spe.expand(n, 1, -1), self.tok(ids) + self.pos[:L]], 1)
        keys = torch.arange(1 + L)[None, :] <= lengths[:, None]  # SPE and the valid text
        for b in self.blocks:
            x = b(x, keys[:, None, :])
        return x

    def feature(self, h):
        return F.normalize(self.out(self.ln(h)), dim=-1)

    def vocab_features(self, cand):
        h = self.forward(cand[:, None], torch.ones(len(cand), dtype=torch.long))
        return self.feature(h[:, 0])


def candidates(y, negatives, rng):
    """The scored candidates of a step whose targets are y (ids): the distinct targets, then `negatives` other
    regular tokens drawn uniformly without replacement, whose logits get -log q (q = their inclusion probability);
    negatives 0: the whole vocabulary. Returns (candidate ids, logit corrections, each target's candidate index)."""
    targets = sorted(set(y))
    if negatives > 0:
        tset, neg = set(targets), []
        while len(neg) < negatives:
            v = rng.randrange(SOT)
            if v not in tset:
                tset.add(v)
                neg.append(v)
        cand = torch.tensor(targets + neg)
        q = negatives / (SOT - len(targets))
        corr = torch.cat([torch.zeros(len(targets)), torch.full((len(neg),), -math.log(q))])
    else:
        cand, corr = torch.arange(VOCAB), torch.zeros(VOCAB)
    where = {v: j for j, v in enumerate(cand.tolist())}
    return cand, corr, torch.tensor([where[v] for v in y])


def batch_tensors(rows):
    L = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), L, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
    return ids, torch.tensor([len(r) for r in rows])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("book")
    ap.add_argument("--vocab", default=os.environ.get("UPMOE_BPE_VOCAB"))
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--min-lr", type=float, default=1e-6)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--clip", type=float, default=0.5)
    ap.add_argument("--eps", type=float, default=1e-6)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layerscale", type=float, default=1e-3)
    ap.add_argument("--negatives", type=int, default=1024, help="sampled negatives per step (0: whole vocabulary)")
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=0, help="held-out accuracy every N steps too (0: at the end)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    rng = random.Random(a.seed)
    ends = word_ends(a.vocab)
    paras = paragraphs(a.book)
    cut = len(paras) * 9 // 10
    ids = tokenize(paras, a.vocab)
    train = [t[:a.max_len - 1] + [EOT] for t in ids[:cut] if t]
    held = [t[:a.max_len - 1] + [EOT] for t in ids[cut:] if t]
    counts = {}
    for t in ids[:cut]:
        for v in t:
            counts[v] = counts.get(v, 0) + 1
    top = max(counts, key=counts.get)

    m = Encoder(a.dim, a.layers, a.heads, a.layerscale, a.max_len)
    decay = [p for n, p in m.named_parameters() if n.endswith("weight") and p.dim() == 2 and not n.startswith("tok")]
    rest = [p for n, p in m.named_parameters() if not any(p is q for q in decay)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.98), eps=a.eps)

    def lr_at(step):  # step 1..steps
        if step <= a.warmup:
            return a.lr * step / a.warmup
        t = (step - a.warmup) / max(1, a.steps - a.warmup)
        return a.min_lr + 0.5 * (a.lr - a.min_lr) * (1 + math.cos(math.pi * t))

    def evaluate():
        m.eval()
        erng = random.Random(12345)
        right = blind = total = 0
        with torch.no_grad():
            vf = torch.cat([m.vocab_features(c) for c in torch.arange(VOCAB).split(8192)])
            scale = m.logit_scale.exp().clamp(max=100)
            for i in range(0, len(held), 64):
                rows, tg = zip(*(mask_words(t, ends, erng) for t in held[i:i + 64]))
                x, n = batch_tensors(rows)
                h = m(x, n)
                r = torch.tensor([b for b, ts in enumerate(tg) for _ in ts])
                p = torch.tensor([1 + q for ts in tg for q, _ in ts])
                y = torch.tensor([v for ts in tg for _, v in ts])
                pred = (scale * m.feature(h[r, p]) @ vf.T).argmax(1)
                right += int((pred == y).sum())
                blind += int((y == top).sum())
                total += len(y)
        m.train()
        return right / total, blind / total, total

    t0 = time.time()
    order = []
    for step in range(1, a.steps + 1):
        if len(order) < a.batch:
            order += rng.sample(range(len(train)), len(train))
        pick, order = order[:a.batch], order[a.batch:]
        rows, tg = zip(*(mask_words(train[i], ends, rng) for i in pick))
        x, n = batch_tensors(rows)
        r = torch.tensor([b for b, ts in enumerate(tg) for _ in ts])
        p = torch.tensor([1 + q for ts in tg for q, _ in ts])
        y = [v for ts in tg for _, v in ts]
        cand, corr, yi = candidates(y, a.negatives, rng)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        h = m(x, n)
        u = m.feature(h[r, p])
        logits = m.logit_scale.exp().clamp(max=100) * u @ m.vocab_features(cand).T + corr
        loss = F.cross_entropy(logits, yi, label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(m.parameters(), a.clip if a.clip > 0 else float("inf"))
        opt.step()
        with torch.no_grad():
            acc = float((logits.argmax(1) == yi).float().mean())
        if step == 1 or step % a.log_every == 0:
            print(f"step {step} loss {loss.item():.4f} acc {acc:.3f} gnorm {gn:.3g} lr {lr_at(step):.2e} "
                  f"{time.time() - t0:.0f} s", flush=True)
        if a.eval_every and step % a.eval_every == 0 and step < a.steps:
            acc, bl, tot = evaluate()
            print(f"held-out at step {step}: masked-token accuracy {acc:.4f} over {tot} tokens, context-blind "
                  f"{bl:.4f}", flush=True)
    acc, bl, tot = evaluate()
    print(f"held-out at step {a.steps}: masked-token accuracy {acc:.4f} over {tot} tokens, context-blind {bl:.4f}")


if __name__ == "__main__":
    main()
