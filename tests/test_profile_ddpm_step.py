"""benchmarks/profile_ddpm_step.py: the operator shares of one DDPM training step."""

import pytest
import torch

from dia.config import load_config


@pytest.mark.parametrize("bf16", [False, True])
def test_the_step_is_profiled_and_its_shares_add_up(load_script, bf16):
    bench = load_script("benchmarks/profile_ddpm_step.py")
    cfg = load_config("smoke", overrides={"diffusion.width": 8})
    out = bench.profile_step(cfg, batch=4, device=torch.device("cpu"), top=50, bf16=bf16)
    shares = [op["share"] for op in out["top_operators"]]
    assert out["step_seconds"] > 0 and shares == sorted(shares, reverse=True)
    assert 0.99 <= sum(shares) <= 1.01 or len(shares) == 50  # every operator, self time
    names = {op["name"] for op in out["top_operators"]}
    assert "aten::convolution_backward" in names and 0 < out["convolution_share"] < 1
