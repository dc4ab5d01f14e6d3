# Checks an oracle file written by upmoe-model-oracle: rebuilds its passes from the file's params,
# inputs, noise and keep tables, recomputes loss, logits, features and every gradient with
# reference.py (float64 by default) and compares tensor by tensor.
"""compare(path) -> [(name, max_abs_err, max_abs_ref, ok)], worst first.

Rule per tensor: max|c - r| <= 1e-4 * max(max|r|, 1e-6). A missing output, a parameter without its
gradient, a missing or extra parameter, a shape mismatch or a top-k decision too close to call (the
k-th and (k+1)-th gate probability within TIE_GAP) is a failing entry (error = inf)."""

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


def build_passes(tensors, meta):
    """(cfg, formulation, params, input pass, target pass, labels, loss weight) from a loaded file."""
    cfg = _json(meta["config"])
    formulation = str(meta["formulation"])
    segmeta = parse_segments(meta.get("segments"))
    spe = parse_spe_attr(meta["spe_attr"])
    params = {n: _tensor(tensors[n]) for n in ref.param_shapes(cfg) if n in tensors}
    passes = {}
    for si, side in enumerate(_SIDES):
        segs, i = [], 0
        while any(k.startswith("%s.%d." % (side, i)) for k in tensors):
            m = segmeta[side][i] if i < len(segmeta[side]) else {}
            segs.append(_segment(tensors, "%s.%d." % (side, i), m))
            i += 1
        if not segs:
            raise ValueError("the file has no %s segments" % side)
        noise = {k[len("noise.%s." % side):]: _tensor(v) for k, v in tensors.items()
                 if k.startswith("noise.%s." % side)}
        keep = {k[len("keep.%s." % side):]: _tensor(v) for k, v in tensors.items()
                if k.startswith("keep.%s." % side)}
        passes[side] = {"segments": segs, "spe_attr": spe[si], "noise": noise, "keep": keep}
    labels = _tensor(tensors["labels"]) if "labels" in tensors else None
    weight = float(_json(meta.get("loss_weight", 1.0)))
    if abs(float(_json(meta.get("label_smoothing", 0.1))) - 0.1) > 1e-12:
        raise ValueError("label_smoothing %s: docs/model.md fixes it at 0.1" % meta["label_smoothing"])
    return cfg, formulation, params, passes["input"], passes["target"], labels, weight


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
    cfg, formulation, params, inp, tgt, labels, weight = build_passes(tensors, meta)
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
        elif not k.startswith(("grad.", "noise.", "keep.", "out.", "input.", "target.")) and k != "labels" \
                and k not in shapes:
            res.append((k + " (unknown tensor)", float("inf"), float("nan"), False))
    res += tie_check(cfg, params, {"input": inp, "target": tgt})
    out, grads = ref.run(cfg, params, formulation, inp, tgt, labels, weight, dtype)
    for name in OUTPUTS:
        res.append(_entry(name, tensors.get(name), out[name[4:]]))
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
        for l in range(c["layers"]):
            for g in ref.layer_gates(c, l):
                name = "blocks.%d.%s" % (l, g)
                probs = ref.gate_probs(P, name, pats, ps["noise"].get(name), c["ln_eps"])
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
