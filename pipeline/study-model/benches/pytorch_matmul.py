"""PyTorch's f32 `x @ w.T` at the shapes the model multiplies, beside `examples/probe_matmul.rs`.

The same products, timed the same way (three warm-up calls, then 2 GFLOP of repeats), printed as
the same markdown table, so the two can be read row by row; run them alternately (this machine's
speed drifts):

    for t in 1 2; do
        tools/bench-pytorch/bin/python pipeline/study-model/benches/pytorch_matmul.py --threads $t
        RAYON_NUM_THREADS=$t cargo run --release -p study-model --example probe_matmul
    done

The shapes are the linear layers' at the cpu shape (1,728 rows, width 48, MLP 192) and at the
paper shape (5,088 rows, width 192, MLP 768). `make bench-pytorch` installs the interpreter.
"""

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, required=True, help="torch.set_num_threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"PyTorch {torch.__version__}; threads: {torch.get_num_threads()}")
    print("| rows × in × out | µs | GFLOP/s |")
    print("|---|---|---|")
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
        print(f"| {m} × {k} × {n} | {s * 1e6:.1f} | {flop / s / 1e9:.1f} |")


if __name__ == "__main__":
    main()
