"""The reference code's U-Net rebuilt (`dia.reference_unet`) against the package it rebuilds.

The fixture holds what ``denoising_diffusion_pytorch.Unet(8)`` (0.27.12) computes on fixed
weights and inputs, its parameter names and shapes, and the size of ``Unet(64)``; it is written
by ``tools/reference_unet_fixture.py`` (its docstring gives the command), which also lends the
weights, inputs and probe used here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dia.config import DiffusionConfig
from dia.diffusion import build_unet, count_parameters, unet_from_kwargs, unet_kwargs
from dia.reference_unet import ReferenceUNet

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "reference_unet_dim8.json").read_text())


def test_parameter_names_and_shapes_are_the_packages():
    ours = {k: list(v.shape) for k, v in ReferenceUNet(8).state_dict().items()}
    assert list(ours.items()) == list(FIXTURE["state_dict"].items())  # same order too
    assert count_parameters(ReferenceUNet(64)) == FIXTURE["parameters_dim64"]


def test_the_output_is_the_packages_on_the_same_weights(load_script):
    tool = load_script("tools/reference_unet_fixture.py")
    unet = ReferenceUNet(8).eval()
    tool.fill_parameters(unet)
    with torch.no_grad():
        got = tool.probe(unet(*tool.check_inputs()).sample)
    assert got["positions"] == FIXTURE["positions"]
    assert got["mean"] == pytest.approx(FIXTURE["mean"], abs=1e-6)
    assert got["std"] == pytest.approx(FIXTURE["std"], rel=1e-5)
    assert got["values"] == pytest.approx(FIXTURE["values"], abs=1e-5)


def test_a_scalar_timestep_is_used_for_the_whole_batch():
    unet = ReferenceUNet(8).eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        batch = unet(x, torch.full((3,), 50)).sample
        scalar = unet(x, 50).sample
    assert batch.shape == x.shape
    torch.testing.assert_close(scalar, batch)


def test_the_config_chooses_the_architecture_and_checkpoints_say_which():
    reference = DiffusionConfig(width=8, architecture="reference")
    kwargs = unet_kwargs(reference)
    assert isinstance(build_unet(reference), ReferenceUNet)
    assert isinstance(unet_from_kwargs(kwargs), ReferenceUNet)
    diffusers_kwargs = unet_kwargs(DiffusionConfig(width=8))
    assert "architecture" not in diffusers_kwargs  # checkpoints written before the option
    assert type(unet_from_kwargs(diffusers_kwargs)).__name__ == "UNet2DModel"
