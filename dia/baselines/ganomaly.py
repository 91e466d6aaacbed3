"""GANomaly (Akcay, Atapour-Abarghouei and Breckon, ACCV 2018), trained from scratch.

Networks follow the reference code (github.com/samet-akcay/ganomaly, `lib/networks.py`):

* generator G = encoder G_E (DCGAN, 4x4 stride-2 convs, BN, LeakyReLU 0.2, a final 4x4 conv to
  `nz`) -> decoder G_D (mirror with transposed convs, BN, ReLU, Tanh) -> encoder E (as G_E);
* discriminator D = the DCGAN encoder with one output: `features` (all but the last conv) and a
  sigmoid classifier.

Losses (weights 1 / 50 / 1): adversarial = feature matching ||f(x) - f(G(x))||^2 on D's features
(as the reference, MSE), contextual = |x - G(x)|_1, encoder = ||z - z'||^2; D is trained with BCE
(real 1, fake 0) and re-initialised when its loss falls below 1e-5 (as the reference).
Anomaly score of an image: mean over the `nz` dims of (G_E(x) - E(G(x)))^2.

Inputs are in [-1, 1]. MedMNIST (28 px) is padded with black to 32 px (the DCGAN pyramid needs
a multiple of 16); 224-px datasets are loaded at 64 px (bilinear).

Differences from the reference code (stated in the report): the reference keeps the weights of the
epoch with the best *test* AUC; we score with the last epoch's weights (no test-set selection),
and do not min-max rescale the scores (the AUC does not change).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from dia.checkpoints import ensure_finite, load_run_checkpoint, save_checkpoint
from dia.config import GANOMALY_DOWNSAMPLING
from dia.results import Run, RunError

METHOD = "ganomaly"
CHECKPOINT = "ganomaly.pt"


# -- networks -----------------------------------------------------------------------------------


class Encoder(nn.Module):
    """DCGAN encoder of the reference (`Encoder`, no extra layers): isize -> 4 -> 1 x 1 x nz."""

    def __init__(self, isize: int, nz: int, nc: int = 3, ndf: int = 64):
        super().__init__()
        if isize % GANOMALY_DOWNSAMPLING != 0:
            raise ValueError(f"GANomaly image size must be a multiple of {GANOMALY_DOWNSAMPLING}, "
                             f"got {isize}")
        layers: list[nn.Module] = [nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
                                   nn.LeakyReLU(0.2, inplace=True)]
        csize, cndf = isize // 2, ndf
        while csize > 4:
            layers += [nn.Conv2d(cndf, cndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(cndf * 2),
                       nn.LeakyReLU(0.2, inplace=True)]
            cndf, csize = cndf * 2, csize // 2
        layers.append(nn.Conv2d(cndf, nz, 4, 1, 0, bias=False))
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class Decoder(nn.Module):
    """DCGAN decoder of the reference: 1 x 1 x nz -> isize, Tanh output."""

    def __init__(self, isize: int, nz: int, nc: int = 3, ngf: int = 64):
        super().__init__()
        cngf, tisize = ngf // 2, 4
        while tisize != isize:
            cngf, tisize = cngf * 2, tisize * 2
        layers: list[nn.Module] = [nn.ConvTranspose2d(nz, cngf, 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(cngf), nn.ReLU(True)]
        csize = 4
        while csize < isize // 2:
            layers += [nn.ConvTranspose2d(cngf, cngf // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(cngf // 2), nn.ReLU(True)]
            cngf, csize = cngf // 2, csize * 2
        layers += [nn.ConvTranspose2d(cngf, nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


class Generator(nn.Module):
    """x -> (G(x), z = G_E(x), z' = E(G(x)))."""

    def __init__(self, isize: int, nz: int, nc: int = 3, width: int = 64):
        super().__init__()
        self.encoder1 = Encoder(isize, nz, nc, width)
        self.decoder = Decoder(isize, nz, nc, width)
        self.encoder2 = Encoder(isize, nz, nc, width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        latent_i = self.encoder1(x)
        fake = self.decoder(latent_i)
        latent_o = self.encoder2(fake)
        return fake, latent_i, latent_o


class Discriminator(nn.Module):
    """The DCGAN encoder with nz = 1: `features` and a sigmoid `classifier`."""

    def __init__(self, isize: int, nc: int = 3, width: int = 64):
        super().__init__()
        layers = list(Encoder(isize, 1, nc, width).main.children())
        self.features = nn.Sequential(*layers[:-1])
        self.classifier = nn.Sequential(layers[-1], nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(x)
        return self.classifier(features).view(-1), features


def weights_init(module: nn.Module) -> None:
    """The reference's DCGAN initialisation: conv N(0, 0.02), BN weight N(1, 0.02), bias 0."""
    name = type(module).__name__
    if "Conv" in name:
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif "BatchNorm" in name:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


# -- data ---------------------------------------------------------------------------------------


def ganomaly_image_size(cfg) -> int:
    """The training size: `cfg.peers.ganomaly_image_size`, else 32 for 28-px data, 64 otherwise."""
    from dia.data import get_spec

    if cfg.peers.ganomaly_image_size is not None:
        return cfg.peers.ganomaly_image_size
    return 32 if get_spec(cfg.dataset).is_small else 64


def to_gan_input(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float in [-1, 1] at `size`: black padding when H < size and the
    difference is even and at most 4 px (28 -> 32), else a bilinear resize. An empty batch (a
    dataset without a validation split) gives an empty (0, C, size, size)."""
    x = images.float() / 127.5 - 1.0
    h = x.shape[-1]
    if h == size:
        return x
    if x.shape[0] == 0:
        return x.new_zeros(0, x.shape[1], size, size)
    if h < size and (size - h) % 2 == 0 and size - h <= 4:
        pad = (size - h) // 2
        return F.pad(x, (pad, pad, pad, pad), value=-1.0)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=h > size).clamp(-1, 1)


def load_gan_data(cfg, *, data_root=None, results_root="results"):
    """The `DatasetSplits` of `cfg.dataset` (uint8) that `to_gan_input` takes to the GAN's size:
    224-px datasets are loaded straight at `ganomaly_image_size(cfg)`, 28-px ones natively (then
    padded)."""
    from dia.data import get_spec, load_for_config

    native = get_spec(cfg.dataset).is_small
    return load_for_config(cfg, data_root=data_root or None, results_root=results_root,
                           image_size=None if native else ganomaly_image_size(cfg))


# -- training -----------------------------------------------------------------------------------


def _seed(seed: int, name: str) -> int:
    return int(hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()[:8], 16)


def build_models(cfg, isize: int) -> tuple[Generator, Discriminator]:
    p = cfg.peers
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seed(cfg.seed, "ganomaly:init"))
        netg = Generator(isize, p.nz, 3, p.ganomaly_width)
        netd = Discriminator(isize, 3, p.ganomaly_width)
        netg.apply(weights_init)
        netd.apply(weights_init)
    return netg, netd


def _save(run: Run, state: dict[str, Any]) -> None:
    save_checkpoint(run.checkpoint_dir / CHECKPOINT, state)


def _load(run: Run) -> dict[str, Any] | None:
    return load_run_checkpoint(run.checkpoint_dir / CHECKPOINT, run, needs=(
        "epoch", "image_size", "netg", "netd", "opt_g", "opt_d", "generator"))


def train_ganomaly_models(run: Run, cfg, train: torch.Tensor, device: torch.device
                          ) -> tuple[Generator, Discriminator]:
    """Train G and D for `cfg.peers.ganomaly_epochs` epochs, checkpointing after each epoch
    (atomic) and resuming from the last checkpoint."""
    p = cfg.peers
    if train.shape[0] < 2:
        raise RunError(
            f"GANomaly needs at least 2 training images (BatchNorm); got {train.shape[0]}")
    isize = train.shape[-1]
    netg, netd = build_models(cfg, isize)
    netg.to(device)
    netd.to(device)
    opt_g = torch.optim.Adam(netg.parameters(), lr=p.ganomaly_lr, betas=(p.ganomaly_beta1, 0.999))
    opt_d = torch.optim.Adam(netd.parameters(), lr=p.ganomaly_lr, betas=(p.ganomaly_beta1, 0.999))
    gen = torch.Generator().manual_seed(_seed(cfg.seed, "ganomaly:data"))
    start = 0
    state = _load(run)
    if state is not None:
        netg.load_state_dict(state["netg"])
        netd.load_state_dict(state["netd"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        gen.set_state(state["generator"])
        start = state["epoch"]
        run.append_log({"event": "resume", "epoch": start})
    n, bs = train.shape[0], min(p.ganomaly_batch_size, train.shape[0])
    data = train.to(device)
    bar = tqdm(range(start, p.ganomaly_epochs), desc="ganomaly", initial=start,
               total=p.ganomaly_epochs)
    for epoch in bar:
        netg.train()
        netd.train()
        t0, sums, steps = time.perf_counter(), {}, 0
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - bs + 1, bs):  # drop_last, as the reference loader
            x = data[perm[i:i + bs].to(device)]
            fake, latent_i, latent_o = netg(x)
            # generator: feature matching + contextual L1 + latent L2
            err_g_adv = F.mse_loss(netd(fake)[1], netd(x)[1].detach())
            err_g_con = F.l1_loss(fake, x)
            err_g_enc = F.mse_loss(latent_o, latent_i)
            err_g = p.w_adv * err_g_adv + p.w_con * err_g_con + p.w_enc * err_g_enc
            opt_g.zero_grad(set_to_none=True)
            err_g.backward()
            opt_g.step()
            # discriminator: BCE on real vs the (detached) reconstruction
            pred_real, _ = netd(x)
            pred_fake, _ = netd(fake.detach())
            err_d = 0.5 * (F.binary_cross_entropy(pred_real, torch.ones_like(pred_real))
                           + F.binary_cross_entropy(pred_fake, torch.zeros_like(pred_fake)))
            opt_d.zero_grad(set_to_none=True)
            err_d.backward()
            opt_d.step()
            if err_d.item() < 1e-5:  # the reference re-initialises a collapsed D
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(_seed(cfg.seed, f"ganomaly:reinit:{epoch}:{i}"))
                    netd.apply(weights_init)
            for key, value in (("err_g", err_g), ("err_g_adv", err_g_adv), ("err_g_con", err_g_con),
                               ("err_g_enc", err_g_enc), ("err_d", err_d)):
                sums[key] = sums.get(key, 0.0) + value.item()
            steps += 1
        record = {k: round(v / max(steps, 1), 6) for k, v in sums.items()}
        ensure_finite(record, where=f"ganomaly epoch {epoch + 1} ({run.path})",
                      hint="check peers.ganomaly_lr")
        _save(run, {
            "run_hash": run.hash, "epoch": epoch + 1, "image_size": isize,
            "netg": {k: v.detach().cpu() for k, v in netg.state_dict().items()},
            "netd": {k: v.detach().cpu() for k, v in netd.state_dict().items()},
            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "generator": gen.get_state(),
        })
        run.append_log({"epoch": epoch + 1, "steps": steps,
                        "seconds": round(time.perf_counter() - t0, 3), **record})
        bar.set_postfix(err_g=f"{record.get('err_g', float('nan')):.3f}",
                        err_d=f"{record.get('err_d', float('nan')):.3f}")
    bar.close()
    return netg.eval(), netd.eval()


@torch.no_grad()
def score_ganomaly(netg: Generator, images: torch.Tensor, *, batch_size: int = 256,
                   device: torch.device | str = "cpu") -> np.ndarray:
    """Anomaly score per image: mean over nz of (G_E(x) - E(G(x)))^2 (higher = more anomalous)."""
    netg.eval()
    out = []
    for start in range(0, images.shape[0], batch_size):
        _, latent_i, latent_o = netg(images[start:start + batch_size].to(device))
        out.append((latent_i - latent_o).pow(2).flatten(1).mean(1).cpu())
    return torch.cat(out).double().numpy()


def load_generator(run: Run, cfg, device: torch.device | str = "cpu") -> Generator:
    """The generator of a run's last checkpoint (eval mode)."""
    state = _load(run)
    if state is None:
        raise RunError(f"{run.checkpoint_dir / CHECKPOINT} is missing; train the run first")
    netg, _ = build_models(cfg, state["image_size"])
    netg.load_state_dict(state["netg"])
    return netg.to(device).eval()


def run_ganomaly(run: Run, cfg, splits, *, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Train (or resume) GANomaly in `run` on `splits` (from `load_gan_data`), score the test set
    (and the validation split where it has both classes), write scores.csv (val_scores.csv) and
    metrics.csv. Returns the summary for DONE (the caller marks it)."""
    from dia.metrics import score_splits, write_metrics

    device = torch.device(device)
    size = ganomaly_image_size(cfg)
    train = to_gan_input(splits.train, size)
    counts = splits.sizes()
    run.append_log({"event": "start", "device": str(device), "image_size": size, **counts})
    t0 = time.perf_counter()
    netg, _ = train_ganomaly_models(run, cfg, train, device)
    train_seconds = time.perf_counter() - t0

    def score(images: torch.Tensor, _split: str) -> np.ndarray:
        return score_ganomaly(netg, to_gan_input(images, size), device=device)

    rows = score_splits(run, splits, score, method=METHOD, profile=cfg.profile, image_size=size,
                        dataset=cfg.dataset)
    write_metrics(run, rows)
    return {**{row["metric"]: row["value"] for row in rows}, "image_size": size,
            "train_seconds": round(train_seconds, 1), "epochs": cfg.peers.ganomaly_epochs,
            **counts, "device": str(device)}
