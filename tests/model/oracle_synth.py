# Synthetic oracle files for testing oracle_compare.py without the C tool: parameters and inputs with
# docs/model.md's names and shapes (label, pair and the vocabulary formulations), outputs and gradients
# from reference.py, written as safetensors.
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
    ("mlm", "input"): 0b10101010,     # MLM: the (masked) input text
    ("caption", "image"): 0b10011001,  # captioning: image patches,
    ("caption", "causal"): 0b11101000,  # the causal caption tokens,
    ("caption", "query"): 0b01101000,  # and the query tokens
    ("vocab", "spe"): 0b00101000,      # the vocabulary pass: SPE,
    ("vocab", "text"): 0b00101100,     # and its one token
}
SPECIALS = 3  # the last ids of the vocabulary: mask, gen, spe (not regular tokens)


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
                vocab_targets="full", **cfg_kw):
    """A complete oracle file's tensors and metadata, outputs computed by reference.run in dtype.
    vocab-mlm / vocab-caption ignore input_kind (MLM: a text input; caption: image + causal text +
    queries) and drop_path; vocab_targets is "full" or the number N of sampled negatives."""
    gen = torch.Generator().manual_seed(seed)
    vocab = formulation in ref.VOCAB_FORMULATIONS
    cfg = make_config(moe=moe, drop_path=0.0 if vocab else drop_path, gate_noise=int(gate_noise), **cfg_kw)
    c = ref.normalize_config(cfg)
    T = {k: v for k, v in make_params(cfg, gen).items()}
    if vocab:
        segs, spe, nt = _vocab_inputs(T, gen, formulation, c, B, image, text, vocab_targets)
    else:
        segs, spe, nt = _classic_inputs(T, gen, formulation, input_kind, c, B, image, text, classes)
    for side, n in (("input", B), ("target", nt)):
        for l in range(c["layers"]):
            for g in ref.layer_gates(c, l):
                z = torch.randn(256, c["experts"], generator=gen) / c["experts"] if gate_noise else \
                    torch.zeros(256, c["experts"])
                T["noise.%s.blocks.%d.%s" % (side, l, g)] = z
            for bi, br in enumerate(("attn", "mlp")):
                if vocab:
                    continue  # no drop path in vocab files
                k = (torch.rand(n, generator=gen) >= drop_path).float() / (1 - drop_path)
                if drop_path > 0:
                    k[(2 * l + bi) % n] = 0.0  # at least one dropped branch per table
                T["keep.%s.blocks.%d.%s" % (side, l, br)] = k
    meta = {"config": json.dumps(cfg), "formulation": formulation, "segments": json.dumps(segs),
            "spe_attr": json.dumps(spe), "loss_weight": repr(float(loss_weight))}
    if vocab:
        meta["vocab_attr"] = json.dumps([ATTR[("vocab", "spe")], ATTR[("vocab", "text")]])
    import oracle_compare  # the same file -> pass construction as the comparison uses
    out, grads = oracle_compare.run_case(oracle_compare.build_passes(T, meta), dtype)
    for k, v in out.items():
        if torch.is_tensor(v) and k != "objective":  # what a C file carries (objective: loss + balance terms)
            T["out." + k] = v.float()
    for k, v in grads.items():
        T["grad." + k] = v.float()
    return T, meta


def _classic_inputs(T, gen, formulation, input_kind, c, B, image, text, classes):
    """label / pair: the input segment and the target texts; returns (segments, spe_attr, target rows)."""
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
    if formulation == "label":
        T["labels"] = torch.randint(0, classes, (B,), generator=gen, dtype=torch.int32)
    return segs, [ATTR[(input_kind, "input")], a], nt


def _vocab_inputs(T, gen, formulation, c, B, image, text, vocab_targets):
    """vocab-mlm / vocab-caption: the input segments, the read-outs (read.*) and the candidates (vocab.*)
    as docs/training.md describes them; returns (segments, spe_attr, candidates)."""
    V = c["vocab"]
    mask_id, gen_id = V - SPECIALS, V - SPECIALS + 1
    segs = {"input": [], "target": []}
    ids, lengths, _ = _text(gen, B, text, V - SPECIALS, 0)
    if formulation == "vocab-mlm":
        a = ATTR[("mlm", "input")]
        masked = (torch.rand(B, text, generator=gen) < 0.3) & (torch.arange(text) < lengths.reshape(B, 1).long())
        masked[:, 0] = True  # every sequence has a read-out
        seq, j = masked.nonzero(as_tuple=True)
        target_ids = ids[seq, j].clone()
        inp = ids.clone()
        inp[masked] = mask_id
        T["input.0.ids"], T["input.0.lengths"] = inp, lengths
        T["input.0.attrs"] = torch.full((B, text), a, dtype=torch.uint8)
        segs["input"].append({"kind": "text", "attn": "full", "L": text, "attr": a})
        pos = 1 + j
        spe = a
    else:
        npatch = (image // 16) ** 2
        T["input.0.pixels"] = torch.randn(B, 1, 3, image, image, generator=gen)
        T["input.0.attrs"] = torch.full((B, npatch), ATTR[("caption", "image")], dtype=torch.uint8)
        T["input.1.ids"], T["input.1.lengths"] = ids, lengths
        T["input.1.attrs"] = torch.full((B, text), ATTR[("caption", "causal")], dtype=torch.uint8)
        q = torch.where(torch.arange(text) < lengths.reshape(B, 1).long(), gen_id, 0).to(torch.int32)
        T["input.2.ids"], T["input.2.lengths"] = q, lengths.clone()
        T["input.2.attrs"] = torch.full((B, text), ATTR[("caption", "query")], dtype=torch.uint8)
        segs["input"] += [{"kind": "image", "attn": "full", "T": 1, "H": image, "W": image,
                           "attr": ATTR[("caption", "image")]},
                          {"kind": "text", "attn": "causal", "L": text, "attr": ATTR[("caption", "causal")]},
                          {"kind": "text", "attn": "query", "L": text, "attr": ATTR[("caption", "query")]}]
        seq, j = (torch.arange(text) < lengths.reshape(B, 1).long()).nonzero(as_tuple=True)
        target_ids = ids[seq, j].clone()
        pos = 1 + npatch + text + j
        spe = ATTR[("caption", "image")]
    if vocab_targets == "full":
        cand, logq = torch.arange(V, dtype=torch.int32), None
    else:  # the batch's targets plus N uniform negatives among the other regular tokens, -log q on those
        tset = sorted(set(target_ids.tolist()))
        others = [v for v in range(V - SPECIALS) if v not in set(tset)]
        N = int(vocab_targets)
        neg = [others[i] for i in torch.randperm(len(others), generator=gen)[:N].tolist()]
        cand = torch.tensor(tset + neg, dtype=torch.int32)
        logq = torch.cat([torch.zeros(len(tset)), torch.full((N,), -float(np.log(N / len(others))))])
        T["vocab.logq"] = logq.float()
    index = {int(v): i for i, v in enumerate(cand.tolist())}
    T["read.seq"], T["read.pos"] = seq.to(torch.int32), pos.to(torch.int32)
    T["read.target"] = torch.tensor([index[int(v)] for v in target_ids], dtype=torch.int32)
    T["vocab.ids"] = cand
    return segs, [spe, ATTR[("vocab", "spe")]], cand.numel()


def save(path, tensors, meta):
    safetensors_io.save(path, {k: v.detach().contiguous() for k, v in tensors.items()},
                        {k: str(v) for k, v in meta.items()})
