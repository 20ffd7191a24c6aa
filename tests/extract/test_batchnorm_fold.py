"""BatchNorm folded into the convolution before it (inference): the same outputs as the
unfolded model, on hand-computed cases and on the video ResNets the producers fold."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from extract.backbones import get_backbone
from extract.backbones.batchnorm_fold import fold_batchnorm
from extract.dump.makers import RGBClips
from extract.dump.producers import RGBProducer
from extract.media.sampling import ClipSampling, ViewSpec
from extract.media.transforms import to_tensor_clip


def _random_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters (a fresh BN is the identity)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(n, generator=g))
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model


def test_a_hand_computed_pair():
    conv = nn.Conv1d(1, 2, kernel_size=2, bias=True)
    conv.weight.data = torch.tensor([[[1.0, 2.0]], [[-1.0, 0.5]]])
    conv.bias.data = torch.tensor([0.5, -1.0])
    bn = nn.BatchNorm1d(2, eps=0.0)
    bn.running_mean.copy_(torch.tensor([1.0, -2.0]))
    bn.running_var.copy_(torch.tensor([4.0, 0.25]))
    bn.weight.data = torch.tensor([3.0, 1.0])
    bn.bias.data = torch.tensor([0.0, 2.0])
    net = nn.Sequential(conv, bn).eval()
    x = torch.tensor([[[1.0, 2.0, 3.0]]])  # (1, 1, 3)
    assert fold_batchnorm(net) == 1
    assert isinstance(net[1], nn.Identity)
    # conv: ch0 1*x0 + 2*x1 + 0.5 -> [5.5, 8.5]; ch1 -x0 + 0.5*x1 - 1 -> [-1, -1.5]
    # bn: ch0 (c - 1) / 2 * 3 -> [6.75, 11.25]; ch1 (c + 2) / 0.5 + 2 -> [4, 3]
    np.testing.assert_allclose(net(x)[0].detach().numpy(), [[6.75, 11.25], [4.0, 3.0]], rtol=1e-6)


def test_what_is_not_a_foldable_pair_stays():
    class StdConv(nn.Conv2d):  # a subclass with its own forward may compute otherwise (weight standardisation)
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            w = self.weight - self.weight.mean(dim=(1, 2, 3), keepdim=True)  # (O, I, k, k)
            w = w / w.std(dim=(1, 2, 3), keepdim=True)
            return self._conv_forward(x, w, self.bias)

    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4),  # BN after a ReLU
        StdConv(4, 4, 1), nn.BatchNorm2d(4),  # a conv subclass
        nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4, track_running_stats=False),  # batch statistics in eval too
        nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4),  # training mode (below)
    )
    net.eval()
    net[8].train()
    assert fold_batchnorm(net) == 0
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 4


@pytest.mark.parametrize("name", ["r2plus1d_tiny", "r3d_tiny", "mc3_tiny"])
def test_video_resnets_fold_every_batchnorm_and_keep_their_features(name):
    torch.manual_seed(0)
    model = _random_statistics(get_backbone(name, weights="random")).eval()
    reference = copy.deepcopy(model)
    norms = sum(isinstance(m, nn.BatchNorm3d) for m in model.modules())
    assert fold_batchnorm(model) == norms > 0
    assert not any(isinstance(m, nn.BatchNorm3d) for m in model.modules())
    info = model.info
    x = torch.randn(3, 3, info.clip_len, info.input_size, info.input_size)
    with torch.inference_mode():
        want, got = reference.forward_features(x), model.forward_features(x)  # (3, D)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_the_producer_folds_and_embeds_as_the_unfolded_model():
    torch.manual_seed(0)
    model = _random_statistics(get_backbone("r2plus1d_tiny", weights="random")).eval()
    reference = copy.deepcopy(model)
    info = model.info
    maker = RGBClips(ClipSampling("uniform", 2, info.clip_len), ViewSpec(short_side=32, crop=32))
    producer = RGBProducer(model, maker)
    assert not any(isinstance(m, nn.BatchNorm3d) for m in producer.model.modules())
    clips = np.random.default_rng(0).integers(0, 256, (2, info.clip_len, 32, 32, 3), dtype=np.uint8)
    with torch.inference_mode():
        want = reference.forward_features(to_tensor_clip(clips, info.mean, info.std)).numpy()  # (2, D)
    got = producer.embed(clips)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
