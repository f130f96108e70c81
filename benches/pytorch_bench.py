"""PyTorch twins of the `varphi bench` workloads (crates/varphi-train/src/workloads.rs): the same
layers, shapes, loss and optimiser (Adam, lr 1e-3) on a fixed random batch, timed the same way
(warm-up steps, then timed steps, the loss read back once at the end).

    python3 -m venv benches/.venv && benches/.venv/bin/pip install torch numpy
    benches/.venv/bin/python benches/pytorch_bench.py --workload unet --threads 2
    # or, side by side with varphi in one run:
    varphi bench --workload mlp-vae,unet,fno,pinn,conv-cvae --threads 2 --pytorch benches/.venv/bin/python

Workloads:
- mlp-vae: MLP VAE 784-512-512-16 (ReLU), Gaussian likelihood sigma = 1, analytic KL, batch 128.
- unet: varphi_models::UNet of configs/darcy-forward-unet.toml: 1 -> 2 channels on 32 x 32,
  levels [8, 16, 32], two same-padded 3x3 convs per block, stride-2 3x3 convs down (+ ReLU),
  nearest x2 up, concat [up, skip], 1x1 output; Gaussian NLL of a field, batch 64.
- fno: varphi_models::Fno of configs/darcy-forward-fno.toml: input field + 2 coordinate
  channels, pointwise lift to width 32, 4 Fourier layers (spectral conv keeping (2m - 1) x m
  modes, m = 12, by rfft2/irfft2 as in neuraloperator, + pointwise skip, ReLU but after the
  last), zero padding 8 on the high side, pointwise projection 128 (ReLU) -> 2; Gaussian NLL.
- pinn: MLP 2-64-64-1 (tanh) at `batch` collocation points, loss mean((u_xx + u_yy - f)^2),
  the Laplacian by double backward (varphi uses Taylor mode).
- conv-cvae: the field-conditioned CVAE of configs/darcy-cvae-fno.toml on 32 x 32 (ReLU):
  encoder MLP [u, a] -> 256 -> 256 -> (mean, log var) of 4 latents, learned prior MLP
  a -> 256 -> 256 -> (mean, log var), FNO decoder (as above: width 32, modes 8, 4 layers,
  padding 4, projection 128) on the channels [a, z_1 .. z_4] (z copied to every node) to a
  mean and log variance per node; ELBO with one particle, analytic KL(q || p); batch 32.
"""
import argparse
import math
import time

import torch
from torch import nn
import torch.nn.functional as F


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


def gaussian_nll(out, target):
    """Mean over the batch of 0.5 * sum(log var + (y - mean)^2 / var); out = [mean | log var]."""
    b = out.shape[0]
    out = out.reshape(b, 2, -1)
    mean, log_var = out[:, 0], out[:, 1]
    return 0.5 * (log_var + (target - mean) ** 2 * torch.exp(-log_var)).sum(1).mean()


def conv3(ci, co, stride=1):
    return nn.Conv2d(ci, co, 3, stride=stride, padding=1)


class Block(nn.Module):
    def __init__(self, ci, co):
        super().__init__()
        self.first, self.second = conv3(ci, co), conv3(co, co)

    def forward(self, x):
        return F.relu(self.second(F.relu(self.first(x))))


class UNet(nn.Module):
    def __init__(self, c_in=1, c_out=2, ch=(8, 16, 32)):
        super().__init__()
        self.encode = nn.ModuleList([Block(c_in, ch[0])])
        self.down, self.decode = nn.ModuleList(), nn.ModuleList()
        for i in range(len(ch) - 1):
            self.down.append(conv3(ch[i], ch[i], 2))
            self.encode.append(Block(ch[i], ch[i + 1]))
            self.decode.append(Block(ch[i + 1] + ch[i], ch[i]))
        self.output = nn.Conv2d(ch[0], c_out, 1)

    def forward(self, x):
        x = self.encode[0](x)
        skips = []
        for down, block in zip(self.down, self.encode[1:]):
            nxt = F.relu(down(x))
            skips.append(x)
            x = block(nxt)
        for block, skip in reversed(list(zip(self.decode, skips))):
            u = F.interpolate(x, scale_factor=2, mode="nearest")[..., : skip.shape[2], : skip.shape[3]]
            x = block(torch.cat([u, skip], 1))
        return self.output(x)


class SpectralConv(nn.Module):
    """Keeps rows 0..m-1 and n-m+1..n-1 of the first axis, columns 0..m-1 of the rfft axis."""

    def __init__(self, ci, co, m):
        super().__init__()
        self.m = m
        scale = 1.0 / (ci * co)
        self.weight = nn.Parameter(scale * torch.rand(ci, co, 2 * m - 1, m, dtype=torch.cfloat))

    def forward(self, x):
        b, _, h, w = x.shape
        m = self.m
        x_ft = torch.fft.rfft2(x)
        rows = torch.cat([x_ft[:, :, :m, :m], x_ft[:, :, h - m + 1 :, :m]], 2)
        y = torch.einsum("bixy,ioxy->boxy", rows, self.weight)
        out = torch.zeros(b, y.shape[1], h, w // 2 + 1, dtype=torch.cfloat, device=x.device)
        out[:, :, :m, :m] = y[:, :, :m]
        out[:, :, h - m + 1 :, :m] = y[:, :, m:]
        return torch.fft.irfft2(out, s=(h, w))


class Fno(nn.Module):
    def __init__(self, n=32, c_in=1, c_out=2, width=32, modes=12, layers=4, projection=128, padding=8):
        super().__init__()
        ys = torch.linspace(0, 1, n).view(1, 1, n, 1).expand(1, 1, n, n)
        xs = torch.linspace(0, 1, n).view(1, 1, 1, n).expand(1, 1, n, n)
        self.register_buffer("grid", torch.cat([ys, xs], 1))
        self.lift = nn.Conv2d(c_in + 2, width, 1)
        self.spectral = nn.ModuleList([SpectralConv(width, width, modes) for _ in range(layers)])
        self.skip = nn.ModuleList([nn.Conv2d(width, width, 1) for _ in range(layers)])
        self.project = nn.Conv2d(width, projection, 1)
        self.output = nn.Conv2d(projection, c_out, 1)
        self.padding = padding

    def forward(self, x):
        b, _, h, w = x.shape
        x = self.lift(torch.cat([x, self.grid.expand(b, -1, -1, -1)], 1))
        x = F.pad(x, (0, self.padding, 0, self.padding))
        for i, (k, s) in enumerate(zip(self.spectral, self.skip)):
            y = k(x) + s(x)
            x = F.relu(y) if i < len(self.spectral) - 1 else y
        x = x[:, :, :h, :w]
        return self.output(F.relu(self.project(x)))


def mlp(*sizes):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ConvCvae(nn.Module):
    def __init__(self, n=32, latent=4, hidden=256):
        super().__init__()
        self.n, self.l = n, latent
        self.enc = mlp(2 * n * n, hidden, hidden, 2 * latent)
        self.prior = mlp(n * n, hidden, hidden, 2 * latent)
        self.dec = Fno(n, c_in=1 + latent, c_out=2, modes=8, padding=4)

    def loss(self, x, c):
        b, n, l = x.shape[0], self.n, self.l
        q = self.enc(torch.cat([x, c], 1))
        mq, lq = q[:, :l], q[:, l:]
        p = self.prior(c)
        mp, lp = p[:, :l], p[:, l:]
        z = mq + torch.exp(0.5 * lq) * torch.randn_like(mq)
        field = torch.cat([c.view(b, 1, n, n), z[:, :, None, None].expand(b, l, n, n)], 1)
        nll = gaussian_nll(self.dec(field).reshape(b, -1), x)
        kl = 0.5 * (lp - lq + (lq.exp() + (mq - mp) ** 2) / lp.exp() - 1).sum(1)
        return nll + kl.mean()


class Pinn(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1))

    def loss(self, x, f):
        x = x.requires_grad_(True)
        u = self.net(x)
        (g,) = torch.autograd.grad(u.sum(), x, create_graph=True)
        (gxx,) = torch.autograd.grad(g[:, 0].sum(), x, create_graph=True)
        (gyy,) = torch.autograd.grad(g[:, 1].sum(), x, create_graph=True)
        return ((gxx[:, 0] + gyy[:, 1] - f[:, 0]) ** 2).mean()


def build(workload, batch, dev):
    if workload == "mlp-vae":
        model = Vae().to(dev)
        x = torch.rand(batch, 784, device=dev)
        return model, lambda: model.loss(x)
    if workload in ("unet", "fno"):
        model = (UNet() if workload == "unet" else Fno()).to(dev)
        x = torch.rand(batch, 1, 32, 32, device=dev)
        y = torch.rand(batch, 32 * 32, device=dev)
        return model, lambda: gaussian_nll(model(x).reshape(batch, -1), y)
    if workload == "conv-cvae":
        model = ConvCvae().to(dev)
        x = torch.rand(batch, 32 * 32, device=dev)
        c = torch.rand(batch, 32 * 32, device=dev)
        return model, lambda: model.loss(x, c)
    if workload == "pinn":
        model = Pinn().to(dev)
        x = torch.rand(batch, 2, device=dev)
        f = torch.rand(batch, 1, device=dev)
        return model, lambda: model.loss(x.detach(), f)
    raise SystemExit(f"unknown workload {workload!r}: mlp-vae, unet, fno, pinn or conv-cvae")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--workload", default="mlp-vae")
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
    model, loss_fn = build(a.workload, a.batch, dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
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
        f"  {'pytorch':<10} {a.steps / secs:>10.2f} {a.steps * a.batch / secs:>12.0f}  "
        f"torch {torch.__version__} {a.device}, {torch.get_num_threads()} thread(s) (final loss {final:.4f})"
    )


if __name__ == "__main__":
    main()
