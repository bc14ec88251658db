import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dse.cost.macs import layer_shapes
from dse.training.models import get_model


@pytest.mark.parametrize("name", ["mobilenet_v2_cifar", "tiny_cnn"])
def test_macs_match_flop_counter(name: str) -> None:
    model = get_model(name).eval()
    shapes = layer_shapes(model)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    # FlopCounterMode counts convolutions and matrix products only: 2 FLOPs per MAC
    assert sum(s.macs for s in shapes.values()) == counter.get_total_flops() // 2
    assert len(shapes) == sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())


def test_macs_by_hand() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 32*32*8 outputs * 3*3*3
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8),  # 16*16*8 * 9
        nn.Conv2d(8, 4, 1),  # 16*16*4 * 8
        nn.Flatten(),
        nn.Linear(4 * 16 * 16, 10),  # 1024 * 10
    )
    shapes = layer_shapes(model)
    assert [s.macs for s in shapes.values()] == [32 * 32 * 8 * 27, 16 * 16 * 8 * 9, 16 * 16 * 4 * 8, 1024 * 10]
    assert [s.kind for s in shapes.values()] == ["conv", "depthwise", "pointwise", "linear"]


def test_mobilenet_size_and_first_conv_stride() -> None:
    model = get_model("mobilenet_v2_cifar")
    assert sum(p.numel() for p in model.parameters()) == 2_236_682
    assert model.features[0][0].stride == (1, 1)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
