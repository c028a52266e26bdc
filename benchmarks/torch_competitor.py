"""A competing PyTorch job for ``bench_load.py``: a small CNN's forward and backward pass in a loop
on ``--threads`` intra-op threads (default 2), with PyTorch's default OpenMP settings, until killed
or ``--seconds`` pass. What a second ``qcamseg`` or any torch job on the same CPU looks like."""

from __future__ import annotations

import argparse
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3600.0)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 2, 1))
    x = torch.randn(8, 3, 128, 128)
    end = time.monotonic() + args.seconds
    steps = 0
    while time.monotonic() < end:
        net(x).square().mean().backward()
        steps += 1
    print(f"competitor: {steps} steps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
