# Synthetic oracle files for testing oracle_compare.py without the C tool: parameters and inputs with
# docs/model.md's names and shapes, outputs and gradients from reference.py, written as safetensors.
"""make_oracle(...) -> (tensors, metadata); save(path, tensors, metadata)."""

import json
import os
import sys

import numpy as np
import torch

import reference as ref

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "trainer"))
import safetensors_io  # noqa: E402

# Attribute bytes (paper Table 2, bit i = index i) of the synthetic tasks' tokens.
ATTR = {
    ("image", "input"): 0b10011001,   # image classification / retrieval input patches
    ("image", "target"): 0b00101001,  # its text targets
    ("text", "input"): 0b10101010,    # text classification input tokens
    ("text", "target"): 0b00101010,   # its label texts
}


def make_config(**kw):
    cfg = {"dim": 16, "heads": 2, "layers": 2, "mlp": 64, "experts": 4, "topk": 2, "moe": "attribute",
           "moe_sa": 1, "moe_ffn": 1, "moe_every": 1, "vocab": 64, "max_text": 16, "max_frames": 4,
           "drop_path": 0.0, "layerscale_init": 1e-3, "ln_eps": 1e-5, "gate_noise": 0}
    cfg.update(kw)
    return cfg


def make_params(cfg, gen, ls=0.5):
    """docs/model.md's parameters, with LayerScale `ls` (not 1e-3, so the blocks matter) and small
    random biases and norm gains, so every gradient is exercised."""
    P = {}
    for name, shp in ref.param_shapes(cfg).items():
        leaf = name.rsplit(".", 1)[-1]
        if name == "logit_scale":
            t = torch.full(shp, float(np.log(1 / 0.07)))
        elif leaf in ("ls1", "ls2"):
            t = torch.full(shp, ls) + 0.05 * torch.randn(shp, generator=gen)
        elif ".norm." in name or ".ln" in name or name.startswith("norm."):
            base = 1.0 if leaf == "weight" else 0.0
            t = base + 0.1 * torch.randn(shp, generator=gen)
        elif name == "proj.weight":
            t = torch.randn(shp, generator=gen) * shp[1] ** -0.5
        elif name.endswith(".gate.proj.weight") or ".gate1.proj" in name or ".gate2.proj" in name:
            # logits ~ N(0, 1): spread probabilities (no near-ties) that are not saturated either (a
            # saturated softmax makes the gate gradients pure cancellation, unresolvable in float32)
            t = torch.randn(shp, generator=gen) * shp[1] ** -0.5
        else:
            t = 0.05 * torch.randn(shp, generator=gen)
        P[name] = t.float()
    return P


def _text(gen, n, L, vocab, attr):
    lengths = torch.randint(1, L + 1, (n,), generator=gen, dtype=torch.int32)
    lengths[0] = L  # one full row, one short row at least
    ids = torch.randint(1, vocab, (n, L), generator=gen, dtype=torch.int32)
    ids[torch.arange(L).reshape(1, L) >= lengths.reshape(n, 1).long()] = 0
    return ids, lengths, torch.full((n, L), attr, dtype=torch.uint8)


def make_oracle(formulation="label", input_kind="image", moe="attribute", B=3, image=32, text=6,
                classes=4, drop_path=0.0, gate_noise=False, seed=0, loss_weight=1.0, dtype=torch.float64,
                **cfg_kw):
    """A complete oracle file's tensors and metadata, outputs computed by reference.run in dtype."""
    gen = torch.Generator().manual_seed(seed)
    cfg = make_config(moe=moe, drop_path=drop_path, gate_noise=int(gate_noise), **cfg_kw)
    c = ref.normalize_config(cfg)
    T = {k: v for k, v in make_params(cfg, gen).items()}
    segs = {"input": [], "target": []}
    if input_kind == "image":
        T["input.0.pixels"] = torch.randn(B, 1, 3, image, image, generator=gen)
        ntok = (image // 16) ** 2
        T["input.0.attrs"] = torch.full((B, ntok), ATTR[("image", "input")], dtype=torch.uint8)
        segs["input"].append({"field": "jpg", "modality": "image", "attn": "full", "T": 1, "H": image,
                              "W": image, "attr": ATTR[("image", "input")]})
    else:
        a = ATTR[("text", "input")]
        T["input.0.ids"], T["input.0.lengths"], T["input.0.attrs"] = _text(gen, B, text, c["vocab"], a)
        segs["input"].append({"field": "txt", "modality": "text", "attn": "full", "L": text, "attr": a})
    nt = classes if formulation == "label" else B
    a = ATTR[(input_kind, "target")]
    T["target.0.ids"], T["target.0.lengths"], T["target.0.attrs"] = _text(gen, nt, text, c["vocab"], a)
    segs["target"].append({"field": "label" if formulation == "label" else "txt", "modality": "text",
                           "attn": "full", "L": text, "attr": a})
    spe = [ATTR[(input_kind, "input")], a]
    if formulation == "label":
        T["labels"] = torch.randint(0, classes, (B,), generator=gen, dtype=torch.int32)
    passes = {}
    for side, n in (("input", B), ("target", nt)):
        noise, keep = {}, {}
        for l in range(c["layers"]):
            for g in ref.layer_gates(c, l):
                z = torch.randn(256, c["experts"], generator=gen) / c["experts"] if gate_noise else \
                    torch.zeros(256, c["experts"])
                noise["blocks.%d.%s" % (l, g)] = z
            for bi, br in enumerate(("attn", "mlp")):
                k = (torch.rand(n, generator=gen) >= drop_path).float() / (1 - drop_path)
                if drop_path > 0:
                    k[(2 * l + bi) % n] = 0.0  # at least one dropped branch per table
                keep["blocks.%d.%s" % (l, br)] = k
        for k, v in noise.items():
            T["noise.%s.%s" % (side, k)] = v
        for k, v in keep.items():
            T["keep.%s.%s" % (side, k)] = v
        passes[side] = (noise, keep)
    meta = {"config": json.dumps(cfg), "formulation": formulation, "segments": json.dumps(segs),
            "spe_attr": json.dumps(spe), "loss_weight": repr(float(loss_weight))}
    import oracle_compare  # the same file -> pass construction as the comparison uses
    _, _, params, inp, tgt, labels, w = oracle_compare.build_passes(T, meta)
    out, grads = ref.run(cfg, params, formulation, inp, tgt, labels, w, dtype)
    for k, v in out.items():
        T["out." + k] = v.float()
    for k, v in grads.items():
        T["grad." + k] = v.float()
    return T, meta


def save(path, tensors, meta):
    safetensors_io.save(path, {k: v.detach().contiguous() for k, v in tensors.items()},
                        {k: str(v) for k, v in meta.items()})
