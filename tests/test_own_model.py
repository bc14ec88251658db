"""Your own model: a torchvision builder by name or any importable callable, its state_dict, layers grouped
by kind, BatchNorm folded, layers dse cannot emulate named and priced, Conv1d emulated like Conv2d."""

from __future__ import annotations

import logging
import textwrap
import warnings
from pathlib import Path

import optuna
import pytest
import torch
import torchvision
from hydra.utils import instantiate
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dse.assignment import LayerConfig, targetable_layers
from dse.batchnorm_folding import fold_batchnorm
from dse.candidates.transform import apply_assignment
from dse.config_building import build_trained_model, candidate_evaluator, model_layer_groups
from dse.cost.energy import FP32, EnergyModel
from dse.cost.macs import layer_shapes, unemulated_shapes
from dse.emulation import approximate_layer
from dse.exceptions import ConfigError
from dse.numerics.decimal_places import round_to_decimals
from dse.search_spaces.layer_groups import groups_by_kind, resolve_groups
from tests.conftest import FAST, compose_config, run_module

# A residual CNN of one's own, outside the package: the working directory is importable under python -m.
USER_MODULE = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Residual(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c),
            )

        def forward(self, x):
            return torch.relu(x + self.body(x))

    class MyNet(nn.Module):
        def __init__(self, num_classes=10, width=16):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
            self.block = Residual(width)
            self.head = nn.Linear(width, num_classes)

        def forward(self, x):
            return self.head(self.block(self.stem(x)).mean((2, 3)))
    """
)


def _with_running_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm statistics and affine terms, so folding has something to fold."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model_args", "space", "groups"),
    [
        (["model=torchvision", "model.arch=resnet18"], "decimal_places_group", {"first_conv", "conv", "pointwise"}),
        (
            ["model=custom", "model.builder._target_=my_net.MyNet"],
            "multipliers_group",
            {"first_conv", "conv", "pointwise"},
        ),
    ],
    ids=["torchvision_resnet18_decimals", "own_module_multipliers"],
)
def test_a_model_of_ones_own_is_searched_from_the_command_line_alone(
    workdir: Path, model_args: list[str], space: str, groups: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (workdir / "my_net.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(workdir))  # to save the weights here; the command imports it on its own
    cfg = compose_config(model_args)
    torch.manual_seed(0)
    net = _with_running_statistics(instantiate(cfg.model.builder))
    torch.save(net.state_dict(), workdir / "weights.pt")  # what a user trained, as a plain state_dict
    run = run_module(
        workdir,
        "dse.search",
        "study=quickstart",
        *model_args,
        "model.weights=weights.pt",
        f"space={space}",
        "tracking=none",
        "storage.url=sqlite:///own.db",
        "study.n_trials=4",
        *FAST,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    log = run.stdout + run.stderr
    assert "layers grouped by kind" in log and "Folded" in log
    study = optuna.load_study(study_name="quickstart", storage="sqlite:///own.db")
    trials = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(trials) == 4
    assert {p.split(".", 1)[1] for p in trials[0].params} == groups | {"linear"}  # the layer kinds, by name
    exact, uniform = trials[0], trials[1]
    assert set(exact.params.values()) == {"exact"}
    assert len(set(uniform.params.values())) == 1 and uniform.params != exact.params
    # every candidate scored on the 200 images and priced below the float32 model
    assert all(t.user_attrs["n_images"] == 200 for t in trials)
    assert all(t.user_attrs["energy_uj"] < exact.user_attrs["energy_uj"] for t in trials[1:])


def test_the_exact_folded_model_is_the_model_the_user_trained() -> None:
    """Folding changes the weights the search acts on, not the exact model's outputs."""
    torch.manual_seed(0)
    net = _with_running_statistics(torchvision.models.resnet18(num_classes=10))
    x = torch.randn(4, 3, 32, 32)
    before = net(x)
    pairs = fold_batchnorm(net)
    assert (
        len(pairs) == 20 and ("conv1", "bn1") in pairs and ("layer2.0.downsample.0", "layer2.0.downsample.1") in pairs
    )
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    torch.testing.assert_close(net(x), before, rtol=1e-5, atol=1e-5)
    assert net.conv1.bias is not None  # the BatchNorm's shift went into the bias


def test_a_batchnorm_folds_only_into_a_conv_nothing_else_reads() -> None:
    class Branching(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn, self.other = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Conv2d(3, 3, 1)
            self.conv2, self.bn2 = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.bn(y) + self.other(y) + self.bn2(self.conv2(x))

    net = _with_running_statistics(Branching())
    x = torch.randn(2, 3, 8, 8)
    before = net(x)
    assert fold_batchnorm(net) == [("conv2", "bn2")]
    assert isinstance(net.bn, nn.BatchNorm2d)  # conv's output also feeds `other`: folding would change it
    torch.testing.assert_close(net(x), before, rtol=1e-5, atol=1e-5)


def test_an_untraceable_model_keeps_its_batchnorms_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.conv(x)) if x.sum() > 0 else x

    net = DataDependent().eval()
    with caplog.at_level(logging.WARNING):
        assert fold_batchnorm(net) == []
    assert "cannot trace DataDependent" in caplog.text and "model.fold_batchnorm=false" in caplog.text
    assert isinstance(net.bn, nn.BatchNorm2d)


def test_fold_batchnorm_is_the_default_and_can_be_turned_off(caplog: pytest.LogCaptureFixture) -> None:
    folded = build_trained_model(compose_config(["model=tiny_cnn_cifar10"]).model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with caplog.at_level(logging.WARNING):
        kept = build_trained_model(compose_config(["model=tiny_cnn_cifar10", "model.fold_batchnorm=false"]).model)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in kept.modules()) == 7
    assert "BatchNorm layers stay float32" in caplog.text
    # the same layers, MACs and weights priced: folding moves the normalisation into biases, which are free
    assert layer_shapes(folded) == layer_shapes(kept)


def test_without_layer_groups_layers_are_grouped_by_kind(caplog: pytest.LogCaptureFixture) -> None:
    net = torchvision.models.resnet18(num_classes=10)
    groups = resolve_groups(net, groups_by_kind(net))
    assert groups["first_conv"] == ["conv1"]
    assert groups["pointwise"] == [f"layer{i}.0.downsample.0" for i in (2, 3, 4)]
    assert len(groups["conv"]) == 16 and groups["linear"] == ["fc"]
    mobilenet = torchvision.models.mobilenet_v3_small(num_classes=10)
    kinds = resolve_groups(mobilenet, groups_by_kind(mobilenet))
    assert {"first_conv", "pointwise", "depthwise", "linear"} <= set(kinds)
    grouped = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=2))
    assert resolve_groups(grouped, groups_by_kind(grouped)) == {"first_conv": ["0"], "grouped": ["1"]}
    cfg = compose_config(["model=torchvision"])
    with caplog.at_level(logging.INFO):
        assert model_layer_groups(cfg.model, net) == groups_by_kind(net)
    assert "model.layer_groups is not set: layers grouped by kind: first_conv (1), conv (16)" in caplog.text


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=custom"], "model.builder._target_ is not set"),
        (["model=tiny_cnn_cifar10", "model.builder._target_=torchvision.models.resnet18"], "~model.builder.<name>"),
        (["model=torchvision", "model.arch=resnet19"], "did you mean resnet18"),
        (["model=custom", "model.builder._target_=no_such_module.Net"], "model.builder (no_such_module.Net) failed"),
    ],
    ids=["no_builder", "leftover_argument", "unknown_arch", "not_importable"],
)
def test_a_builder_that_cannot_build_says_which_key_to_change(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        build_trained_model(compose_config(overrides).model)
    assert message in str(error.value)


class RowGRU(nn.Module):
    """A CIFAR-sized model whose GRU (rows as a sequence) holds most of the MACs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.gru = nn.GRU(4 * 32, 64, batch_first=True)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = self.conv(x).permute(0, 2, 1, 3).flatten(2)  # (N, 32 rows, 4*32)
        out, _ = self.gru(rows)
        return self.fc(out[:, -1])


def test_recurrent_and_attention_macs_by_hand() -> None:
    gru, lstm = nn.GRU(10, 20, num_layers=2, bidirectional=True), nn.LSTM(10, 20, proj_size=5)
    seq = nn.ModuleDict({"gru": gru, "lstm": lstm})

    class Both(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = seq

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layers["gru"](x)[0].sum() + self.layers["lstm"](x)[0].sum()

    shapes = unemulated_shapes(Both(), input_shape=(7, 10))  # unbatched: 7 steps of 10 features
    # GRU: 3 gates x 20 x (in + 20) per step and direction; layer 2 reads both directions (40)
    assert shapes["layers.gru"].macs == 7 * 2 * (3 * 20 * (10 + 20) + 3 * 20 * (40 + 20))
    # projected LSTM: 4 gates x 20 x (10 + 5) and the 20 -> 5 projection
    assert shapes["layers.lstm"].macs == 7 * (4 * 20 * (10 + 5) + 20 * 5)
    attention = nn.MultiheadAttention(16, 4, batch_first=True)

    class SelfAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = attention

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.attention(x, x, x)[0]

    model = SelfAttention()
    assert targetable_layers(model) == {}  # out_proj is called through its weight, not as a module
    (shape,) = unemulated_shapes(model, input_shape=(9, 16)).values()
    assert shape.macs == 4 * 9 * 16 * 16 + 2 * 9 * 9 * 16  # four projections, scores and weighted sum
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        nn.GRU(12, 8, batch_first=True)(torch.zeros(1, 5, 12))
    assert counter.get_total_flops() == 2 * 5 * 3 * 8 * (12 + 8)  # torch agrees where it sees the GRU's products


def test_layers_dse_cannot_emulate_are_named_with_their_share_and_priced_as_float32() -> None:
    cfg = compose_config(["model=tiny_cnn_cifar10", *FAST])
    model = RowGRU().eval()
    with pytest.warns(UserWarning, match=r"gru \(GRU, 9\d\.\d% of MACs\)") as record:
        candidates = candidate_evaluator(cfg, model)
    assert "float32" in str(record[0].message)
    assert list(candidates.shapes) == ["conv", "fc"]  # what an assignment can change
    gru = candidates.unemulated["gru"]
    assert gru.macs == 32 * 3 * 64 * (128 + 64)
    table = candidates.cost_table(model, {"conv": LayerConfig(multiplier="exact_s8")}).set_index("layer")
    energy: EnergyModel = instantiate(cfg.hardware.energy)
    assert table.loc["gru", "total_pj"] == pytest.approx(energy.layer_energy(gru, FP32, FP32).total_pj)
    assert table.loc["gru", "macs"] / table["macs"].sum() > 0.9
    assert table.loc["gru", "kind"] == "GRU"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        candidate_evaluator(cfg, nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 30 * 30, 10)))


@pytest.mark.parametrize("multiplier", ["mul8s_1KV9", "exact_s8", "mitchell_w6_s8"])
def test_conv1d_is_emulated_bit_for_bit_as_a_conv2d_of_height_one(multiplier: str) -> None:
    torch.manual_seed(0)
    conv1d = nn.Conv1d(6, 8, 5, stride=2, padding=2, dilation=2, groups=2)
    conv2d = nn.Conv2d(6, 8, (1, 5), stride=(1, 2), padding=(0, 2), dilation=(1, 2), groups=2)
    with torch.no_grad():
        conv2d.weight.copy_(conv1d.weight.unsqueeze(2))
        conv2d.bias.copy_(conv1d.bias)
    x = torch.randn(4, 6, 33)
    one, two = approximate_layer(conv1d, multiplier), approximate_layer(conv2d, multiplier, path="reference")
    one.set_activation_range(-2.0, 2.5)
    two.set_activation_range(-2.0, 2.5)
    y = one(x)
    assert y.shape == conv1d(x).shape
    assert torch.equal(y, two(x.unsqueeze(2)).squeeze(2))  # the chosen path against the reference products
    state = {k: v for k, v in one.state_dict().items() if k != "act_range"}
    nn.Conv1d(6, 8, 5, stride=2, padding=2, dilation=2, groups=2).load_state_dict(state)  # a Conv1d's state_dict
    one.train()
    x.requires_grad_(True)
    one(x).sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


def test_a_conv1d_model_takes_decimal_places_and_multipliers() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv1d(8, 4, 1), nn.Flatten(), nn.Linear(64, 5))
    model.eval()
    x = torch.randn(2, 3, 16)
    shapes = layer_shapes(model, input_shape=(3, 16))
    assert [s.kind for s in shapes.values()] == ["conv", "pointwise", "linear"]
    assert shapes["0"].macs == 16 * 8 * 3 * 3
    candidate = apply_assignment(
        model,
        {"0": LayerConfig(decimals=1), "2": LayerConfig(multiplier="mul8s_1KV9")},
        activation_ranges={"2": (0.0, 3.0)},
    )
    assert torch.equal(candidate[0].weight, round_to_decimals(model[0].weight, 1))
    assert type(candidate[2]).__name__ == "ApproxConv1d"
    assert not torch.equal(candidate(x), model(x))
