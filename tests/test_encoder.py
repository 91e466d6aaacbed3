"""The ResNet-18 amplifying encoder: shapes, parameter count, initialisation, explicit methods."""

from __future__ import annotations

import torch

from dia.encoder import AmplifyEncoder

TORCHVISION_RESNET18_WITHOUT_FC = 11_689_512 - (512 * 1000 + 1000)


def test_full_width_matches_torchvision_resnet18_and_heads():
    model = AmplifyEncoder()
    heads = {"simclr_layer", "shift_cls_layer"}
    backbone = sum(p.numel() for n, p in model.named_parameters() if n.split(".")[0] not in heads)
    assert backbone == TORCHVISION_RESNET18_WITHOUT_FC
    assert [tuple(m.weight.shape) for m in model.simclr_layer if hasattr(m, "weight")] == [
        (512, 512), (128, 512)]
    assert tuple(model.shift_cls_layer.weight.shape) == (4, 512)
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0)
               for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_shapes_at_28_and_32_and_methods_agree_with_forward():
    torch.manual_seed(0)
    model = AmplifyEncoder(num_shifts=4, width=8).eval()
    for size in (28, 32):
        x = torch.rand(3, 3, size, size)
        out = model(x)
        assert out.features.shape == (3, 64)
        assert out.projection.shape == (3, 128) and out.shift_logits.shape == (3, 4)
        h = model.embed(x)
        torch.testing.assert_close(model.project(h), out.projection)
        torch.testing.assert_close(model.classify_shift(h), out.shift_logits)


def test_input_is_normalised_inside_the_network():
    torch.manual_seed(0)
    model = AmplifyEncoder(width=8).eval()
    x = torch.rand(2, 3, 28, 28)
    conv_in = []
    model.conv1.register_forward_hook(lambda m, inp, out: conv_in.append(inp[0]))
    model(x)
    torch.testing.assert_close(conv_in[0], (x - 0.5) / 0.5)
