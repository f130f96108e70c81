"""PyTorch reference for `varphi bench`: the identical MLP VAE 784-512-512-16 (ReLU, Gaussian
likelihood with sigma = 1, analytic KL, Adam lr 1e-3) at batch 128, timed the same way
(warm-up steps, then timed steps, loss read back once at the end).

    python3 -m venv benches/.venv && benches/.venv/bin/pip install torch numpy
    benches/.venv/bin/python benches/pytorch_vae.py --threads 1
"""
import argparse
import math
import time

import torch
from torch import nn


class Vae(nn.Module):
    def __init__(self, d=784, h=512, l=16):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 2 * l))
        self.dec = nn.Sequential(nn.Linear(l, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, d))
        self.l = l

    def loss(self, x):
        out = self.enc(x)
        mean, log_var = out[:, : self.l], out[:, self.l :]
        z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
        xh = self.dec(z)
        log_lik = -0.5 * ((x - xh) ** 2 + math.log(2 * math.pi)).sum(1)
        kl = 0.5 * (log_var.exp() + mean**2 - 1 - log_var).sum(1)
        return -(log_lik - kl).mean()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    model = Vae().to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(a.batch, 784, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model.loss(x)
        loss.backward()
        opt.step()
        return loss

    for _ in range(a.warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    final = loss.item()
    secs = time.perf_counter() - t0
    print(
        f"  {'pytorch':<10} {a.steps / secs:>10.1f} {a.steps * a.batch / secs:>12.0f}  "
        f"torch {torch.__version__} {a.device}, {torch.get_num_threads()} thread(s) (final loss {final:.1f})"
    )


if __name__ == "__main__":
    main()
