"""Stage 4's starting point (Zhang et al. 2023): a copy of the UNet's encoder whose residuals are zero."""

import torch

from sdstudio.engine.unet import UNetModel
from sdstudio.training.plan import full_plan
from sdstudio.training.stage_controlnet import controlnet_from_unet


def test_controlnet_starts_as_the_unets_encoder_with_zero_residuals(tmp_path):
    torch.manual_seed(0)
    unet = UNetModel(full_plan(tmp_path, tmp_path).unet_config()).eval()
    for p in unet.parameters():  # non-zero everywhere, so a missed copy or a missed zeroing shows
        p.data.normal_(0, 0.05)
    net = controlnet_from_unet(unet).eval()
    assert torch.equal(net.input_blocks[1][0].in_layers[2].weight, unet.input_blocks[1][0].in_layers[2].weight)
    assert torch.equal(net.middle_block[0].out_layers[3].weight, unet.middle_block[0].out_layers[3].weight)
    assert torch.equal(net.time_embed[0].weight, unet.time_embed[0].weight)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10.0, 900.0])
    context, hint = torch.randn(2, 77, 128), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        residuals = net(x, hint, t, context)
        assert all(not s.any() for s in residuals.skips) and not residuals.middle.any()
        assert torch.equal(unet(x, t, context, residuals=residuals), unet(x, t, context))


def test_only_the_zero_convs_hold_the_hint_at_first_but_gradients_reach_them(tmp_path):
    unet = UNetModel(full_plan(tmp_path, tmp_path).unet_config())
    net = controlnet_from_unet(unet)
    residuals = net(torch.randn(1, 4, 8, 8), torch.rand(1, 3, 64, 64), torch.tensor([500.0]), torch.randn(1, 77, 128))
    sum(s.square().sum() + 1e-3 * s.sum() for s in residuals.skips).backward()
    assert net.zero_convs[0][0].weight.grad.abs().sum() > 0
