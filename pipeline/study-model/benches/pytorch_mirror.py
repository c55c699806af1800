"""PyTorch mirror of `study_model::gpt` + AdamW, for the side-by-side training-step benchmark.

`make bench-pytorch` runs it in interleaved rounds (`BENCH_ROUNDS`, default 3); one round by hand:

    BENCH_FIXTURE=F BENCH_JSON=run.jsonl cargo bench -p study-model --bench train
    cat run.jsonl >> ours.jsonl
    python pipeline/study-model/benches/pytorch_mirror.py measure --fixture F --out theirs.jsonl
    python pipeline/study-model/benches/pytorch_mirror.py table --ours ours.jsonl \
        --theirs theirs.jsonl

`measure` first checks parity: the mirror loads the fixture's weights (written by our bench at the
`cpu` shape) and must reproduce our logits, loss and every gradient within tolerance, or it exits 1
and times nothing — a race against a different model would mean nothing. Then it times one
training step (forward + loss, backward, AdamW) at every bench shape with 1 and 2 threads and
appends one JSON line per cell to `--out`. `table` pairs the k-th run of each cell in ours with
the k-th in theirs and prints one markdown table: medians over the rounds, the ratio of the
medians and the range of the per-round ratios. Rounds matter on a shared machine: its speed can
drift by a third within minutes, so ours and PyTorch are timed close together, several times,
never all of one and then all of the other.

The mirror is eager PyTorch written op for op after `gpt.rs` (the official block: the residual
stream is replaced by `ln_1(x)`, no LayerNorm before the MLP, tanh GELU, fixed sinusoidal
positions, an untied bias-free head), `torch.optim.AdamW` with our hyper-parameters and our two
weight-decay groups. Nothing is compiled or fused, as in the official `model.py`.
"""

import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn


class Block(nn.Module):
    def __init__(self, d, n_head, hidden):
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(d)
        self.attn = nn.Module()
        self.attn.c_attn = nn.Linear(d, 3 * d)
        self.attn.c_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d)  # exists, never used (as in the official model)
        self.c_fc = nn.Linear(d, hidden)
        self.c_proj = nn.Linear(hidden, d)

    def forward(self, x, mask):
        b, t, d = x.shape
        hs = d // self.n_head
        u = self.ln_1(x)
        q, k, v = self.attn.c_attn(u).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_head, hs).transpose(1, 2) for z in (q, k, v))
        att = F.softmax((q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs)) + mask[:t, :t], dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        a = u + self.attn.c_proj(y)
        return a + self.c_proj(F.gelu(self.c_fc(a), approximate="tanh"))


class Gpt(nn.Module):
    def __init__(self, n_layer, n_head, n_embd, block_size, vocab_size, mlp_ratio=4, **_):
        super().__init__()
        d = n_embd
        self.transformer = nn.Module()
        self.transformer.wte = nn.Embedding(vocab_size, d)
        self.transformer.h = nn.ModuleList(
            Block(d, n_head, mlp_ratio * d) for _ in range(n_layer)
        )
        self.transformer.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab_size, bias=False)
        pos = torch.arange(block_size, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
        pe = torch.zeros(block_size, d)
        pe[:, 0::2] = torch.sin(pos * freq)
        pe[:, 1::2] = torch.cos(pos * freq)
        self.register_buffer("pe", pe, persistent=False)
        mask = torch.full((block_size, block_size), float("-inf")).triu(1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, idx):
        t = idx.shape[1]
        x = self.transformer.wte(idx) + self.pe[:t]
        for block in self.transformer.h:
            x = block(x, self.mask)
        return self.lm_head(self.transformer.ln_f(x))


def loss_of(model, x, y, pad):
    logits = model(x)
    return F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1), ignore_index=pad)


def decays(name):
    linear = ("attn.c_attn", "attn.c_proj", ".c_fc", ".c_proj", "lm_head")
    return name.endswith(".weight") and any(part in name for part in linear)


def adamw(model, lr=1e-4):
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if decays(n)], "weight_decay": 1e-4},
        {"params": [p for n, p in named if not decays(n)], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)


def parity(fixture):
    cfg = json.load(open(f"{fixture}/config.json"))
    model = Gpt(**cfg)
    missing, unexpected = model.load_state_dict(load_file(f"{fixture}/model.safetensors"), strict=False)
    if missing or unexpected:
        sys.exit(f"parity: state dict differs: missing {missing}, unexpected {unexpected}")
    want = load_file(f"{fixture}/fixture.safetensors")
    x, y = want["x"], want["y"]
    logits = model(x)
    loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1), ignore_index=cfg["pad"])
    loss.backward()
    worst = {
        "logits": (logits - want["logits"]).abs().max().item(),
        "loss": abs(loss.item() - want["loss"].item()),
    }
    grad_rel = 0.0
    for name, p in model.named_parameters():
        g = want.get(f"grad.{name}")
        if g is None:
            if p.grad is not None and p.grad.abs().max() > 0:
                sys.exit(f"parity: {name} has a gradient here but none in ours")
            continue
        scale = g.abs().max().item() + 1e-12
        grad_rel = max(grad_rel, (p.grad - g).abs().max().item() / scale)
    worst["gradients (max |Δ| / max |g| per tensor)"] = grad_rel
    ok = worst["logits"] < 1e-4 and worst["loss"] < 1e-5 and grad_rel < 1e-3
    print("parity with ours at the cpu shape:", ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    if not ok:
        sys.exit("parity FAILED: the mirror is not our model; no times are reported")
    return cfg["shapes"]


def flops_per_token(s, t, vocab):
    d, hidden = s["n_embd"], 4 * s["n_embd"]
    per_block = 4 * d * d + 2 * d * hidden
    matmul = s["n_layer"] * per_block + vocab * d
    return 2.0 * matmul + 4.0 * s["n_layer"] * t * d


def matmul_peak(n=1024):
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        (a @ b).sum().item()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def bench(s, vocab, pad, steps):
    t = s["block_size"]
    model = Gpt(s["n_layer"], s["n_head"], s["n_embd"], t, vocab)
    opt = adamw(model)
    i = torch.arange(s["batch"] * t)
    x = ((i * 7 + 3) % vocab).view(s["batch"], t)
    y = ((i * 11 + 5) % vocab).view(s["batch"], t)
    phase = [0.0, 0.0, 0.0]

    def step(acc):
        t0 = time.perf_counter()
        loss = loss_of(model, x, y, pad)
        loss.item()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        if acc:
            phase[0] += t1 - t0
            phase[1] += t2 - t1
            phase[2] += t3 - t2

    for _ in range(2):
        step(False)
    start = time.perf_counter()
    for _ in range(steps):
        step(True)
    secs = (time.perf_counter() - start) / steps
    gflops = 3 * flops_per_token(s, t, vocab) * s["batch"] * t / secs / 1e9
    return {
        "steps_per_s": 1 / secs,
        "gflops": gflops,
        "fwd_ms": 1e3 * phase[0] / steps,
        "bwd_ms": 1e3 * phase[1] / steps,
        "opt_ms": 1e3 * phase[2] / steps,
    }


def measure(args):
    torch.manual_seed(0)
    shapes = {s["name"]: s for s in parity(args.fixture)}
    cfg = json.load(open(f"{args.fixture}/config.json"))
    with open(args.out, "a") as out:
        for n in (int(v) for v in args.threads.split(",")):
            torch.set_num_threads(n)
            peak = matmul_peak()
            for name in args.shapes.split(","):
                row = bench(shapes[name], cfg["vocab_size"], cfg["pad"], args.steps)
                row.update(shape=name, threads=n, peak_gflops=peak, steps=args.steps)
                row["torch"] = torch.__version__
                out.write(json.dumps(row) + "\n")


def runs(path):
    """(shape, threads) -> that cell's rows, in the order the rounds wrote them."""
    cells = {}
    for line in open(path):
        r = json.loads(line)
        cells.setdefault((r["shape"], r["threads"]), []).append(r)
    return cells


def table(args):
    ours, theirs = runs(args.ours), runs(args.theirs)
    cells = [k for k in theirs if k in ours]
    if not cells:
        sys.exit(f"table: no cell is in both {args.ours} and {args.theirs}")
    shapes = {}
    if args.fixture:
        shapes = {s["name"]: s for s in json.load(open(f"{args.fixture}/config.json"))["shapes"]}

    def med(rows, key):
        return statistics.median(r[key] for r in rows)

    def share(rows):
        return 100 * statistics.median(r["gflops"] / r["peak_gflops"] for r in rows)

    order = {"cpu": 0, "cpu-l18": 1, "paper": 2}
    rounds = min(len(ours[k]) for k in cells), max(len(ours[k]) for k in cells)
    print(
        f"PyTorch {theirs[cells[0]][0]['torch']}; medians of {rounds[0]}"
        + (f"–{rounds[1]}" if rounds[1] != rounds[0] else "")
        + " interleaved rounds; per-round ratios min–max"
    )
    print(
        "| shape | threads | ours steps/s | PyTorch steps/s | ours / PyTorch | per round "
        "| ours GFLOP/s (% of peak) | PyTorch GFLOP/s (% of peak) "
        "| fwd / bwd / opt ms, ours vs PyTorch |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for shape, n in sorted(cells, key=lambda k: (k[1], order.get(k[0], len(order)), k[0])):
        o, t = ours[(shape, n)], theirs[(shape, n)]
        per_round = [a["steps_per_s"] / b["steps_per_s"] for a, b in zip(o, t)]
        s = shapes.get(shape)
        label = shape if s is None else (
            f"{shape} ({s['n_layer']}×{s['n_head']}×{s['n_embd']}, {s['batch']}×{s['block_size']})"
        )
        split = " / ".join(f"{med(o, k):.0f}" for k in ("fwd_ms", "bwd_ms", "opt_ms"))
        split += " vs " + " / ".join(f"{med(t, k):.0f}" for k in ("fwd_ms", "bwd_ms", "opt_ms"))
        print(
            f"| {label} | {n} | {med(o, 'steps_per_s'):.2f} | {med(t, 'steps_per_s'):.2f} "
            f"| **{med(o, 'steps_per_s') / med(t, 'steps_per_s'):.2f}** "
            f"| {min(per_round):.2f}–{max(per_round):.2f} "
            f"| {med(o, 'gflops'):.1f} ({share(o):.0f}%) "
            f"| {med(t, 'gflops'):.1f} ({share(t):.0f}%) | {split} |"
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="check parity, then time PyTorch and append JSON lines")
    m.add_argument("--fixture", required=True, help="folder our bench wrote (BENCH_FIXTURE)")
    m.add_argument("--out", required=True, help="JSON lines to append PyTorch's cells to")
    m.add_argument("--threads", default="1,2")
    m.add_argument("--shapes", default="cpu,cpu-l18,paper")
    m.add_argument("--steps", type=int, default=5)
    t = sub.add_parser("table", help="medians of ours and PyTorch's rounds as one markdown table")
    t.add_argument("--ours", required=True, help="our bench's JSON lines, appended per round")
    t.add_argument("--theirs", required=True, help="`measure`'s JSON lines")
    t.add_argument("--fixture", help="the fixture folder, for the shapes' dimensions in the labels")
    args = ap.parse_args()
    if args.command == "measure":
        measure(args)
    else:
        table(args)


if __name__ == "__main__":
    main()
