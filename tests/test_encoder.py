"""The ResNet-18 amplifying encoder: shapes, parameter count, initialisation, explicit methods."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dia.encoder import AmplifyEncoder, Conv2d

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


def test_shapes_at_28_32_and_224_and_methods_agree_with_forward():
    torch.manual_seed(0)
    model = AmplifyEncoder(num_shifts=4, width=8).eval()  # one network for every input size
    for size in (28, 32, 224):
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


@pytest.mark.parametrize(
    "in_ch, out_ch, kernel, stride, pad, size, bias",
    [
        (8, 6, 3, 1, 1, 1, False),  # layer4's 3x3 on a 1x1 map
        (8, 6, 3, 2, 1, 2, False),  # layer4's first 3x3, 2x2 -> 1x1
        (8, 6, 1, 2, 0, 2, False),  # layer4's 1x1 down-sampling, 2x2 -> 1x1
        (5, 4, 3, 2, 1, 1, True),
        (4, 3, 1, 3, 1, 1, True),  # the single output sees padding only: the bias
        (8, 6, 3, 1, 1, 2, True),  # a 2x2 output: nn.Conv2d's own path
    ],
)
def test_conv_with_a_single_output_position_equals_the_convolution(
    in_ch, out_ch, kernel, stride, pad, size, bias
):
    torch.manual_seed(0)
    conv = Conv2d(in_ch, out_ch, kernel, stride, pad, bias=bias).double()
    x = torch.randn(5, in_ch, size, size, dtype=torch.float64, requires_grad=True)
    y = conv(x)
    grad_out = torch.randn_like(y)
    y.backward(grad_out)
    ours = [x.grad, conv.weight.grad] + ([conv.bias.grad] if bias else [])

    x_ref = x.detach().clone().requires_grad_()
    w_ref = conv.weight.detach().clone().requires_grad_()
    b_ref = conv.bias.detach().clone().requires_grad_() if bias else None
    y_ref = F.conv2d(x_ref, w_ref, b_ref, stride, pad)
    y_ref.backward(grad_out)
    torch.testing.assert_close(y, y_ref)
    for got, want in zip(ours, [x_ref.grad, w_ref.grad] + ([b_ref.grad] if bias else [])):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_encoder_at_28_gives_the_same_outputs_and_gradients_as_plain_convolutions(
    monkeypatch, memory_format
):
    torch.manual_seed(0)
    model = AmplifyEncoder(width=8).double().to(memory_format=memory_format)
    x = torch.rand(6, 3, 28, 28, dtype=torch.float64)

    def outputs_and_grads():
        model.zero_grad()
        out = model(x)
        (out.projection.square().sum() + out.shift_logits.sum()).backward()
        return [out.projection.detach()] + [p.grad.clone() for p in model.parameters()]

    ours = outputs_and_grads()
    monkeypatch.setattr(Conv2d, "_single_output", lambda self, x: False)
    plain = outputs_and_grads()
    for got, want in zip(ours, plain):
        torch.testing.assert_close(got, want)
