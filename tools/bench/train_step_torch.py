"""The PyTorch peer of upmoe-step-bench: the same Uni-Perceiver-Ti encoder (docs/model.md) on a 160 px
image batch, forward + backward + AdamW, written the efficient way (attribute-MoE experts merged into one
weight per pattern, one F.linear). Prints the fastest step's ms (as upmoe-step-bench does) for one thread
setting. On a GPU (tools/gpu-check): --device cuda, --size b (Uni-Perceiver-B: 768 wide, 12 heads), --dtype
bf16 (autocast, fp32 master weights).
usage: train_step_torch.py MOE(attribute|none) THREADS [BATCH] [IMAGE] [STEPS] [--size ti|b] [--device cpu|cuda]
       [--dtype fp32|bf16]"""
import math
import sys
import time

import torch
import torch.nn.functional as F

D, H, LAYERS, E, K, V = 192, 3, 12, 8, 2, 49411
SIZES = {"ti": (192, 3), "b": (768, 12)}


def sincos(gh, gw, d):
    q = d // 4
    w = torch.pow(10000.0, -torch.arange(q, dtype=torch.float64) / q)
    gy, gx = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    gx, gy = gx.reshape(-1, 1).double() * w, gy.reshape(-1, 1).double() * w
    return torch.cat([gx.sin(), gx.cos(), gy.sin(), gy.cos()], 1).float()


def param(*shape, std=0.02):
    return torch.nn.Parameter(torch.randn(*shape) * std)


class Linear(torch.nn.Module):
    def __init__(self, i, o, moe):
        super().__init__()
        self.moe = moe
        self.w = param(E, o, i) if moe else param(o, i)
        self.b = torch.nn.Parameter(torch.zeros(E, o) if moe else torch.zeros(o))

    def forward(self, x, g):
        if not self.moe:
            return F.linear(x, self.w, self.b)
        w = torch.einsum("e,eoi->oi", g, self.w)  # one pattern in an image batch: one merged weight
        return F.linear(x, w, g @ self.b)


class Gate(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attr = torch.nn.Linear(8, D)
        self.norm = torch.nn.LayerNorm(D)
        self.proj = torch.nn.Linear(D, E, bias=False)

    def forward(self, bits):
        with torch.autocast(bits.device.type, enabled=False):  # the gate in fp32, as upmoe computes it
            p = F.softmax(self.proj(self.norm(self.attr(bits))), -1)
        top = torch.topk(p, K).indices
        return p * torch.zeros_like(p).scatter(0, top, 1.0)


class Block(torch.nn.Module):
    def __init__(self, moe):
        super().__init__()
        self.moe = moe
        self.ln1, self.ln2 = torch.nn.LayerNorm(D), torch.nn.LayerNorm(D)
        self.qkv, self.proj = Linear(D, 3 * D, moe), Linear(D, D, moe)
        self.fc1, self.fc2 = Linear(D, 4 * D, moe), Linear(4 * D, D, moe)
        self.ls1, self.ls2 = torch.nn.Parameter(torch.full((D,), 1e-3)), torch.nn.Parameter(torch.full((D,), 1e-3))
        if moe:
            self.g_attn, self.g1, self.g2 = Gate(), Gate(), Gate()

    def forward(self, x, bits):
        ga = g1 = g2 = None
        if self.moe:
            ga, g1, g2 = self.g_attn(bits), self.g1(bits), self.g2(bits)
        B, S, _ = x.shape
        q, k, v = self.qkv(self.ln1(x), ga).view(B, S, 3, H, D // H).permute(2, 0, 3, 1, 4)
        a = (q @ k.transpose(-1, -2) / math.sqrt(D // H)).softmax(-1) @ v
        x = x + self.ls1 * self.proj(a.transpose(1, 2).reshape(B, S, D), ga)
        return x + self.ls2 * self.fc2(F.gelu(self.fc1(self.ln2(x), g1)), g2)


class Model(torch.nn.Module):
    def __init__(self, moe, grid):
        super().__init__()
        self.token = param(V, D)  # part of the parameters AdamW updates, as in upmoe
        self.patch = torch.nn.Linear(768, D)
        self.spe = param(D)
        self.register_buffer("pos", sincos(grid, grid, D))
        self.blocks = torch.nn.ModuleList(Block(moe) for _ in range(LAYERS))
        self.norm = torch.nn.LayerNorm(D)
        self.head = torch.nn.Linear(D, D, bias=False)
        self.register_buffer("bits", torch.tensor([1.0, 0, 0, 1, 1, 0, 0, 1]))

    def forward(self, pixels):
        B, _, Hh, W = pixels.shape
        p = pixels.unfold(2, 16, 16).unfold(3, 16, 16).permute(0, 2, 3, 1, 4, 5).reshape(B, -1, 768)
        x = torch.cat([self.spe.expand(B, 1, D), self.patch(p) + self.pos], 1)
        for blk in self.blocks:
            x = blk(x, self.bits)
        return F.normalize(self.head(self.norm(x[:, 0])), dim=-1)


def main():
    global D, H
    flags = {}
    args = [a for a in sys.argv[1:]]
    while "--size" in args or "--device" in args or "--dtype" in args:
        for f in ("--size", "--device", "--dtype"):
            if f in args:
                i = args.index(f)
                flags[f] = args[i + 1]
                del args[i:i + 2]
    D, H = SIZES[flags.get("--size", "ti")]
    device, bf16 = flags.get("--device", "cpu"), flags.get("--dtype", "fp32") == "bf16"
    moe, threads = args[0] == "attribute", int(args[1])
    batch = int(args[2]) if len(args) > 2 else 32
    image = int(args[3]) if len(args) > 3 else 160
    steps = int(args[4]) if len(args) > 4 else 5
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    m = Model(moe, image // 16).to(device)
    opt = torch.optim.AdamW(m.parameters(), lr=5e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.05)
    x = torch.randn(batch, 3, image, image, device=device)
    R = torch.randn(batch, D, device=device) / batch
    times = []
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for s in range(2 + steps):
        sync()
        t = time.perf_counter()
        opt.zero_grad(set_to_none=False)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = (m(x).float() * R).sum()
        loss.backward()
        opt.step()
        sync()
        if s >= 2:
            times.append(time.perf_counter() - t)
    print(f"torch {1e3 * min(times):.1f} ms/step ({'attribute-MoE' if moe else 'dense'}, "
          f"set_num_threads({threads}), {sum(p.numel() for p in m.parameters())} parameters, {device}, "
          f"{'bf16' if bf16 else 'fp32'})")


if __name__ == "__main__":
    main()
