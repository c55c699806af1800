"""Baseline for `make bench`: the official generator's sampling loop, in plain Python.

The official `data_generator/make_data_pretrain.py` is not vendored here; this re-implements its
per-row work the way it does it (recursive expansion with `random.choices` per nonterminal,
`randint` crop, operator sampling, dict-based bijections, list-built rows), for PCFG1's
pre-training grammar at the paper's lengths (L 25-35, W 160), so the Rust generator can be
compared on the same machine and one core. Usage: python3 python_baseline.py [rows]
"""
import random
import sys
import time

RULES = {
    "v": [["u", "t"], ["t", "s"]],
    "u": [["r", "p"], ["p", "10$", "q"], ["10#", "r", "q"]],
    "t": [["q", "p", "r"], ["10*", "p", "q"], ["10$", "r"]],
    "s": [["p", "10#"], ["r", "10$", "10*"], ["10$", "10*", "10#"]],
    "r": [["o", "n", "m"], ["w", "x", "o"]],
    "q": [["w", "o"], ["m", "o", "x"]],
    "p": [["m", "n"], ["o", "o", "w"]],
    "10$": [["x", "w", "m"], ["n", "w", "n"]],
    "10#": [["n", "x", "x"], ["n", "n", "x"]],
    "10*": [["m", "m", "x"], ["w", "w", "o"]],
    "o": [["l", "k", "j"], ["l", "1h", "j"]],
    "n": [["k", "1h", "1f"], ["k", "l", "j"]],
    "m": [["l", "k", "1f"], ["1f", "1h", "l"]],
    "w": [["1f", "1h", "1h"], ["l", "1f", "j"]],
    "x": [["j", "j", "l"], ["1f", "l"]],
    "l": [["1i", "i", "g"], ["i", "1i", "g"]],
    "k": [["1e", "g", "i"], ["1g", "g", "h"]],
    "j": [["i", "1e", "1i"], ["1g", "h", "1e"]],
    "1f": [["1i", "h", "1g"], ["1i", "1e", "h"]],
    "1h": [["h", "1i", "1g"], ["1g", "1e", "h"]],
    "g": [["2a", "2b", "2c"], ["2d", "2e", "2f"]],
    "h": [["2h", "2i", "2j"], ["2k", "2l", "2m"]],
    "i": [["2n", "2o", "2p"], ["2q", "2r", "2s"]],
    "1e": [["2t", "2u", "2v"], ["2w", "2x", "2y"]],
    "1g": [["2z", "3a", "3b"], ["3c", "3d", "3c"]],
    "1i": [["3b", "3a", "2z"], ["2y", "2x", "2w"]],
}
WEIGHTS = {k: [1.0 / len(v)] * len(v) for k, v in RULES.items()}
LETTERS = [f"2{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + ["3a", "3b", "3c", "3d"]
OPS = ["(", ")", "[", "]", "{", "}", "?", "!", "@", "£", "+", "^", "r1", "r2", "r3", "r4"]


def expand(sym):
    if sym not in RULES:
        return [sym]
    k = random.choices(range(len(RULES[sym])), weights=WEIGHTS[sym])[0]
    out = []
    for child in RULES[sym][k]:
        out += expand(child)
    return out


def main(n):
    rng = random.Random(0)
    maps = [dict(zip(LETTERS, LETTERS))]
    for i in range(9):
        perm = list(range(30))
        rng.shuffle(perm)
        maps.append({LETTERS[j]: LETTERS[perm[j]] for j in range(30)})
    maps += [maps[0], maps[0], maps[1], maps[1], maps[2], maps[2]]
    rules = dict(zip(OPS, maps))
    rows = []
    t0 = time.perf_counter()
    for _ in range(n):
        length = random.randint(25, 35)
        full = expand("v")
        st = random.randint(0, len(full) - length - 2)
        text = full[st:st + length]
        if random.random() < 0.5:
            ops = [random.choice(OPS) for _ in range(4)]
        else:
            ops = [random.choice(["(", "r4", "r3"])] + [random.choice(OPS) for _ in range(3)]
            random.shuffle(ops)
        b = list(text)
        blocks = []
        for i, op in enumerate(ops):
            b = [rules[op][c] for c in b]
            if i % 2 == 1:
                blocks.append(b)
        row = ["$"] + ops + ["*"] + text + [">"] + blocks[0] + ["*^"] + blocks[1] + ["*^"]
        row += ["#"] * (159 - len(row)) + ["%"]
        rows.append(row)
    dt = time.perf_counter() - t0
    print(f"python baseline: {n} pre-training rows in {dt:.2f} s = {n / dt:.0f} samples/s (1 core)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000)
