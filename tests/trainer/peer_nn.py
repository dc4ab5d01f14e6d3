"""A second peer of the paper's recipe for image classification, written with plain torch.nn modules from the
recipe as issue 13 states it (dense pre-LN ViT-Ti, <|spe|> first, fixed 2-D sin-cos image positions, LayerScale,
final LayerNorm + projection + L2 norm, label texts encoded every step, logits exp(t)·cos, CE with label
smoothing 0.1, AdamW with decay on the Linear weights, warmup then cosine, clipping). It shares no code with
upmoe or with tests/model/reference.py (which peer_recipe.py uses), so the two peers check each other.

The choices the paper leaves open are options, so each can be measured:
  --init upmoe      upmoe's (docs/model.md): every Linear N(0, 0.02), embeddings N(0, 0.02), projection N(0, D^-0.5)
  --init torch      torch.nn's own defaults (nn.Linear/nn.Conv2d Kaiming-uniform, nn.Embedding N(0, 1))
  --init mae        the public Uni-Perceiver code's MAEParamsInit: Xavier-uniform Linears (q, k, v each as its
                    own square matrix), Xavier patch embedding, embeddings N(0, 0.02)
  --embed-ln        the public code's embedding LayerNorm (TOKEN_EMBED/VIDEO_EMBED USE_NORM, SHARE_LAYERNORM):
                    SPE, text and image tokens each enter as LN(embedding + position + type embedding)
  --spe-std S       the SPE embedding's initial std (without --embed-ln; 0 = zeros)
  --logit-scale S   the learnable temperature's initial exp(t) (the paper's 1/0.07)
and the optimizer's numbers (--lr, --eps, --beta2, --clip, --layerscale).

    /usr/bin/python3 tests/trainer/peer_nn.py TRAIN_DIR HELDOUT_DIR [--steps 120] [--batch 16] [--seed 0] ...

Folders hold <class>/<image>; the class folder names are the label texts (tokenized by upmoe-tokenize).
Prints the loss, gradient norm and LayerScale statistics, then held-out top-1. Measurements: docs/training.md.
--task retrieval trains image-text retrieval instead (the pair formulation): each image's caption is
"a handwritten digit <class>" (tests/trainer/digits_fixture.py's), in-batch negatives, cross-entropy with label
smoothing both ways; held out, R@1 both ways over galleries of --gallery images and their captions, where every
equal caption counts (as upmoe-eval scores it). --video reads <class>/<clip> folders of the fixture's 8-frame clips
instead: video classification (frame patches with a learned temporal embedding)."""
import argparse
import math
import os
import subprocess
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from peer_mlm import Block  # the same directory

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.environ.get("UPMOE_BUILD_DIR") or os.path.join(HERE, "..", "..", "build")
SPE, EOT, VOCAB = 49410, 49407, 49411
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def sincos_2d(g, D):
    """[g*g, D]: x in the first half of the channels, y in the second (sin, cos each)."""
    om = 10000.0 ** (-torch.arange(D // 4, dtype=torch.float64) / (D // 4))
    gy, gx = torch.meshgrid(torch.arange(g, dtype=torch.float64), torch.arange(g, dtype=torch.float64), indexing="ij")
    ax, ay = gx.reshape(-1, 1) * om, gy.reshape(-1, 1) * om
    return torch.cat([ax.sin(), ax.cos(), ay.sin(), ay.cos()], 1).float()


class Encoder(nn.Module):
    def __init__(self, a):
        super().__init__()
        D, self.a = a.dim, a
        self.patch = nn.Conv2d(3, D, 16, 16)
        self.tok = nn.Embedding(VOCAB, D)
        self.spe = nn.Parameter(torch.zeros(D))  # used without --embed-ln; with it SPE is the token's embedding
        self.text_pos = nn.Parameter(torch.zeros(77, D))
        self.text_type, self.image_type = nn.Parameter(torch.zeros(D)), nn.Parameter(torch.zeros(D))
        self.embed_norm = nn.LayerNorm(D)
        self.blocks = nn.ModuleList(Block(D, a.heads, a.layerscale) for _ in range(a.layers))
        self.norm = nn.LayerNorm(D)
        self.out = nn.Linear(D, D, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(a.logit_scale)))
        self.register_buffer("image_pos", sincos_2d(a.image_size // 16, D))
        self.temporal = nn.Parameter(torch.zeros(8, D))  # video frames: a learned embedding per frame
        self._init(torch.Generator().manual_seed(a.seed))

    @torch.no_grad()
    def _init(self, g):
        a, D = self.a, self.a.dim
        for p in (self.text_pos, self.text_type, self.image_type, self.temporal):
            p.normal_(0, 0.02, generator=g)
        if a.init == "torch":  # nn's defaults stand; the SPE is an embedding-table row, N(0, 1)
            self.spe.normal_(0, 1.0, generator=g)
            return
        self.tok.weight.normal_(0, 0.02, generator=g)
        if a.spe_std > 0:
            self.spe.normal_(0, a.spe_std, generator=g)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                if a.init == "upmoe":
                    m.weight.normal_(0, 0.02, generator=g)
                else:  # mae: Xavier-uniform, q, k and v each as a square matrix
                    rows = m.weight.shape[0] // 3 if m.weight.shape[0] == 3 * m.weight.shape[1] else m.weight.shape[0]
                    val = math.sqrt(6.0 / (rows + m.weight.shape[1]))
                    m.weight.uniform_(-val, val, generator=g)
                if m.bias is not None:
                    m.bias.zero_()
        if a.init == "upmoe":
            self.patch.weight.normal_(0, 0.02, generator=g)
            self.out.weight.normal_(0, D ** -0.5, generator=g)
        else:
            val = math.sqrt(6.0 / (D + self.patch.weight[0].numel()))
            self.patch.weight.uniform_(-val, val, generator=g)
        self.patch.bias.zero_()

    def _spe(self, n):
        if self.a.embed_ln:
            return self.embed_norm(self.tok.weight[SPE] + self.text_pos[0] + self.text_type).expand(n, 1, -1)
        return self.spe.expand(n, 1, -1)

    def _features(self, x):
        for b in self.blocks:
            x = b(x)
        return F.normalize(self.out(self.norm(x[:, 0])), dim=-1)

    def images(self, px):
        """px [n, 3, H, W] pictures, or [n, T, 3, H, W] video frames (each frame's patches, in frame order)."""
        if px.dim() == 5:
            n, T = px.shape[:2]
            x = self.patch(px.flatten(0, 1)).flatten(2).transpose(1, 2) + self.image_pos  # [n*T, P, D]
            x = (x.view(n, T, -1, x.shape[-1]) + self.temporal[:T, None]).flatten(1, 2)
            return self._features(torch.cat([self._spe(n), x], 1))
        x = self.patch(px).flatten(2).transpose(1, 2) + self.image_pos
        if self.a.embed_ln:
            x = self.embed_norm(x + self.image_type)
        return self._features(torch.cat([self._spe(px.shape[0]), x], 1))

    def texts(self, ids):
        x = self.tok(ids) + self.text_pos[:ids.shape[1]]
        if self.a.embed_ln:
            x = self.embed_norm(x + self.text_type)
        return self._features(torch.cat([self._spe(ids.shape[0]), x], 1))


def load(folder, size, crop=False):
    """Normalised pictures [N, 3, size, size] and class indices: a plain bicubic resize, or with crop upmoe's
    `--augment none` view (shorter side to size / 0.875, then the centre size x size)."""
    from PIL import Image
    classes = sorted(os.listdir(folder))
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    xs, ys = [], []
    for ci, c in enumerate(classes):
        for f in sorted(os.listdir(os.path.join(folder, c))):
            im = Image.open(os.path.join(folder, c, f)).convert("RGB")
            if crop:
                big = int(size / 0.875)
                im = im.resize((big, big), Image.BICUBIC)
                o = (big - size) // 2
                im = im.crop((o, o, o + size, o + size))
            else:
                im = im.resize((size, size), Image.BICUBIC)
            t = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(size, size, 3).permute(2, 0, 1)
            xs.append((t.float() / 255 - mean) / std)
            ys.append(ci)
    return torch.stack(xs), torch.tensor(ys), classes


def load_videos(folder, size):
    """Clips [N, T, 3, size, size] (every frame; the digits fixture's clips are 8 frames of size x size, so every
    frame is the one the policy samples and no resize is needed) normalised with mean and std 0.5 (TimeSformer's,
    upmoe's for videos), decoded with PyAV; and class indices."""
    import av
    classes = sorted(os.listdir(folder))
    xs, ys = [], []
    for ci, c in enumerate(classes):
        for f in sorted(os.listdir(os.path.join(folder, c))):
            with av.open(os.path.join(folder, c, f)) as con:
                frames = [torch.from_numpy(fr.to_ndarray(format="rgb24")) for fr in con.decode(video=0)]
            x = torch.stack(frames).permute(0, 3, 1, 2).float()
            assert x.shape[1:] == (3, size, size), (f, x.shape)
            xs.append((x / 255 - 0.5) / 0.5)
            ys.append(ci)
    return torch.stack(xs), torch.tensor(ys), classes


def label_ids(names):
    p = subprocess.run([os.path.join(BUILD, "upmoe-tokenize"), "--no-specials", "-"], input="\n".join(names) + "\n",
                       capture_output=True, text=True, check=True)
    rows = [[int(v) for v in line.split()] + [EOT] for line in p.stdout.splitlines()]
    L = max(len(r) for r in rows)
    return torch.tensor([r + [EOT] * (L - len(r)) for r in rows])  # padded with EOT, attended: names of equal length here


def learning_rate(peak, step, steps, floor=1e-6, warm=-1):
    """Linear warmup over warm steps (default the first 5 %), then cosine from peak to floor (docs/training.md)."""
    warm = steps // 20 if warm < 0 else warm
    if step < warm:
        return peak * (step + 1) / warm
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


@torch.no_grad()
def retrieval_eval(m, Xh, Yh, ids, a):
    """R@1 both ways over galleries of a.gallery held-out images (in a fixed shuffled order) and their captions;
    a retrieved item is right when its caption equals the query's. Chance: the share of equal captions."""
    order = torch.randperm(len(Xh), generator=torch.Generator().manual_seed(12345))
    i2t = t2i = chance = n = 0
    for g in range(0, len(order) - a.gallery + 1, a.gallery):
        sel = order[g:g + a.gallery]
        y = Yh[sel]
        sim = m.images(Xh[sel]) @ m.texts(ids[y]).t()
        same = y[:, None] == y[None, :]
        i2t += int(same[torch.arange(len(y)), sim.argmax(1)].sum())
        t2i += int(same[sim.argmax(0), torch.arange(len(y))].sum())
        chance += float(same.float().mean()) * len(y)
        n += len(y)
    print("held-out R@1 image->text %.3f, text->image %.3f over %d images in galleries of %d (chance %.3f)"
          % (i2t / n, t2i / n, n, a.gallery, chance / n))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("train")
    ap.add_argument("heldout")
    for k, v in (("steps", 120), ("batch", 16), ("image-size", 160), ("seed", 0), ("dim", 192), ("layers", 12),
                 ("heads", 3), ("log-every", 20)):
        ap.add_argument("--" + k, type=int, default=v)
    for k, v in (("lr", 5e-4), ("eps", 1e-6), ("beta2", 0.98), ("clip", 0.5), ("layerscale", 1e-3), ("spe-std", 0.02),
                 ("logit-scale", 1 / 0.07)):
        ap.add_argument("--" + k, type=float, default=v)
    ap.add_argument("--init", choices=("upmoe", "torch", "mae"), default="upmoe")
    ap.add_argument("--embed-ln", action="store_true")
    ap.add_argument("--crop", action="store_true", help="upmoe's --augment none view instead of a plain resize")
    ap.add_argument("--task", choices=("label", "retrieval"), default="label")
    ap.add_argument("--video", action="store_true", help="folders of <class>/<clip>: video classification")
    ap.add_argument("--gallery", type=int, default=80)
    ap.add_argument("--warmup", type=int, default=-1, help="warmup steps (default 5 %% of --steps)")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(int(os.environ.get("PEER_THREADS", os.cpu_count() or 1)))
    if a.video:
        X, Y, classes = load_videos(a.train, a.image_size)
        Xh, Yh, _ = load_videos(a.heldout, a.image_size)
    else:
        X, Y, classes = load(a.train, a.image_size, a.crop)
        Xh, Yh, _ = load(a.heldout, a.image_size, a.crop)
    ids = label_ids(classes if a.task == "label" else ["a handwritten digit " + c for c in classes])
    m = Encoder(a)
    decay = [p for n, p in m.named_parameters() if p.dim() == 2 and n not in ("tok.weight", "text_pos")]
    decay.append(m.patch.weight)
    rest = [p for p in m.parameters() if all(p is not q for q in decay)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, a.beta2), eps=a.eps)
    gen = torch.Generator().manual_seed(a.seed)
    order, at, t0 = torch.randperm(len(X), generator=gen), 0, time.time()
    for step in range(a.steps):
        if at + a.batch > len(order):
            order, at = torch.randperm(len(X), generator=gen), 0
        idx = order[at:at + a.batch]
        at += a.batch
        if a.task == "label":
            u, v = m.images(X[idx]), m.texts(ids)
            loss = F.cross_entropy(m.logit_scale.exp().clamp(max=100) * u @ v.t(), Y[idx], label_smoothing=0.1)
        else:  # the batch's own captions; every other one in the batch is a negative, equal or not
            u, v = m.images(X[idx]), m.texts(ids[Y[idx]])
            logits, diag = m.logit_scale.exp().clamp(max=100) * u @ v.t(), torch.arange(len(idx))
            loss = 0.5 * (F.cross_entropy(logits, diag, label_smoothing=0.1) +
                          F.cross_entropy(logits.t(), diag, label_smoothing=0.1))
        opt.zero_grad()
        loss.backward()
        if step == 0:
            off = ~torch.eye(len(idx), dtype=torch.bool)
            g_attn = sum(float(b.gamma1.grad.norm()) ** 2 for b in m.blocks) ** 0.5
            print("initial features: image pairwise cosine %.6f, label-text %.6f; attention-LayerScale gradient %.3e"
                  % (float((u @ u.t())[off].mean()), float((v @ v.t())[~torch.eye(len(v), dtype=torch.bool)].mean()),
                     g_attn))
        norm = torch.nn.utils.clip_grad_norm_(m.parameters(), a.clip)
        for group in opt.param_groups:
            group["lr"] = learning_rate(a.lr, step, a.steps, warm=a.warmup)
        opt.step()
        if step % a.log_every == 0 or step == a.steps - 1:
            ga = torch.cat([b.gamma1.detach() for b in m.blocks])
            print("step %d loss %.4f gnorm %.3e attention LayerScale mean|g| %.2e mean %.2e (%.0f s)"
                  % (step + 1, float(loss), float(norm), float(ga.abs().mean()), float(ga.mean()), time.time() - t0),
                  flush=True)
    if a.task == "retrieval":
        return retrieval_eval(m, Xh, Yh, ids, a)
    correct = 0
    with torch.no_grad():
        v = m.texts(ids)
        for i in range(0, len(Xh), 50):
            correct += int(((m.images(Xh[i:i + 50]) @ v.t()).argmax(1) == Yh[i:i + 50]).sum())
    print("held-out top-1 %.3f (%d of %d; chance %.3f)" % (correct / len(Xh), correct, len(Xh), 1 / len(classes)))


if __name__ == "__main__":
    main()
