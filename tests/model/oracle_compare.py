# Checks an oracle file written by upmoe-model-oracle: rebuilds its passes from the file's params,
# inputs, noise and keep tables (vocabulary formulations: the read-outs and the candidates' pass),
# recomputes loss, logits, features and every gradient with reference.py (float64 by default) and
# compares tensor by tensor.
"""compare(path) -> [(name, max_abs_err, max_abs_ref, ok)], worst first.

Rule per tensor: max|c - r| <= 1e-4 * max(max|r|, 1e-6). A missing output, a parameter without its
gradient, a missing or extra parameter, a shape mismatch, a top-k decision too close to call (the
k-th and (k+1)-th gate probability within TIE_GAP) or a vocabulary read-out that breaks its
formulation's rules (read_check) is a failing entry (error = inf)."""

import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "trainer"))

import reference as ref  # noqa: E402
from safetensors_io import load  # noqa: E402

RTOL = 1e-4
TIE_GAP = 1e-5  # least difference between the k-th and (k+1)-th gate probability
OUTPUTS = ("out.loss", "out.logits", "out.input_features", "out.target_features")
VOCAB_TENSORS = ("read.seq", "read.pos", "read.target", "vocab.ids", "vocab.logq")
_SIDES = ("input", "target")


def _tensor(x):
    if isinstance(x, torch.Tensor):
        return x
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x)))


def _json(v):
    if isinstance(v, (bytes, str)):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def parse_spe_attr(v):
    """[input byte, target byte] from a JSON list, a {"input", "target"} object or "a,b"."""
    v = _json(v)
    if isinstance(v, dict):
        return [int(v["input"]), int(v["target"])]
    if isinstance(v, str):
        v = [s for s in v.replace("[", " ").replace("]", " ").replace(",", " ").split()]
    v = [int(x) for x in v]
    if len(v) != 2:
        raise ValueError("spe_attr must hold two bytes, got %r" % (v,))
    return v


def parse_segments(v):
    """{"input": [meta...], "target": [meta...]} from an object by side or a list of two lists."""
    v = _json(v)
    if v is None:
        return {"input": [], "target": []}
    if isinstance(v, dict):
        return {s: list(v.get(s) or []) for s in _SIDES}
    if isinstance(v, list) and len(v) == 2 and all(isinstance(x, list) for x in v):
        return {"input": v[0], "target": v[1]}
    raise ValueError("segments metadata must be per side, got %r" % (v,))


def _modality(meta, default):
    return ref.modality_kind(meta.get("modality", meta.get("kind", default)))


def _segment(tensors, prefix, meta):
    """One segment dict for reference.py from tensors {prefix}pixels|ids|lengths|attrs and its metadata
    (modality, also read from "kind", and attn; when absent, text is full attention and pixels are an
    image if T == 1)."""
    seg = {"attrs": _tensor(tensors[prefix + "attrs"])}
    if prefix + "pixels" in tensors:
        seg["pixels"] = _tensor(tensors[prefix + "pixels"])
        T = seg["pixels"].shape[1]
        seg["modality"] = _modality(meta, "image" if T == 1 else "video")
        seg["attn"] = ref.FULL
        if seg["modality"] == "text":
            raise ValueError("%s: pixels for a text segment" % prefix)
        for key, dim in (("T", 1), ("H", 3), ("W", 4)):
            if key in meta and int(meta[key]) != seg["pixels"].shape[dim]:
                raise ValueError("%s: metadata %s=%s, tensor shape %s" % (prefix, key, meta[key],
                                                                          list(seg["pixels"].shape)))
    else:
        seg["ids"] = _tensor(tensors[prefix + "ids"])
        seg["lengths"] = _tensor(tensors[prefix + "lengths"])
        seg["modality"] = _modality(meta, "text")
        seg["attn"] = ref.attn_kind(meta.get("attn", "full"))
        if seg["modality"] != "text":
            raise ValueError("%s: ids for a %s segment" % (prefix, seg["modality"]))
        if "L" in meta and int(meta["L"]) != seg["ids"].shape[1]:
            raise ValueError("%s: metadata L=%s, ids shape %s" % (prefix, meta["L"], list(seg["ids"].shape)))
    if tuple(seg["attrs"].shape) != (ref.segment_nseq(seg), ref.segment_tokens(seg)):
        raise ValueError("%sattrs has shape %s" % (prefix, list(seg["attrs"].shape)))
    return seg


def _tables(tensors, kind, side):
    pre = "%s.%s." % (kind, side)
    return {k[len(pre):]: _tensor(v) for k, v in tensors.items() if k.startswith(pre)}


def _side_segments(tensors, side, segmeta):
    segs, i = [], 0
    while any(k.startswith("%s.%d." % (side, i)) for k in tensors):
        m = segmeta[side][i] if i < len(segmeta[side]) else {}
        segs.append(_segment(tensors, "%s.%d." % (side, i), m))
        i += 1
    return segs


def _vocab_side(tensors, meta):
    """The read-outs, their targets, the candidates' pass and logq of a vocab-mlm / vocab-caption file."""
    for k in VOCAB_TENSORS[:4]:
        if k not in tensors:
            raise ValueError("a %s file needs %s" % (meta["formulation"], k))
    va = _json(meta.get("vocab_attr"))
    if not isinstance(va, list) or len(va) != 2:
        raise ValueError("vocab_attr must be the JSON list [spe_attr, text_attr], got %r" % (va,))
    seq, pos, target = (_tensor(tensors["read." + k]).long().reshape(-1) for k in ("seq", "pos", "target"))
    ids = _tensor(tensors["vocab.ids"]).long().reshape(-1)
    if not seq.shape == pos.shape == target.shape:
        raise ValueError("read.seq, read.pos, read.target differ in length")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= ids.numel()):
        raise ValueError("read.target indexes outside the %d candidates" % ids.numel())
    logq = _tensor(tensors["vocab.logq"]) if "vocab.logq" in tensors else None
    if logq is not None and tuple(logq.shape) != (ids.numel(),):
        raise ValueError("vocab.logq has shape %s for %d candidates" % (list(logq.shape), ids.numel()))
    vpass = ref.vocab_pass(ids, int(va[0]), int(va[1]), _tables(tensors, "noise", "target"), _task(meta))
    vpass["keep"] = _tables(tensors, "keep", "target")  # none in vocab files; applied if a writer adds them
    return vpass, (seq, pos), target, logq


def _task(meta):
    """The passes' task id (task routing, task-specific weights), or None."""
    t = _json(meta.get("task_id"))
    return None if t is None else int(t)


def build_passes(tensors, meta):
    """The case of a loaded file: dict cfg, formulation, params, input and target pass, labels (label:
    the class of each sample; vocab: each read-out's candidate index), weight, read ((seq, pos) or
    None), logq (or None). A vocab file's target pass is the candidates' pass, gated with the
    noise.target tables."""
    cfg = _json(meta["config"])
    formulation = str(meta["formulation"])
    vocab = formulation in ref.VOCAB_FORMULATIONS
    segmeta = parse_segments(meta.get("segments"))
    spe = parse_spe_attr(meta["spe_attr"])
    params = {n: _tensor(tensors[n]) for n in ref.param_shapes(cfg) if n in tensors}
    case = {"cfg": cfg, "formulation": formulation, "params": params, "read": None, "logq": None,
            "labels": _tensor(tensors["labels"]) if "labels" in tensors else None}
    for si, side in enumerate(_SIDES):
        segs = _side_segments(tensors, side, segmeta)
        if vocab and side == "target":
            if segs:
                raise ValueError("a %s file has no target segments (its candidates are vocab.ids)" % formulation)
            case["target"], case["read"], case["labels"], case["logq"] = _vocab_side(tensors, meta)
            continue
        if not segs:
            raise ValueError("the file has no %s segments" % side)
        case[side] = {"segments": segs, "spe_attr": spe[si], "noise": _tables(tensors, "noise", side),
                      "keep": _tables(tensors, "keep", side), "task": _task(meta)}
    case["weight"] = float(_json(meta.get("loss_weight", 1.0)))
    if abs(float(_json(meta.get("label_smoothing", 0.1))) - 0.1) > 1e-12:
        raise ValueError("label_smoothing %s: docs/model.md fixes it at 0.1" % meta["label_smoothing"])
    return case


def run_case(case, dtype=torch.float64):
    """reference.run on a case from build_passes."""
    return ref.run(case["cfg"], case["params"], case["formulation"], case["input"], case["target"],
                   case["labels"], case["weight"], dtype, case["read"], case["logq"])


def read_check(case):
    """Failing entries for vocabulary read-outs that break the formulation's rules: every read-out is a
    valid (not padding) token, read once; vocab-mlm reads text tokens; vocab-caption reads every valid
    query token j of every sequence, and its target is token j of the causal text (docs/training.md,
    "A step")."""
    if case["formulation"] not in ref.VOCAB_FORMULATIONS:
        return []
    segs = case["input"]["segments"]
    nseq = ref.segment_nseq(segs[0])
    kinds, segidx, pos, valid = ref.token_layout(segs, nseq)
    seq, rpos = case["read"]
    bad = []
    pairs = list(zip(seq.tolist(), rpos.tolist()))
    if len(set(pairs)) != len(pairs):
        bad.append("a token is read out twice")
    for m, (b, t) in enumerate(pairs):
        if not (0 <= b < nseq and 0 <= t < len(kinds)):
            bad.append("read-out %d at (%d, %d) is outside the pass" % (m, b, t))
        elif kinds[t] == "spe" or not bool(valid[b, t]):
            bad.append("read-out %d at (%d, %d) is %s" % (m, b, t, "SPE" if t == 0 else "a padding token"))
        elif case["formulation"] == "vocab-mlm" and segs[segidx[t]]["modality"] != "text":
            bad.append("read-out %d at (%d, %d) is not a text token" % (m, b, t))
        elif case["formulation"] == "vocab-caption" and kinds[t] != ref.QUERY:
            bad.append("read-out %d at (%d, %d) is not a caption query token" % (m, b, t))
    if case["formulation"] == "vocab-caption" and not bad:
        bad += _caption_targets(case, kinds, segidx, pos, valid, pairs)
    return [("read-outs: " + msg, float("inf"), float("nan"), False) for msg in bad[:8]]


def _caption_targets(case, kinds, segidx, pos, valid, pairs):
    segs = case["input"]["segments"]
    causal = [i for i, g in enumerate(segs) if g["modality"] == "text" and g["attn"] == ref.CAUSAL]
    if len(causal) != 1:
        return ["a vocab-caption input needs exactly one causal text segment, it has %d" % len(causal)]
    ids = segs[causal[0]]["ids"].long()
    cand = case["target"]["segments"][0]["ids"].long().reshape(-1)
    bad = []
    for m, (b, t) in enumerate(pairs):
        j = pos[t]
        if j >= ids.shape[1] or j >= int(segs[causal[0]]["lengths"][b]):
            bad.append("read-out %d: query %d of sequence %d has no caption token %d" % (m, j, b, j))
            continue
        want, got = int(ids[b, j]), int(cand[int(case["labels"][m])])
        if want != got:
            bad.append("read-out %d: query %d of sequence %d targets token %d, caption token %d is %d"
                       % (m, j, b, got, j, want))
    queries = {(b, t) for b in range(valid.shape[0]) for t in range(len(kinds))
               if kinds[t] == ref.QUERY and bool(valid[b, t])}
    missing = queries - set(pairs)
    if missing:
        bad.append("%d valid query tokens are not read out, e.g. (seq, pos) %s" % (len(missing), min(missing)))
    return bad


def _entry(name, c, r):
    if c is None:
        return (name + " (missing in file)", float("inf"), float("nan"), False)
    c = _tensor(c).to(torch.float64)
    r = r.to(torch.float64)
    if tuple(c.shape) != tuple(r.shape):
        return ("%s (shape %s, expected %s)" % (name, list(c.shape), list(r.shape)), float("inf"),
                float("nan"), False)
    ref_max = r.abs().max().item() if r.numel() else 0.0
    err = (c - r).abs().max().item() if r.numel() else 0.0
    ok = bool(err <= RTOL * max(ref_max, 1e-6))  # False for NaN
    return (name, err, ref_max, ok)


def compare_loaded(tensors, meta, dtype=torch.float64):
    case = build_passes(tensors, meta)
    cfg, params = case["cfg"], case["params"]
    vocab = case["formulation"] in ref.VOCAB_FORMULATIONS
    shapes = ref.param_shapes(cfg)
    res = []
    for n, shp in shapes.items():
        if n not in params:
            res.append((n + " (parameter missing in file)", float("inf"), float("nan"), False))
        elif list(params[n].shape) != shp:
            res.append(("%s (shape %s, expected %s)" % (n, list(params[n].shape), shp), float("inf"),
                        float("nan"), False))
    if res:
        return res
    c = ref.normalize_config(cfg)
    tables = {"%s.%s.blocks.%d.%s" % (t, side, l, x) for side in _SIDES for l in range(c["layers"])
              for t, xs in (("noise", ref.layer_gates(c, l)), ("keep", ("attn", "mlp"))) for x in xs}
    for k in tensors:
        if k.startswith("grad.") and k[5:] not in shapes:
            res.append((k + " (not a parameter)", float("inf"), float("nan"), False))
        elif k.startswith(("noise.", "keep.")) and k not in tables:
            res.append((k + " (no such gate or branch)", float("inf"), float("nan"), False))
        elif k.startswith(("read.", "vocab.")) and not (vocab and k in VOCAB_TENSORS):
            res.append((k + " (not a tensor of a %s file)" % case["formulation"], float("inf"), float("nan"),
                        False))
        elif k == "labels" and vocab:
            res.append((k + " (a vocab file's targets are read.target)", float("inf"), float("nan"), False))
        elif not k.startswith(("grad.", "noise.", "keep.", "out.", "input.", "target.", "read.", "vocab.")) \
                and k != "labels" and k not in shapes:
            res.append((k + " (unknown tensor)", float("inf"), float("nan"), False))
    res += tie_check(cfg, params, {"input": case["input"], "target": case["target"]})
    res += read_check(case)
    out, grads = run_case(case, dtype)
    for name in OUTPUTS:
        res.append(_entry(name, tensors.get(name), out[name[4:]]))
    for name in ("out.balance", "out.dropped"):  # token routing's statistics, where the file has them
        if name in tensors:
            res.append(_entry(name, tensors[name], out[name[4:]]))
    if out["min_gap"] < TIE_GAP:  # a token gate too close to call (see tie_check)
        res.append(("token gate near-tie (gap %.2e)" % out["min_gap"], float("inf"), float("nan"), False))
    for n in shapes:
        res.append(_entry("grad." + n, tensors.get("grad." + n), grads[n]))
    return sorted(res, key=_badness, reverse=True)


def tie_check(cfg, params, passes, min_gap=TIE_GAP):
    """Failing entries for gate decisions too close to call: when the k-th and (k+1)-th probability of
    a pattern differ by less than min_gap, float32 rounding may pick another expert set, and the file
    does not test anything reliably (the generator must choose other parameters or seed)."""
    c = ref.normalize_config(cfg)
    k, E = c["topk"], c["experts"]
    if k >= E:
        return []
    P = {n: t.to(torch.float64) for n, t in params.items()}
    res = []
    for side, ps in passes.items():
        pats = ref.pass_patterns(ps)
        video = any(seg["modality"] == "video" for seg in ps["segments"])
        for l in range(c["layers"]):
            for g in ref.layer_gates(c, l) if c["moe"] not in ("task-specific",) + ref.PER_TOKEN else ():  # per token: run
                name = "blocks.%d.%s" % (l, g)
                probs = ref.gate_probs(P, name, pats, ps["noise"].get(name), c["ln_eps"], video, ps.get("task"))
                top = torch.sort(probs, dim=1, descending=True).values
                for p, gap in zip(pats, (top[:, k - 1] - top[:, k]).tolist()):
                    if gap < min_gap:
                        res.append(("gate near-tie: %s %s pattern %d (gap %.2e)" % (side, name, p, gap),
                                    float("inf"), float("nan"), False))
    return res


def _badness(e):
    _, err, ref_max, ok = e
    if err != err or err == float("inf"):
        return float("inf")
    return err / (RTOL * max(ref_max if ref_max == ref_max else 0.0, 1e-6))


def compare(path, dtype=torch.float64):
    tensors, meta = load(path)
    return compare_loaded(tensors, meta or {}, dtype)


def summary(results, worst=8):
    bad = [r for r in results if not r[3]]
    lines = ["%d tensors, %d failing; worst:" % (len(results), len(bad))]
    for name, err, rmax, ok in results[:worst]:
        lines.append("  %-4s %-48s err %.3e  max|ref| %.3e  err/tol %.3g" % (
            "ok" if ok else "FAIL", name, err, rmax, _badness((name, err, rmax, ok))))
    return "\n".join(lines)


def main(argv):
    if len(argv) != 2:
        print("usage: oracle_compare.py FILE.safetensors", file=sys.stderr)
        return 2
    res = compare(argv[1])
    print(summary(res))
    return 0 if all(r[3] for r in res) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
