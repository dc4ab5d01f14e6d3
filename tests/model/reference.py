# The PyTorch oracle of docs/model.md: sequences, attention masks, the encoder (dense or with the
# attribute-routed Conditional-MoE linear, paper Eq. 3/4/9), the feature head and the label, pair and
# vocabulary (MLM, caption) losses, written independently of the C code and differentiated by autograd.
"""Reference implementation of docs/model.md in plain PyTorch.

A pass is a dict: {"segments": [segment, ...], "spe_attr": int, "noise": {gate: [256, E]},
"keep": {"blocks.{l}.attn"|"blocks.{l}.mlp": [nseq]}} where a segment is a dict with "modality"
("image" | "video" | "text"), "attn" ("full" | "causal" | "caption_query") and tensors "pixels"
[n, T, 3, H, W] or "ids" / "lengths", plus "attrs" [n, tokens] (one attribute byte per token).
Noise and keep entries may be missing (no noise, keep 1).

The vocabulary formulations read the input pass at given (sequence, position) tokens instead of SPE and
score them against a vocabulary pass (vocab_pass: each candidate token v encoded as [SPE, v])."""

import math

import torch
import torch.nn.functional as F

PATCH = 16
VOCAB_FORMULATIONS = ("vocab-mlm", "vocab-caption")
FULL, CAUSAL, QUERY = "full", "causal", "caption_query"
_ATTN_NAMES = {"full": FULL, "causal": CAUSAL, "caption_query": QUERY, "caption-query": QUERY,
               "query": QUERY, "0": FULL, "1": CAUSAL, "2": QUERY}
_MODALITY_NAMES = {"image": "image", "video": "video", "text": "text", "0": "image", "1": "video",
                   "2": "text"}


def attn_kind(v):
    return _ATTN_NAMES[str(v).lower()]


def modality_kind(v):
    return _MODALITY_NAMES[str(v).lower()]


def _flag(v, default):
    if v is None:
        return default
    if isinstance(v, str):
        return v.lower() in ("1", "true", "yes", "on")
    return bool(v)


def normalize_config(cfg):
    """The configuration table of docs/model.md with defaults filled in."""
    D = int(cfg["dim"])
    c = {
        "dim": D,
        "heads": int(cfg["heads"]),
        "layers": int(cfg["layers"]),
        "mlp": int(cfg.get("mlp") or 4 * D),
        "experts": int(cfg.get("experts", 8)),
        "topk": int(cfg.get("topk", 2)),
        "moe": str(cfg.get("moe", "none")),
        "moe_sa": _flag(cfg.get("moe_sa"), True),
        "moe_ffn": _flag(cfg.get("moe_ffn"), True),
        "moe_every": int(cfg.get("moe_every", 1)),
        "vocab": int(cfg.get("vocab", 49411)),
        "max_text": int(cfg.get("max_text", 512)),
        "max_frames": int(cfg.get("max_frames", 8)),
        "ln_eps": float(cfg.get("ln_eps", 1e-5)),
        # the official code renormalises the kept gate values (a softmax over the k chosen logits); Eq. 3 as
        # written does not; a configuration without the key predates the choice and means Eq. 3
        "gate_renorm": _flag(cfg.get("gate_renorm"), False),
        # task routing and task-specific weights: the rows of the task table (task ids 1..task_slots)
        "task_slots": int(cfg.get("task_slots", 0)),
        # token and context routing: capacity factors (training, evaluation) and the balance loss's weight
        "capacity": float(cfg.get("capacity", 1.0)),
        "eval_capacity": float(cfg.get("eval_capacity", 2.0)),
        "balance": float(cfg.get("balance", 1e-2)),
    }
    if c["moe"] not in ROUTED + PER_TOKEN + ("none",):
        raise ValueError("moe must be one of %s or 'none', got %r" % (ROUTED + PER_TOKEN, c["moe"]))
    if c["moe"] in ("task", "task-specific") and c["task_slots"] < 1:
        raise ValueError("a %s model needs task_slots >= 1" % c["moe"])
    if c["moe"] == "task-specific" and (c["experts"] != c["task_slots"] or c["topk"] != 1):
        raise ValueError("task-specific weights: one expert per task slot, top-1")
    if D % c["heads"] or D % 4:
        raise ValueError("dim must be divisible by heads and by 4")
    return c


ROUTED = ("attribute", "modality", "task", "task-specific")
PER_TOKEN = ("token", "context")  # gates that read each token (data-dependent: capacity, balance loss)


def moe_layer(c, layer):
    return c["moe"] in ROUTED + PER_TOKEN and (layer + 1) % c["moe_every"] == 0


def layer_gates(c, layer):
    """The gates of a layer, in docs/model.md's names ({gate} without the blocks.{l}. prefix); task-specific
    weights route by the same names but have no gate parameters."""
    if not moe_layer(c, layer):
        return []
    gates = []
    if c["moe_sa"]:
        gates.append("attn.gate")
    if c["moe_ffn"]:
        gates += ["mlp.gate1", "mlp.gate2"]
    return gates


def param_shapes(cfg):
    """Every parameter name of docs/model.md with its shape, in a fixed order."""
    c = normalize_config(cfg)
    D, Fw, E = c["dim"], c["mlp"], c["experts"]
    s = {"embed.token": [c["vocab"], D], "embed.text_pos": [c["max_text"], D],
         "embed.patch.weight": [D, 3 * PATCH * PATCH], "embed.patch.bias": [D],
         "embed.temporal": [c["max_frames"], D], "embed.spe": [D]}
    for l in range(c["layers"]):
        p = "blocks.%d." % l
        gates = layer_gates(c, l)
        sa = "attn.gate" in gates
        ffn = "mlp.gate1" in gates

        def lin(name, out, inp, moe):
            s[p + name + ".weight"] = [E, out, inp] if moe else [out, inp]
            s[p + name + ".bias"] = [E, out] if moe else [out]

        s[p + "ln1.weight"], s[p + "ln1.bias"] = [D], [D]
        lin("attn.qkv", 3 * D, D, sa)
        lin("attn.proj", D, D, sa)
        s[p + "ls1"], s[p + "ls2"] = [D], [D]
        s[p + "ln2.weight"], s[p + "ln2.bias"] = [D], [D]
        lin("mlp.fc1", Fw, D, ffn)
        lin("mlp.fc2", D, Fw, ffn)
        for g in gates if c["moe"] != "task-specific" else ():
            width = Fw if g == "mlp.gate2" else D  # the gate's input: qkv's, fc1's or fc2's
            if c["moe"] == "token":  # logits = W_g x
                s[p + g + ".proj.weight"] = [E, width]
                continue
            if c["moe"] == "context":  # logits = W_g concat(x, attnpool(X)), the pool's learned query
                s[p + g + ".proj.weight"], s[p + g + ".query"] = [E, 2 * width], [width]
                continue
            if c["moe"] == "task":  # an embedding of the task id as a linear of its one-hot
                s[p + g + ".task.weight"], s[p + g + ".task.bias"] = [D, c["task_slots"]], [D]
            elif c["moe"] == "modality":  # an embedding of the modality id (image, video, text) as a linear
                s[p + g + ".modality.weight"], s[p + g + ".modality.bias"] = [D, 3], [D]
            else:
                s[p + g + ".attr.weight"], s[p + g + ".attr.bias"] = [D, 8], [D]
            s[p + g + ".norm.weight"], s[p + g + ".norm.bias"] = [D], [D]
            s[p + g + ".proj.weight"] = [E, D]
    s["norm.weight"], s["norm.bias"] = [D], [D]
    s["proj.weight"] = [D, D]
    s["logit_scale"] = [1]
    return s


# ---- sequences ----

def sincos_2d(D, gh, gw, dtype=torch.float64):
    """[gh*gw, D], tokens in (gy, gx) row-major order; gx in dims [0, D/2), gy in [D/2, D)."""
    Q = D // 4
    omega = torch.tensor([10000.0 ** (-i / Q) for i in range(Q)], dtype=torch.float64)
    gy, gx = torch.meshgrid(torch.arange(gh, dtype=torch.float64), torch.arange(gw, dtype=torch.float64),
                            indexing="ij")
    ax = gx.reshape(-1, 1) * omega
    ay = gy.reshape(-1, 1) * omega
    return torch.cat([ax.sin(), ax.cos(), ay.sin(), ay.cos()], dim=1).to(dtype)


def patchify(pixels):
    """[n, T, 3, H, W] -> [n, T*gh*gw, 768]: tokens (t, py, px), columns (channel, y, x)."""
    n, T, C, H, W = pixels.shape
    gh, gw = H // PATCH, W // PATCH
    p = pixels.reshape(n, T, C, gh, PATCH, gw, PATCH).permute(0, 1, 3, 5, 2, 4, 6)
    return p.reshape(n, T * gh * gw, C * PATCH * PATCH)


def segment_tokens(seg):
    if seg["modality"] == "text":
        return seg["ids"].shape[1]
    _, T, _, H, W = seg["pixels"].shape
    return T * (H // PATCH) * (W // PATCH)


def segment_nseq(seg):
    return (seg["ids"] if seg["modality"] == "text" else seg["pixels"]).shape[0]


def embed_segment(P, seg, dtype):
    """Token embeddings [n, tokens, D] of one segment."""
    if seg["modality"] == "text":
        ids = seg["ids"].long()
        L = ids.shape[1]
        return P["embed.token"][ids] + P["embed.text_pos"][:L].unsqueeze(0)
    pix = seg["pixels"].to(dtype)
    n, T, _, H, W = pix.shape
    gh, gw = H // PATCH, W // PATCH
    x = patchify(pix) @ P["embed.patch.weight"].t() + P["embed.patch.bias"]
    D = x.shape[-1]
    pos = sincos_2d(D, gh, gw, dtype).repeat(T, 1)
    if seg["modality"] == "video":
        pos = pos + P["embed.temporal"][:T].repeat_interleave(gh * gw, dim=0)
    return x + pos.unsqueeze(0)


def token_layout(segments, nseq):
    """Per token of a sequence: kind (spe/full/causal/query), segment index, position in segment, and
    per sequence validity [nseq, S] (False at padding text positions)."""
    kinds, segidx, pos, valid = ["spe"], [-1], [0], [torch.ones(nseq, 1, dtype=torch.bool)]
    for s, seg in enumerate(segments):
        n = segment_tokens(seg)
        kind = seg["attn"]
        if seg["modality"] != "text":
            kind = FULL  # visual tokens attend bidirectionally
        kinds += [kind] * n
        segidx += [s] * n
        pos += list(range(n))
        if seg["modality"] == "text":
            lengths = seg["lengths"].long().reshape(nseq, 1)
            valid.append(torch.arange(n).reshape(1, n) < lengths)
        else:
            valid.append(torch.ones(nseq, n, dtype=torch.bool))
    return kinds, segidx, pos, torch.cat(valid, dim=1)


def attention_mask(segments, nseq):
    """Boolean [nseq, S, S]: mask[b, i, j] lets token i attend to token j (docs/model.md)."""
    kinds, segidx, pos, valid = token_layout(segments, nseq)
    S = len(kinds)
    # the rule for token i (rows) and token j (columns), on [S, S] tensors at once (a loop over the S^2 pairs
    # took 21 ms a pass at S ~ 100, a fifth of the long-horizon oracle's replays)
    open_ = torch.tensor([k in ("spe", FULL) for k in kinds])  # SPE and full-segment tokens: seen by everyone
    causal = torch.tensor([k == CAUSAL for k in kinds])
    seg, at = torch.tensor(segidx), torch.tensor(pos)
    shared = open_.reshape(1, S).expand(S, S)
    earlier_causal = causal.reshape(1, S) & (at.reshape(1, S) <= at.reshape(S, 1))
    causal_ok = shared | (earlier_causal & (seg.reshape(1, S) == seg.reshape(S, 1)))
    query_ok = shared | (causal.reshape(1, S) & (at.reshape(1, S) <= at.reshape(S, 1) - 1))
    query_ok |= torch.eye(S, dtype=torch.bool)
    base = torch.where(open_.reshape(S, 1), shared, torch.where(causal.reshape(S, 1), causal_ok, query_ok))
    return base.unsqueeze(0) & valid.unsqueeze(2) & valid.unsqueeze(1)


def build_pass(P, ps, dtype):
    """Embeddings x [nseq, S, D], attribute bytes [nseq, S] and mask [nseq, S, S] of a pass."""
    segs = ps["segments"]
    nseq = segment_nseq(segs[0])
    D = P["embed.spe"].shape[0]
    xs = [P["embed.spe"].reshape(1, 1, D).expand(nseq, 1, D)]
    attrs = [torch.full((nseq, 1), int(ps["spe_attr"]), dtype=torch.long)]
    for seg in segs:
        if segment_nseq(seg) != nseq:
            raise ValueError("segments disagree on the number of sequences")
        xs.append(embed_segment(P, seg, dtype))
        attrs.append(seg["attrs"].long().reshape(nseq, -1))
    return torch.cat(xs, dim=1), torch.cat(attrs, dim=1), attention_mask(segs, nseq)


# ---- encoder ----

def attr_bits(patterns, dtype):
    """[P, 8]: bit i of each byte as element i (paper Table 2)."""
    p = torch.as_tensor(patterns, dtype=torch.long).reshape(-1, 1)
    return ((p >> torch.arange(8)) & 1).to(dtype)


def modality_onehot(patterns, video, dtype):
    """[P, 3]: the modality of each pattern's tokens, one-hot over (image, video, text): text when the
    attribute says "this token is text" (bit 5), else video in a pass with video segments, else image."""
    ids = [2 if (int(p) >> 5) & 1 else (1 if video else 0) for p in patterns]
    return F.one_hot(torch.as_tensor(ids, dtype=torch.long), 3).to(dtype)


def topk_mask(probs, k):
    """1 at the k largest entries per row (ties: lower index), 0 elsewhere; no gradient."""
    _, order = torch.sort(probs.detach(), dim=1, descending=True, stable=True)
    keep = torch.zeros_like(probs)
    keep.scatter_(1, order[:, :k], 1.0)
    return keep


def pass_patterns(ps):
    """The distinct attribute bytes of a pass's tokens (SPE included), ascending."""
    ps_set = {int(ps["spe_attr"])}
    for seg in ps["segments"]:
        ps_set |= set(int(v) for v in seg["attrs"].reshape(-1).tolist())
    return sorted(ps_set)


def gate(P, prefix, patterns, noise, k, eps, renorm=False, video=False, task=None, experts=None):
    """G [P, E] (Eq. 9 then Eq. 3): top-k of softmax(W_g LN(W_in a + b) + noise[p]) with a the pattern's
    attribute bits (attribute routing), its one-hot modality (modality routing: the gate has .modality.*
    parameters) or the pass's one-hot task id (task routing: .task.*); renorm: the kept values divided by
    their sum, i.e. a softmax over the k chosen logits (the official code). Task-specific weights (no gate
    parameters; experts given): the one-hot of the task id for every pattern."""
    if prefix + ".proj.weight" not in P:
        if task is None or experts is None:
            raise ValueError("%s: task-specific weights need the pass's task id" % prefix)
        return F.one_hot(torch.full((len(patterns),), task - 1, dtype=torch.long), experts).to(
            next(iter(P.values())).dtype)
    probs = gate_probs(P, prefix, patterns, noise, eps, video, task)
    G = probs * topk_mask(probs, k)
    return G / G.sum(dim=1, keepdim=True) if renorm else G


def gate_probs(P, prefix, patterns, noise, eps, video=False, task=None):
    """softmax(W_g LN(W_in a + b_in) + noise[p]) [P, E] (Eq. 9, Eq. 3 before top-k)."""
    if prefix + ".task.weight" in P:
        W, b = P[prefix + ".task.weight"], P[prefix + ".task.bias"]
        if task is None or not 1 <= task <= W.shape[1]:
            raise ValueError("%s: task id %r outside the table of %d" % (prefix, task, W.shape[1]))
        a = F.one_hot(torch.full((len(patterns),), task - 1, dtype=torch.long), W.shape[1]).to(W.dtype)
    elif prefix + ".modality.weight" in P:
        W, b = P[prefix + ".modality.weight"], P[prefix + ".modality.bias"]
        a = modality_onehot(patterns, video, W.dtype)
    else:
        W, b = P[prefix + ".attr.weight"], P[prefix + ".attr.bias"]
        a = attr_bits(patterns, W.dtype)
    h = a @ W.t() + b
    r = F.layer_norm(h, h.shape[-1:], P[prefix + ".norm.weight"], P[prefix + ".norm.bias"], eps)
    logits = r @ P[prefix + ".proj.weight"].t()
    if noise is not None:
        logits = logits + noise.to(logits.dtype)[torch.as_tensor(patterns, dtype=torch.long)]
    return torch.softmax(logits, dim=1)


def moe_linear(x, attrs, W, b, patterns, G):
    """y = Σ_p mask_p ⊙ (x W_pᵀ + b_p) with W_p = Σ_e G_pe W_e, b_p = Σ_e G_pe b_e (Eq. 4)."""
    y = None
    for i, p in enumerate(patterns):
        Wp = torch.einsum("e,eoi->oi", G[i], W)
        bp = torch.einsum("e,eo->o", G[i], b)
        m = (attrs == p).unsqueeze(-1).to(x.dtype)
        term = m * (x @ Wp.t() + bp)
        y = term if y is None else y + term
    return y


def mhsa(qkv, mask, heads):
    n, S, D3 = qkv.shape
    D = D3 // 3
    hd = D // heads
    q, k, v = (qkv[..., i * D:(i + 1) * D].reshape(n, S, heads, hd).transpose(1, 2) for i in range(3))
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    m = mask.unsqueeze(1)
    any_key = m.any(dim=-1, keepdim=True)
    scores = torch.where(m, scores, torch.full_like(scores, float("-inf")))
    scores = torch.where(any_key, scores, torch.zeros_like(scores))  # padding rows: no NaN
    probs = torch.softmax(scores, dim=-1) * any_key.to(scores.dtype)
    return (probs @ v).transpose(1, 2).reshape(n, S, D)


# ---- token routing (docs/model.md, "Token routing") ----

def context_pool(X, q, mask):
    """attnpool(X) of Eq. 6 as each token sees the sequence: for token i, sum_j a_ij x_j with a_i the
    softmax of q.x_j / sqrt(in) over the tokens j that i may attend to (mask [n, S, S]); X [n, S, in]."""
    s = (X @ q) / math.sqrt(X.shape[-1])  # [n, S]: one score per key
    scores = s.unsqueeze(1).expand(mask.shape)
    any_key = mask.any(dim=-1, keepdim=True)
    scores = torch.where(mask, scores, torch.full_like(scores, float("-inf")))
    scores = torch.where(any_key, scores, torch.zeros_like(scores))  # padding rows: no NaN
    a = torch.softmax(scores, dim=-1) * any_key.to(scores.dtype)
    return a @ X


def choices(G, k):
    """[n, k] each row's kept experts by rank (value descending, ties: the lower index first)."""
    _, order = torch.sort(G.detach(), dim=1, descending=True, stable=True)
    return order[:, :k]


def token_route(X, Wg, valid, k, renorm, cap, noise=None):
    """The gate of every token of X [nseq, S, in]: G [nseq*S, E] (top-k of softmax(W_g x + noise),
    renormalised as configured; noise [nseq, S, E] in training, or None), probs, and keep [nseq*S, E]: 1
    where the (token, expert) assignment fits the expert's capacity cap. Tokens take slots in priority order:
    first choices of all valid tokens in (sequence, position) order, then second choices; padding (valid
    False) takes none."""
    logits = X.reshape(-1, X.shape[-1]) @ Wg.t()
    if noise is not None:
        logits = logits + noise.to(logits.dtype).reshape(logits.shape)
    probs = torch.softmax(logits, dim=1)
    G = probs * topk_mask(probs, k)
    if renorm:
        G = G / G.sum(dim=1, keepdim=True)
    ch = choices(G, k)
    keep = torch.zeros_like(G)
    count = [0] * G.shape[1]
    rows = [r for r, v in enumerate(valid.reshape(-1).tolist()) if v]
    dropped = 0
    for j in range(k):
        for r in rows:
            e = int(ch[r, j])
            if count[e] < cap:
                keep[r, e] = 1.0
                count[e] += 1
            else:
                dropped += 1
    return G, probs, keep, rows, dropped


def balance_loss(G, probs, rows):
    """E sum_e f_e P_e over the routed rows: f = share whose first choice is e (no gradient), P = mean
    gate probability of e (the Switch Transformer's balance loss)."""
    E = G.shape[1]
    idx = torch.as_tensor(rows, dtype=torch.long)
    f = F.one_hot(choices(G[idx], 1)[:, 0], E).to(G.dtype).mean(dim=0)
    return E * (f * probs[idx].mean(dim=0)).sum()


def token_linear(x, W, b, G, keep):
    """y_i = sum_e keep_ie G_ie (W_e x_i + b_e) over x [nseq, S, in] (Eq. 4 with capacity dropping)."""
    g = (G * keep).reshape(x.shape[0], x.shape[1], -1)
    return torch.einsum("nse,nsi,eoi->nso", g, x, W) + g @ b


def encoder(c, P, x, attrs, mask, noise=None, keep=None, video=False, task=None, aux=None, train=True):
    """The encoder blocks over x [nseq, S, D]; noise / keep are the pass's tables (may be None); video:
    the pass has video segments (modality routing tells video tokens from image tokens by it); task: the
    pass's task id (task routing, task-specific weights)."""
    noise, keep = noise or {}, keep or {}
    patterns = sorted(set(int(v) for v in attrs.reshape(-1).tolist()))
    D, eps = c["dim"], c["ln_eps"]
    token = c["moe"] in PER_TOKEN
    valid = torch.diagonal(mask, dim1=1, dim2=2)  # a token that sees itself is not padding
    cap = math.ceil((c["capacity"] if train else c["eval_capacity"]) * c["topk"] * int(valid.sum()) / c["experts"])
    for l in range(c["layers"]):
        p = "blocks.%d." % l
        gates = layer_gates(c, l)
        G = {} if token else {
            g: gate(P, p + g, patterns, noise.get(p + g), c["topk"], eps, c["gate_renorm"], video, task, c["experts"])
            for g in gates}

        def route(g, h):  # token and context routing: the gate reads h, the input of its first linear
            if token and g in gates:
                if c["moe"] == "context":
                    h = torch.cat([h, context_pool(h, P[p + g + ".query"], mask)], dim=-1)
                Gt, probs, kept, rows, dropped = token_route(h, P[p + g + ".proj.weight"], valid, c["topk"],
                                                             c["gate_renorm"], cap, noise.get(p + g))
                G[g] = (Gt, kept)
                if aux is not None and rows:  # the closest call among the routed tokens' ranks 1..k+1
                    top = torch.sort(probs[torch.as_tensor(rows)].detach(), dim=1, descending=True).values
                    m = min(c["topk"] + 1, top.shape[1])
                    gaps = (top[:, :m - 1] - top[:, 1:m]).reshape(-1)
                    gaps = gaps[gaps > 0]  # exact ties (a zero input: uniform probabilities) break alike
                    if gaps.numel():
                        aux["min_gap"] = min(aux.get("min_gap", float("inf")), float(gaps.min()))
                if aux is not None and train:
                    aux["balance"].append(balance_loss(Gt, probs, rows))
                if aux is not None:
                    aux["dropped"] += dropped

        def lin(name, h, g):
            W, b = P[p + name + ".weight"], P[p + name + ".bias"]
            if g in G and token:
                return token_linear(h, W, b, *G[g])
            if g in G:
                return moe_linear(h, attrs, W, b, patterns, G[g])
            return h @ W.t() + b

        def kept(name):
            k = keep.get(p + name)
            return 1.0 if k is None else k.to(x.dtype).reshape(-1, 1, 1)

        h = F.layer_norm(x, (D,), P[p + "ln1.weight"], P[p + "ln1.bias"], eps)
        route("attn.gate", h)  # qkv and the projection follow one decision
        a = mhsa(lin("attn.qkv", h, "attn.gate"), mask, c["heads"])
        x = x + kept("attn") * P[p + "ls1"] * lin("attn.proj", a, "attn.gate")
        h2 = F.layer_norm(x, (D,), P[p + "ln2.weight"], P[p + "ln2.bias"], eps)
        route("mlp.gate1", h2)
        gl = F.gelu(lin("mlp.fc1", h2, "mlp.gate1"))
        route("mlp.gate2", gl)
        f = lin("mlp.fc2", gl, "mlp.gate2")
        x = x + kept("mlp") * P[p + "ls2"] * f
    return x


def features(c, P, rows):
    """norm -> proj (no bias) -> L2 normalisation x / max(||x||, 1e-12)."""
    h = F.layer_norm(rows, rows.shape[-1:], P["norm.weight"], P["norm.bias"], c["ln_eps"])
    h = h @ P["proj.weight"].t()
    return h / h.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def encode_pass(c, P, ps, dtype, read=None):
    """Features of the pass's read-out tokens: SPE of every sequence, or with read = (seq [M], pos [M])
    the token at position pos (SPE = 0, then the segments' tokens in order) of sequence seq."""
    x, attrs, mask = build_pass(P, ps, dtype)
    video = any(seg["modality"] == "video" for seg in ps["segments"])
    y = encoder(c, P, x, attrs, mask, ps.get("noise"), ps.get("keep"), video, ps.get("task"), ps.get("aux"))
    if read is None:
        return features(c, P, y[:, 0, :])
    seq, pos = (torch.as_tensor(t).long().reshape(-1) for t in read)
    if seq.shape != pos.shape:
        raise ValueError("read.seq and read.pos differ in length")
    if seq.numel() and (int(seq.min()) < 0 or int(seq.max()) >= y.shape[0] or int(pos.min()) < 0
                        or int(pos.max()) >= y.shape[1]):
        raise ValueError("a read-out lies outside the [%d, %d] tokens of the pass" % (y.shape[0], y.shape[1]))
    return features(c, P, y[seq, pos])


def vocab_pass(ids, spe_attr, text_attr, noise=None, task=None):
    """The vocabulary pass: candidate c is the sequence [SPE, ids[c]] (a full-attention text segment of
    length 1 at position 0, attribute byte text_attr; SPE with spe_attr), read at SPE."""
    ids = torch.as_tensor(ids).to(torch.int32).reshape(-1, 1)
    C = ids.shape[0]
    seg = {"modality": "text", "attn": FULL, "ids": ids, "lengths": torch.ones(C, dtype=torch.int32),
           "attrs": torch.full((C, 1), int(text_attr), dtype=torch.uint8)}
    return {"segments": [seg], "spe_attr": int(spe_attr), "noise": dict(noise or {}), "keep": {}, "task": task}


# ---- losses ----

def cross_entropy(logits, target, eps=0.1):
    """Mean over rows with target >= 0 of -(1-eps) log p[t] - eps/C Σ_c log p[c]."""
    logp = torch.log_softmax(logits, dim=1)
    ok = target >= 0
    t = target.long().clamp_min(0)
    per_row = -(1 - eps) * logp.gather(1, t.reshape(-1, 1)).squeeze(1) - eps * logp.mean(dim=1)
    return (per_row * ok.to(logits.dtype)).sum() / ok.sum().clamp_min(1)


def temperature(logit_scale):
    e = logit_scale.exp()
    return torch.where(e < 100.0, e, torch.full_like(e, 100.0))  # no gradient while capped


def forward(cfg, P, formulation, inp, tgt, labels=None, loss_weight=1.0, dtype=torch.float32, read=None,
            logq=None):
    """Returns dict loss [1], logits, input_features, target_features (P already in dtype).

    label: labels [B] index the target pass's sequences. pair: the passes are paired row by row.
    vocab-mlm / vocab-caption: tgt is a vocab_pass of the C candidates, read = (seq, pos) [M] the
    input pass's read-out tokens, labels [M] each read-out's candidate index, logq [C] (sampled mode,
    else None) a constant added to column c before the softmax; the logits returned exclude it."""
    c = normalize_config(cfg)
    vocab = formulation in VOCAB_FORMULATIONS
    if vocab and read is None:
        raise ValueError("%s needs the read-out tokens (read)" % formulation)
    aux = {"balance": [], "dropped": 0}  # token routing: every gate's balance loss, the dropped assignments
    u = encode_pass(c, P, dict(inp, aux=aux), dtype, read if vocab else None)
    v = encode_pass(c, P, dict(tgt, aux=aux), dtype)
    logits = temperature(P["logit_scale"]).reshape(()) * (u @ v.t())
    if formulation == "label" or vocab:
        scores = logits
        if vocab and logq is not None:
            logq = torch.as_tensor(logq).to(dtype).reshape(-1)
            if logq.shape[0] != v.shape[0]:
                raise ValueError("vocab.logq has %d entries for %d candidates" % (logq.shape[0], v.shape[0]))
            scores = logits + logq.reshape(1, -1)  # a constant: no gradient flows into it
        loss = cross_entropy(scores, torch.as_tensor(labels).long())
    elif formulation == "pair":
        if u.shape[0] != v.shape[0]:
            raise ValueError("pair passes must have the same number of sequences")
        diag = torch.arange(u.shape[0])
        loss = 0.5 * (cross_entropy(logits, diag) + cross_entropy(logits.t(), diag))
    else:
        raise ValueError("unknown formulation %r" % formulation)
    balance = sum(aux["balance"]) if aux["balance"] else torch.zeros((), dtype=logits.dtype)
    loss = (loss * float(loss_weight)).reshape(1)
    return {"loss": loss, "logits": logits, "input_features": u, "target_features": v,
            "balance": balance.reshape(1), "dropped": torch.tensor([float(aux["dropped"])], dtype=logits.dtype),
            "min_gap": aux.get("min_gap", float("inf")),
            # what training minimises: the task loss plus the balance loss of every token gate (weight c)
            "objective": loss + c["balance"] * balance}


def run(cfg, params, formulation, inp, tgt, labels=None, loss_weight=1.0, dtype=torch.float32, read=None,
        logq=None):
    """forward() plus grads {name: tensor} for every parameter (zeros where the loss does not use it)."""
    P = {k: v.detach().to(dtype).clone().requires_grad_(True) for k, v in params.items()}
    out = forward(cfg, P, formulation, inp, tgt, labels, loss_weight, dtype, read, logq)
    names = list(P)
    gs = torch.autograd.grad(out["objective"].sum(), [P[n] for n in names], allow_unused=True)
    grads = {n: (torch.zeros_like(P[n]) if g is None else g).detach() for n, g in zip(names, gs)}
    return {k: v.detach() if torch.is_tensor(v) else v for k, v in out.items()}, grads
