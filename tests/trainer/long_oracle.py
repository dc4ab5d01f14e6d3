"""The long-horizon oracle: replays a run written by `upmoe-train --dump-batches DIR` in PyTorch.

It starts from the run's own initial weights (DIR/initial.safetensors) and trains on the very batches the
run trained on (DIR/step-*.safetensors, with their gate noise), but everything else is independent of the
C code: the model and losses are tests/model/reference.py (docs/model.md, differentiated by autograd),
the optimizer is torch.optim.AdamW, clipping is torch.nn.utils.clip_grad_norm_, and the weight-decay mask
and the schedule are written here from docs/training.md. What it catches that a one-step oracle cannot:
the optimizer's state over time, the schedule, the decay mask, and anything that makes the C trainer
drift from the recipe step after step.

    /usr/bin/python3 tests/trainer/long_oracle.py DIR [--float32] [--csv OUT]

prints step, upmoe's loss, the replay's loss, |difference|, and both gradient norms."""
import argparse
import glob
import json
import math
import os
import re
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "model"))
import oracle_compare  # noqa: E402
import reference as ref  # noqa: E402
from safetensors_io import load  # noqa: E402

# docs/training.md: decay 0.05 on the Linear weights only (patch embedding, qkv, attention output, fc1, fc2,
# the feature projection); not on norms, biases, embeddings, gates, LayerScale or the temperature.
_DECAY = re.compile(r"^(embed\.patch\.weight|proj\.weight|blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.weight)$")


def decays(name):
    return bool(_DECAY.match(name))


def learning_rate(o, step):
    """Linear warmup over warmup_steps (step + 1 of them at step), then cosine from lr to min_lr."""
    lr, lo, warm, total = o["lr"], o["min_lr"], int(o["warmup_steps"]), int(o["total_steps"])
    if step < warm:
        return lr * (step + 1) / warm
    span = total - warm
    t = min(max((step - warm) / span, 0.0), 1.0) if span > 0 else 1.0
    return lo + 0.5 * (lr - lo) * (1 + math.cos(math.pi * t))


def replay(folder, dtype=torch.float64, on_step=None):
    """[(step, upmoe loss, replay loss, upmoe grad norm, replay grad norm)] for every step file of folder."""
    init, meta = load(os.path.join(folder, "initial.safetensors"))
    cfg, oc = json.loads(meta["config"]), json.loads(meta["optim"])
    names = list(ref.param_shapes(cfg))
    P = {n: init[n].to(dtype).clone().requires_grad_(True) for n in names}
    groups = [{"params": [P[n] for n in names if decays(n)], "weight_decay": oc["weight_decay"]},
              {"params": [P[n] for n in names if not decays(n)], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=oc["lr"], betas=(oc["beta1"], oc["beta2"]), eps=oc["eps"])
    rows = []
    for path in sorted(glob.glob(os.path.join(folder, "step-*.safetensors"))):
        tensors, m = load(path)
        step = int(m["step"])
        case = oracle_compare.build_passes(tensors, m)
        out = ref.forward(case["cfg"], P, case["formulation"], case["input"], case["target"], case["labels"],
                          case["weight"], dtype, case["read"], case["logq"])
        opt.zero_grad(set_to_none=False)
        out["objective"].sum().backward()  # the loss, plus token routing's balance losses
        for p in P.values():  # AdamW skips a parameter without a gradient; the C trainer updates every one
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        norm = float(torch.nn.utils.clip_grad_norm_(list(P.values()), oc["clip"])) if oc["clip"] > 0 else \
            float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in P.values())))
        for g in opt.param_groups:
            g["lr"] = learning_rate(oc, step)
        opt.step()
        loss = float(out["loss"]) / case["weight"]
        row = (step, float(m["loss"]), loss, float(m["grad_norm"]), norm)
        rows.append(row)
        if on_step:
            on_step(row)
    return rows


def moving_average(xs, k):
    return [sum(xs[max(0, i - k + 1):i + 1]) / len(xs[max(0, i - k + 1):i + 1]) for i in range(len(xs))]


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--float32", action="store_true", help="replay in float32 (default float64)")
    ap.add_argument("--csv", help="write step,upmoe,replay,upmoe_gnorm,replay_gnorm here")
    a = ap.parse_args(argv)
    out = open(a.csv, "w") if a.csv else None
    if out:
        out.write("step,upmoe_loss,replay_loss,upmoe_grad_norm,replay_grad_norm\n")

    def show(r):
        print("step %4d  upmoe %.6f  replay %.6f  |d| %.2e  gnorm %.4g / %.4g" % (r[0], r[1], r[2], abs(r[1] - r[2]),
                                                                                r[3], r[4]), flush=True)
        if out:
            out.write("%d,%.9g,%.9g,%.9g,%.9g\n" % r)
    replay(a.dir, torch.float32 if a.float32 else torch.float64, show)
    if out:
        out.close()


if __name__ == "__main__":
    main(sys.argv[1:])
