"""Seconds per training step of the Noise2Self CNNs with 1 and 2 torch threads.

One Adam step on a batch of 16 random 64x64 patches (forward, backward, update), median of
5 steps after 2 warm-up steps, for each network and thread count. On a machine whose cores
are busy with other work, OpenMP threads wait for each other and 2 threads can be far
slower than 1; this script shows which to use.

    python benchmarks/bench_cnn_threads.py
"""

from __future__ import annotations

import time

import numpy as np
import torch

from sc_noise2self.image.cnn.networks import DnCNN, UNet

NETS = {
    "unet (32, 64, 128, 256)": lambda: UNet(),
    "unet (16, 32, 64)": lambda: UNet(channels=(16, 32, 64)),
    "dncnn 8 x 32": lambda: DnCNN(depth=8, features=32),
    "dncnn 17 x 64": lambda: DnCNN(),
}


def step_seconds(net: torch.nn.Module, threads: int) -> float:
    torch.set_num_threads(threads)
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    x = torch.rand(16, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    times = []
    for _ in range(7):
        start = time.perf_counter()
        loss = ((net(x) - x) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return float(np.median(times[2:]))


def main() -> None:
    print("| network | params | 1 thread (s/step) | 2 threads (s/step) |")
    print("|---|---|---|---|")
    for name, make in NETS.items():
        torch.manual_seed(0)
        net = make()
        params = sum(p.numel() for p in net.parameters())
        one, two = step_seconds(net, 1), step_seconds(net, 2)
        print(f"| {name} | {params:,} | {one:.3f} | {two:.3f} |", flush=True)


if __name__ == "__main__":
    main()
