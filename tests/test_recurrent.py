"""Recurrent layers (issue 26): GRU/LSTM/RNN unrolled into one Linear per weight matrix, emulated bit-exactly,
searched per matrix, costed, retrained through time; the JapaneseVowels data module (aeon) and shipped GRU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from dse.assignment import LayerConfig, layer_kind, targetable_layers
from dse.candidates.transform import apply_assignment
from dse.config_building import build_trained_model
from dse.cost.macs import RECURRENT_GATES, layer_shapes, unemulated_shapes
from dse.emulation import ApproxLinear, UnrolledRecurrent, bounded_state_ranges, calibrate_ranges, unroll_recurrent
from dse.exceptions import CheckpointError, DataError
from dse.multipliers import get_multiplier
from dse.numerics.quantization import activation_qparams, quantize, weight_qparams
from dse.retrain import run_retrain
from dse.search_spaces.layer_groups import groups_by_kind
from dse.training.models.recurrent_classifier import gru_classifier
from dse.training.time_series import TimeSeriesDataModule, sequence_lengths
from dse.training.weights import load_weights
from tests.conftest import compose_config, run_module

RECURRENT = {
    "gru": lambda: nn.GRU(7, 11, num_layers=2, bidirectional=True),
    "lstm": lambda: nn.LSTM(7, 11, num_layers=2, bidirectional=True),
    "lstm_projected": lambda: nn.LSTM(7, 11, num_layers=2, proj_size=5),
    "gru_no_bias": lambda: nn.GRU(7, 11, bias=False),
    "rnn_relu": lambda: nn.RNN(7, 11, nonlinearity="relu", bidirectional=True),
}


def _states(state: torch.Tensor | tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    return list(state) if isinstance(state, tuple) else [state]


@pytest.mark.parametrize("kind", list(RECURRENT))
@pytest.mark.parametrize("batch_first", [False, True])
def test_unrolled_layer_equals_pytorch_on_padded_packed_and_unbatched_input(kind: str, batch_first: bool) -> None:
    torch.manual_seed(0)
    rnn = RECURRENT[kind]()
    rnn.batch_first = batch_first
    rnn.eval()
    unrolled = UnrolledRecurrent.from_module(rnn).eval()
    x = torch.randn(4, 9, 7) if batch_first else torch.randn(9, 4, 7)
    packed = pack_padded_sequence(x, torch.tensor([9, 3, 7, 1]), batch_first=batch_first, enforce_sorted=False)
    with torch.no_grad():
        for inputs in ((x,), (packed,), (x[0] if batch_first else x[:, 0],)):
            (want, want_state), (got, got_state) = rnn(*inputs), unrolled(*inputs)
            want_data, got_data = (want.data, got.data) if inputs[0] is packed else (want, got)
            assert got_data.shape == want_data.shape
            torch.testing.assert_close(got_data, want_data, rtol=1e-5, atol=1e-6)
            for w, g in zip(_states(want_state), _states(got_state), strict=True):
                torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
        # an initial state given by the caller is used (and permuted with the packed order)
        h0 = tuple(torch.randn_like(s) for s in _states(rnn(packed)[1]))
        hx = h0 if len(h0) == 2 else h0[0]
        torch.testing.assert_close(unrolled(packed, hx)[0].data, rnn(packed, hx)[0].data, rtol=1e-5, atol=1e-6)


def test_each_matrix_is_a_named_layer_with_its_role() -> None:
    model = nn.Sequential()
    model.add_module("rnn", nn.LSTM(7, 11, num_layers=2, bidirectional=True, proj_size=3))
    assert unroll_recurrent(model) == ["rnn"]
    layers = targetable_layers(model)
    assert sorted(layers) == sorted(
        f"rnn.{m}_l{i}{d}" for m in ("ih", "hh", "hr") for i in (0, 1) for d in ("", "_reverse")
    )
    assert {layer_kind(layers[n]) for n in ("rnn.ih_l1", "rnn.hh_l0_reverse", "rnn.hr_l0")} == {
        "input_to_hidden",
        "hidden_to_hidden",
        "projection",
    }
    assert list(groups_by_kind(model)) == ["input_to_hidden", "hidden_to_hidden", "projection"]
    assert bounded_state_ranges(model) == {}  # a projected state is not bounded by a tanh


def _reference_gru_logits(net: nn.Module, x: torch.Tensor, ranges: dict, multiplier: str) -> torch.Tensor:
    """An independent emulation of the unrolled GRU classifier: quantize each operand, look each product up
    in the multiplier's table one step at a time, correct the zero points, rescale (numpy, float64)."""
    m = get_multiplier(multiplier)
    table, offset = m.table().astype(np.float64), (2**m.bits if m.signed else 0)

    def linear(name: str, inputs: torch.Tensor) -> np.ndarray:
        layer = net.get_submodule(name)
        wp = weight_qparams(layer.weight, m.bits, m.signed)
        w = quantize(layer.weight.detach().float(), wp.scale[:, None], wp.zero_point[:, None], m.bits, m.signed)
        ap = activation_qparams(*ranges[name], m.bits, m.signed)
        a = quantize(inputs.float(), ap.scale, float(ap.zero_point), m.bits, m.signed).numpy().astype(np.int64)
        w_np, zw = w.numpy().astype(np.int64), wp.zero_point.numpy().astype(np.float64)
        za = float(ap.zero_point)
        out = np.zeros((a.shape[0], w_np.shape[0]))
        for i in range(a.shape[0]):
            for o in range(w_np.shape[0]):
                products = table[a[i] % offset if offset else a[i], w_np[o] % offset if offset else w_np[o]]
                acc = products.sum() - zw[o] * a[i].sum() - za * w_np[o].sum() + len(a[i]) * za * zw[o]
                out[i, o] = acc * float(ap.scale) * float(wp.scale[o])
        return out + layer.bias.detach().double().numpy()

    lengths = sequence_lengths(x)
    inputs = torch.nan_to_num(x)
    h = np.zeros((len(x), net.rnn.hidden_size))
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    for t in range(x.shape[1]):
        gi, gh = linear("rnn.ih_l0", inputs[:, t]), linear("rnn.hh_l0", torch.from_numpy(h).float())
        (i_r, i_z, i_n), (h_r, h_z, h_n) = np.split(gi, 3, axis=1), np.split(gh, 3, axis=1)
        r, z = sigmoid(i_r + h_r), sigmoid(i_z + h_z)
        n = np.tanh(i_n + r * h_n)
        new = (1 - z) * n + z * h
        running = (t < lengths.numpy())[:, None]
        h = np.where(running, new, h).astype(np.float32).astype(np.float64)  # the state is float32 between steps
    return torch.from_numpy(linear("classifier", torch.from_numpy(h).float()))


@pytest.mark.parametrize("multiplier", ["mul8s_1L2N", "mul8u_NLX", "mitchell_w4_s8"])
def test_a_table_on_every_matrix_equals_an_independent_per_product_reference(multiplier: str) -> None:
    torch.manual_seed(0)
    net = gru_classifier(input_size=5, hidden_size=6, num_classes=4).eval()
    unroll_recurrent(net)
    x = torch.randn(3, 6, 5)
    x[1, 4:] = float("nan")  # lengths 6, 4, 2: padded, packed inside the model
    x[2, 2:] = float("nan")
    layers = list(targetable_layers(net))
    ranges = calibrate_ranges(net, [x], layers) | bounded_state_ranges(net)
    assert ranges["rnn.hh_l0"] == (-1.0, 1.0)
    emulated = apply_assignment(net, {n: LayerConfig(multiplier=multiplier) for n in layers}, ranges)
    reference_path = apply_assignment(net, {n: LayerConfig(multiplier=multiplier) for n in layers}, ranges, "reference")
    assert isinstance(emulated.get_submodule("rnn.hh_l0"), ApproxLinear)
    with torch.no_grad():
        got = emulated(x)
        assert torch.equal(got, reference_path(x))  # every emulation path, bit for bit
        want = _reference_gru_logits(net, x, ranges, multiplier)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got, net(x), atol=1e-3)  # the approximation shows


def test_the_hidden_matrix_can_take_a_gentler_multiplier_than_the_input_one() -> None:
    net = gru_classifier(input_size=5, hidden_size=6, num_classes=4).eval()
    unroll_recurrent(net)
    x = torch.randn(2, 5, 5)
    ranges = calibrate_ranges(net, [x], list(targetable_layers(net))) | bounded_state_ranges(net)
    assignment = {
        "rnn.ih_l0": LayerConfig(multiplier="mitchell_w2_s8"),
        "rnn.hh_l0": LayerConfig(multiplier="exact_s8"),
    }
    candidate = apply_assignment(net, assignment, ranges)
    assert candidate.get_submodule("rnn.ih_l0").multiplier.name == "mitchell_w2_s8"
    assert candidate.get_submodule("rnn.hh_l0").multiplier.name == "exact_s8"
    assert isinstance(candidate.get_submodule("classifier"), nn.Linear)
    assert not isinstance(candidate.get_submodule("classifier"), ApproxLinear)


def test_gradients_reach_every_recurrent_parameter_through_time() -> None:
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("rnn", nn.GRU(5, 6, num_layers=2, bidirectional=True, batch_first=True))
    unroll_recurrent(model)
    x = torch.randn(3, 7, 5)
    packed = pack_padded_sequence(x, torch.tensor([7, 5, 2]), batch_first=True, enforce_sorted=False)
    layers = list(targetable_layers(model))
    ranges = calibrate_ranges(model, [packed], layers)
    assignment = {n: LayerConfig(multiplier="mul8s_1L2N", decimals=3) for n in layers}
    candidate = apply_assignment(model, assignment, ranges, trainable=True).train()
    output, h_n = candidate(packed)
    (output.data.sum() + h_n.sum()).backward()
    named = dict(candidate.named_parameters())
    assert len(named) == 16  # weight and bias of ih and hh, 2 layers x 2 directions
    for name, p in named.items():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_recurrent_costs_by_hand() -> None:
    """MACs per sequence: steps x gates x hidden x inputs (input products) and x hidden (hidden products),
    the gates' element-wise products apart (float32), the hidden state's reads summed over steps."""
    gru = gru_classifier(input_size=12, hidden_size=64, num_classes=9).eval()
    unroll_recurrent(gru)
    shapes, gates = layer_shapes(gru, (15, 12)), unemulated_shapes(gru, (15, 12))
    assert shapes["rnn.ih_l0"].macs == 15 * 3 * 64 * 12
    assert shapes["rnn.hh_l0"].macs == 15 * 3 * 64 * 64
    assert shapes["rnn.hh_l0"].input_numel == 15 * 64  # the state, read at every step
    assert shapes["rnn.hh_l0"].weight_numel == 3 * 64 * 64  # weights once
    assert shapes["classifier"].macs == 64 * 9
    assert gates["rnn"].kind == RECURRENT_GATES and gates["rnn"].macs == 15 * 64 * 3  # r*n_h, z*h, (1-z)*n
    lstm = nn.Sequential()
    lstm.add_module("rnn", nn.LSTM(10, 20, num_layers=2, bidirectional=True))
    unroll_recurrent(lstm)
    shapes, gates = layer_shapes(lstm, (7, 10)), unemulated_shapes(lstm, (7, 10))
    assert shapes["rnn.ih_l0_reverse"].macs == 7 * 4 * 20 * 10
    assert shapes["rnn.ih_l1"].macs == 7 * 4 * 20 * 40  # layer 2 reads both directions
    assert sum(s.macs for s in shapes.values()) == 7 * 2 * (4 * 20 * (10 + 20) + 4 * 20 * (40 + 20))
    assert gates["rnn"].macs == 7 * 2 * 2 * 20 * 3  # steps x layers x directions x hidden x (f*c, i*g, o*tanh c)
    assert gates["rnn"].output_numel == 7 * 2 * 2 * 20 * 2  # h and c written


# -- data, the shipped model, the study ----------------------------------------------------------------------


def test_japanese_vowels_loads_offline_with_two_disjoint_halves() -> None:
    halves = {}
    for split in ("search", "held_out", "all"):
        data = TimeSeriesDataModule(test_split=split)
        data.setup("fit")
        halves[split] = data
    every = halves["all"]
    assert len(every.train_dataloader().dataset) == 270 and every.n_test == 370
    assert halves["search"].n_test + halves["held_out"].n_test == 370
    assert not set(halves["search"].test_indices) & set(halves["held_out"].test_indices)
    assert every.classes == tuple(str(c) for c in range(1, 10))
    x, _ = every.test_dataloader().dataset[:]
    lengths = sequence_lengths(x)
    assert (int(lengths.min()), int(lengths.max()), x.shape[2]) == (7, 29, 12)
    assert every.input_shape == (15, 12)  # the median training length prices a sequence
    calibration = every.calibration_images(64, 0)
    assert calibration is not None and calibration.shape[0] == 64


def test_a_config_built_gru_is_unrolled_and_predicts_as_the_checkpoint() -> None:
    model = build_trained_model(compose_config(["study=gru_japanese_vowels"]).model)
    assert isinstance(model.rnn, UnrolledRecurrent)
    original = load_weights(gru_classifier(), "gru_japanese_vowels").eval()
    data = TimeSeriesDataModule(test_split="all")
    data.setup("test")
    x, y = data.test_dataloader().dataset[:]
    with torch.no_grad():
        predicted = model(x).argmax(1)
        assert torch.equal(predicted, original(x).argmax(1))
    assert int((predicted == y).sum()) == 366  # of 370: the model card's


@pytest.mark.slow
def test_a_gru_study_searches_each_matrix_and_reports_on_held_out_sequences(workdir: Path) -> None:
    proc = run_module(workdir, "dse.search", "study=gru_japanese_vowels", "study.n_trials=14", timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "of 183" in out and "of 187" in out  # search half, held-out half
    import optuna

    study = optuna.load_study(study_name="gru_japanese_vowels", storage="sqlite:///mlruns/optuna.db")
    params = set().union(*(t.params for t in study.trials))
    assert {"multiplier.rnn.ih_l0", "multiplier.rnn.hh_l0", "decimals.rnn.hh_l0"} <= params
    energies = [t.values[1] for t in study.trials if t.values]
    assert min(energies) < 0.5 * max(energies)  # 8-bit matrices cost far less than float32 ones


# -- bad input -------------------------------------------------------------------------------------------------


def test_a_checkpoint_of_another_hidden_size_is_refused_clearly() -> None:
    cfg = compose_config(["study=gru_japanese_vowels", "model.builder.hidden_size=32"])
    with pytest.raises(CheckpointError, match=r"(?s)does not fit the model.*size mismatch for rnn.weight_hh_l0"):
        build_trained_model(cfg.model)


def test_an_unknown_aeon_set_is_refused_with_where_to_find_names() -> None:
    with pytest.raises(DataError, match=r"aeon knows no classification set named 'JapaneseVowel'.*tsc_datasets"):
        TimeSeriesDataModule(name="JapaneseVowel").setup("test")


def test_padding_without_lengths_is_refused(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(6, 5, 2)).astype(np.float32)
    x[0, 3:] = np.nan  # padded, but the file says nothing of lengths
    y = np.array([0, 1, 0, 1, 0, 1])
    path = tmp_path / "seq.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)
    with pytest.raises(DataError, match="holds NaN but the file has no lengths_train"):
        TimeSeriesDataModule(path=str(path)).setup("fit")
    np.savez(path, x_train=np.nan_to_num(x), y_train=y, x_test=x, y_test=y, lengths_train=[3, 5, 5, 5, 5, 5],
             lengths_test=[3, 5, 5, 5, 5, 5])  # fmt: skip
    data = TimeSeriesDataModule(path=str(path))
    data.setup("fit")
    assert sequence_lengths(data.test_dataloader().dataset[:][0]).tolist() == [3, 5, 5, 5, 5, 5]
    gap = torch.ones(1, 5, 2)
    gap[0, 2] = float("nan")  # a hole inside a sequence is not padding
    with pytest.raises(DataError, match="NaN inside a sequence"):
        sequence_lengths(gap)


def test_a_space_naming_a_matrix_the_model_lacks_is_refused_before_anything_is_created(workdir: Path) -> None:
    proc = run_module(
        workdir, "dse.search", "study=gru_japanese_vowels", "+space.layers=[rnn.hh_l0,rnn.hh_l1]", timeout=300
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out, out[-2000:]
    assert "rnn.hh_l1" in out and "rnn.hh_l0" in out
    assert not (workdir / "mlruns").exists()


@pytest.mark.slow
@pytest.mark.parametrize("forward", ["bit_exact", "error_model"])
def test_retraining_through_time_wins_back_accuracy_lost_to_a_coarse_multiplier(workdir: Path, forward: str) -> None:
    """mul8u_R36 (32% mean relative error) on both GRU matrices and the classifier leaves the shipped GRU
    near chance on the 183 held-out sequences; retraining with it in the forward pass (BPTT, straight-through
    gradients: the bit-exact forward or the fitted error model) wins most of it back."""
    assignment = workdir / "r36.yaml"
    assignment.write_text(
        "".join(f"{n}: {{multiplier: mul8u_R36}}\n" for n in ("rnn.ih_l0", "rnn.hh_l0", "classifier"))
    )
    cfg = compose_config(
        [
            "study=gru_japanese_vowels",
            f"assignment={assignment}",
            f"retrain.forward={forward}",
            "tracking=none",
            "data.test_split=held_out",
        ],
        "retrain",
    )
    result = run_retrain(cfg)
    assert result.training_forward == forward
    assert result.accuracy_before < 0.2  # measured 0.066 (chance: 0.11)
    assert result.accuracy_after > result.accuracy_before + 0.4  # measured 0.765 (bit-exact, 10 epochs)


def test_export_refuses_a_recurrent_model_clearly(workdir: Path) -> None:
    (workdir / "int8.yaml").write_text("classifier: {weight_format: int8, activation_format: int8}\n")
    proc = run_module(
        workdir, "dse.export", "study=gru_japanese_vowels", "assignment=int8.yaml", "tracking=none", timeout=300
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out, out[-2000:]
    assert "does not deploy recurrent layers yet (rnn)" in out
    assert not (workdir / "deployments").exists()
