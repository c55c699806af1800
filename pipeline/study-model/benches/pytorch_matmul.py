"""PyTorch's f32 `x @ w.T` beside candle's, at the shapes the model multiplies.

Our side is `examples/probe_matmul.rs` (candle's matmul, the `gemm` crate underneath); both time
the same products the same way (three warm-up calls, then 2 GFLOP of repeats) and print the same
markdown table. With `--ours` this script runs the two alternately, `--rounds` times at 1 and at 2
threads (this machine's speed drifts by a third within minutes), and prints the medians side by
side with the per-round range of the time ratio:

    cargo build --release -p study-model --example probe_matmul
    tools/bench-pytorch/bin/python pipeline/study-model/benches/pytorch_matmul.py \\
        --ours $CARGO_TARGET_DIR/release/examples/probe_matmul --rounds 5

Without `--ours` it prints PyTorch's table once, at `--threads`. The shapes are the linear layers'
at the cpu shape (1,728 rows, width 48, MLP 192) and at the paper shape (5,088 rows, width 192,
MLP 768). `make bench-pytorch` installs the interpreter.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

import torch

SHAPES = [
    (1728, 48, 144),
    (1728, 48, 192),
    (1728, 192, 48),
    (1728, 48, 48),
    (5088, 192, 576),
    (5088, 192, 768),
    (5088, 768, 192),
]

ROW = re.compile(r"\| (\d+) × (\d+) × (\d+) \| ([\d.]+) \|")


def table(threads: int) -> str:
    """PyTorch's products at `threads`, as `probe_matmul` prints them."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    lines = [f"threads: {torch.get_num_threads()}", "| rows × in × out | µs | GFLOP/s |", "|---|---|---|"]
    for m, k, n in SHAPES:
        x, w = torch.randn(m, k), torch.randn(n, k)
        flop = 2.0 * m * n * k
        reps = int(2e9 / flop)
        for _ in range(3):
            x @ w.T
        t0 = time.perf_counter()
        for _ in range(reps):
            x @ w.T
        s = (time.perf_counter() - t0) / reps
        lines.append(f"| {m} × {k} × {n} | {s * 1e6:.1f} | {flop / s / 1e9:.1f} |")
    return "\n".join(lines)


def timings(text: str, what: str) -> dict:
    """µs per shape from one table; every shape must be there."""
    found = {tuple(map(int, m.group(1, 2, 3))): float(m.group(4)) for m in ROW.finditer(text)}
    missing = [s for s in SHAPES if s not in found]
    if missing:
        sys.exit(f"{what} printed no time for {missing}:\n{text}")
    return found


def side_by_side(ours: str, rounds: int) -> None:
    runs = {}  # (threads, who) -> list of {shape: µs}
    for _ in range(rounds):
        for threads in (1, 2):
            env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
            probe = subprocess.run([ours], env=env, capture_output=True, text=True)
            if probe.returncode != 0:
                sys.exit(f"{ours} failed ({probe.returncode}):\n{probe.stderr}")
            runs.setdefault((threads, "ours"), []).append(timings(probe.stdout, ours))
            runs.setdefault((threads, "torch"), []).append(timings(table(threads), "PyTorch"))
    print(f"PyTorch {torch.__version__}; medians of {rounds} alternating rounds")
    print("| rows × in × out | threads | candle µs | PyTorch µs | candle / PyTorch time | per round |")
    print("|---|---|---|---|---|---|")
    for threads in (1, 2):
        for shape in SHAPES:
            o = [r[shape] for r in runs[(threads, "ours")]]
            t = [r[shape] for r in runs[(threads, "torch")]]
            ratios = [a / b for a, b in zip(o, t)]
            mo, mt = statistics.median(o), statistics.median(t)
            print(
                f"| {' × '.join(map(str, shape))} | {threads} | {mo:.1f} | {mt:.1f} | "
                f"{mo / mt:.2f} | {min(ratios):.2f}–{max(ratios):.2f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ours", help="the built probe_matmul example, to run alternately")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds with --ours")
    parser.add_argument("--threads", type=int, default=1, help="threads, without --ours")
    args = parser.parse_args()
    if args.rounds < 1 or args.threads < 1:
        parser.error("--rounds and --threads must be at least 1")
    if args.ours:
        side_by_side(args.ours, args.rounds)
    else:
        print(f"PyTorch {torch.__version__}")
        print(table(args.threads))


if __name__ == "__main__":
    main()
