"""nn.GRU, nn.LSTM and nn.RNN as a time loop over one ``nn.Linear`` per weight matrix.

dse emulates, prices, searches and retrains Linear layers; a recurrent layer's products are two matrix
products per step (input-to-hidden, hidden-to-hidden) plus element-wise gate arithmetic. Unrolled, each
matrix is a Linear child with a stable name (``ih_l0``, ``hh_l0``, ``ih_l1_reverse``, an LSTM's projection
``hr_l0``), so an assignment can put ``weight_hh`` on a gentler multiplier than ``weight_ih``, and every
emulated path (tables, Mitchell, formats, decimal places, retraining) applies unchanged:

- the input-to-hidden products of a whole sequence are one call (they do not depend on the state);
- the hidden-to-hidden products are one call per time step on the sequences still running;
- packed sequences run as PyTorch's own kernels do: sorted by length, each step on its first
  ``batch_sizes[t]`` sequences, so a finished sequence's state is its last step's.

With float32 Linears it equals the PyTorch layer to float32 rounding (``tests/test_recurrent.py``).
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from dse.exceptions import ConfigError

__all__ = ["UnrolledRecurrent", "bounded_state_ranges", "unroll_recurrent"]

_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}
# element-wise products per hidden unit and step: GRU r*n_h, z*h, (1-z)*n; LSTM f*c, i*g, o*tanh(c)
_ELEMENTWISE = {"LSTM": 3, "GRU": 3, "RNN_TANH": 0, "RNN_RELU": 0}

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class UnrolledRecurrent(nn.Module):
    """A GRU/LSTM/RNN (any layers, directions, ``batch_first``, biases, LSTM projection, packed input) whose
    weight matrices are Linear children. Built from the PyTorch layer by :meth:`from_module`."""

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
    ) -> None:
        super().__init__()
        if mode not in _GATES:
            raise ConfigError(f"Recurrent mode {mode!r} is not one of {sorted(_GATES)}.")
        self.mode, self.input_size, self.hidden_size = mode, input_size, hidden_size
        self.num_layers, self.batch_first, self.dropout = num_layers, batch_first, dropout
        self.bidirectional, self.proj_size, self.bias = bidirectional, proj_size, bias
        gates = self.gates * hidden_size
        out = proj_size or hidden_size
        for layer in range(num_layers):
            inputs = input_size if layer == 0 else out * self.directions
            for suffix in self._suffixes(layer):
                self.add_module(f"ih{suffix}", _matrix(inputs, gates, bias, "input_to_hidden"))
                self.add_module(f"hh{suffix}", _matrix(out, gates, bias, "hidden_to_hidden"))
                if proj_size:
                    self.add_module(f"hr{suffix}", _matrix(hidden_size, proj_size, False, "projection"))

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def gates(self) -> int:
        """Gates per hidden unit: 3 (GRU), 4 (LSTM), 1 (RNN)."""
        return _GATES[self.mode]

    def elementwise_products(self, steps: int) -> int:
        """The gates' element-wise products over ``steps`` (batch x time) steps, every layer and direction."""
        return steps * self.num_layers * self.directions * _ELEMENTWISE[self.mode] * self.hidden_size

    def _suffixes(self, layer: int) -> list[str]:
        return [f"_l{layer}", f"_l{layer}_reverse"][: self.directions]

    @classmethod
    def from_module(cls, rnn: nn.RNNBase) -> UnrolledRecurrent:
        """The unrolled twin of ``rnn``, with its weights (and device, dtype)."""
        first = cast(torch.Tensor, rnn.weight_ih_l0)
        unrolled = cls(
            rnn.mode,
            rnn.input_size,
            rnn.hidden_size,
            rnn.num_layers,
            rnn.bias,
            rnn.batch_first,
            float(rnn.dropout),
            rnn.bidirectional,
            getattr(rnn, "proj_size", 0),
        ).to(device=first.device, dtype=first.dtype)
        with torch.no_grad():
            for layer in range(rnn.num_layers):
                for suffix in unrolled._suffixes(layer):
                    for matrix in ("ih", "hh", "hr"):
                        if not hasattr(rnn, f"weight_{matrix}{suffix}"):
                            continue
                        linear = cast(nn.Linear, unrolled.get_submodule(f"{matrix}{suffix}"))
                        linear.weight.copy_(getattr(rnn, f"weight_{matrix}{suffix}"))
                        if linear.bias is not None:
                            linear.bias.copy_(getattr(rnn, f"bias_{matrix}{suffix}"))
        return unrolled.train(rnn.training)

    def matrices(self) -> dict[str, nn.Module]:
        """Each weight matrix's Linear (or its emulated twin) by its name here."""
        return {name: m for name, m in self.named_children()}

    def extra_repr(self) -> str:
        extras = f", proj_size={self.proj_size}" if self.proj_size else ""
        return (
            f"{self.mode}, {self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"bidirectional={self.bidirectional}, batch_first={self.batch_first}{extras}"
        )

    # -- forward ----------------------------------------------------------------------
    def forward(self, input: torch.Tensor | PackedSequence, hx: State | None = None) -> tuple[Any, State]:
        """As the PyTorch layer: ``(output, h_n)`` or, for an LSTM, ``(output, (h_n, c_n))``."""
        packed = isinstance(input, PackedSequence)
        unbatched = False
        if isinstance(input, PackedSequence):
            data, batch_sizes = input.data, input.batch_sizes
            steps = [int(b) for b in batch_sizes]
        else:
            x = input
            if x.dim() == 2:  # one unbatched sequence (T, F)
                unbatched, x = True, x.unsqueeze(0 if self.batch_first else 1)
            if x.dim() != 3:
                raise ValueError(
                    f"{self.mode} expects a (batch, time, features) or packed input, got {tuple(x.shape)}."
                )
            if self.batch_first:
                x = x.transpose(0, 1)
            steps = [x.shape[1]] * x.shape[0]
            data = x.reshape(-1, x.shape[2])  # time-major rows: the packed layout of equal lengths
        batch = steps[0] if steps else 0
        h0, c0 = self._initial_state(hx, batch, data, unbatched)
        if packed:  # the caller's order -> sorted by length, as the packed data is
            assert isinstance(input, PackedSequence)
            h0, c0 = _permute(h0, input.sorted_indices), _permute(c0, input.sorted_indices)
        h_n, c_n = [], []
        layer_input = data
        for layer in range(self.num_layers):
            outputs = []
            for direction, suffix in enumerate(self._suffixes(layer)):
                index = layer * self.directions + direction
                out, h, c = self._direction(
                    layer_input, steps, suffix, h0[index], None if c0 is None else c0[index], direction == 1
                )
                outputs.append(out)
                h_n.append(h)
                if c is not None:
                    c_n.append(c)
            layer_input = torch.cat(outputs, dim=1) if len(outputs) > 1 else outputs[0]
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        h_out = torch.stack(h_n)
        c_out = torch.stack(c_n) if c_n else None
        if isinstance(input, PackedSequence):
            h_out, c_out = _permute(h_out, input.unsorted_indices), _permute(c_out, input.unsorted_indices)
            output: Any = PackedSequence(layer_input, input.batch_sizes, input.sorted_indices, input.unsorted_indices)
        else:
            output = layer_input.view(len(steps), batch, -1)
            if self.batch_first:
                output = output.transpose(0, 1)
            if unbatched:
                output = output.squeeze(0 if self.batch_first else 1)
                h_out, c_out = h_out.squeeze(1), (c_out.squeeze(1) if c_out is not None else None)
        return output, ((h_out, c_out) if c_out is not None else h_out)

    def _initial_state(
        self, hx: State | None, batch: int, like: torch.Tensor, unbatched: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        count, out = self.num_layers * self.directions, self.proj_size or self.hidden_size
        if hx is None:
            h0 = like.new_zeros(count, batch, out)
            return h0, (like.new_zeros(count, batch, self.hidden_size) if self.mode == "LSTM" else None)
        h0, c0 = (hx[0], hx[1]) if isinstance(hx, tuple) else (hx, None)
        if (c0 is None) != (self.mode != "LSTM"):
            raise ValueError(f"{self.mode} takes {'(h_0, c_0)' if self.mode == 'LSTM' else 'h_0 alone'} as hx.")
        if unbatched:
            h0, c0 = h0.unsqueeze(1), (c0.unsqueeze(1) if c0 is not None else None)
        if tuple(h0.shape) != (count, batch, out):
            raise ValueError(f"{self.mode}: h_0 has shape {tuple(h0.shape)}, expected {(count, batch, out)}.")
        return h0, c0

    def _direction(
        self,
        data: torch.Tensor,
        steps: list[int],
        suffix: str,
        h: torch.Tensor,
        c: torch.Tensor | None,
        reverse: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One layer and direction over every step: (outputs in packed row order, last h, last c)."""
        ih, hh = self.get_submodule(f"ih{suffix}"), self.get_submodule(f"hh{suffix}")
        hr = self.get_submodule(f"hr{suffix}") if self.proj_size else None
        gi_steps = ih(data).split(steps)  # the input's products: one call for the whole sequence
        outputs: list[torch.Tensor] = [data.new_empty(0)] * len(steps)
        for t in reversed(range(len(steps))) if reverse else range(len(steps)):
            n = steps[t]  # sequences still running (sorted by length: the first n)
            h_t = h[:n]
            gh = hh(h_t)
            new_h, new_c = self._cell(gi_steps[t], gh, h_t, c[:n] if c is not None else None)
            if hr is not None:
                new_h = hr(new_h)
            outputs[t] = new_h
            h = torch.cat([new_h, h[n:]]) if n < len(h) else new_h
            if c is not None and new_c is not None:
                c = torch.cat([new_c, c[n:]]) if n < len(c) else new_c
        return torch.cat(outputs) if outputs else data.new_empty(0, h.shape[1]), h, c

    def _cell(
        self, gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.mode == "GRU":  # PyTorch's gate order r, z, n; r scales the hidden product with its bias
            i_r, i_z, i_n = gi.chunk(3, 1)
            h_r, h_z, h_n = gh.chunk(3, 1)
            r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
            n = torch.tanh(i_n + r * h_n)
            return n + z * (h - n), None
        if self.mode == "LSTM":  # gate order i, f, g, o
            assert c is not None
            i, f, g, o = (gi + gh).chunk(4, 1)
            c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(c_new), c_new
        pre = gi + gh
        return (torch.tanh(pre) if self.mode == "RNN_TANH" else torch.relu(pre)), None


def _matrix(inputs: int, outputs: int, bias: bool, role: str) -> nn.Linear:
    """A Linear that knows which matrix of a recurrent layer it is (``dse.assignment.layer_kind`` reads it)."""
    linear = nn.Linear(inputs, outputs, bias)
    linear.recurrent_role = role  # type: ignore[assignment]  # a plain attribute, copied with the module
    return linear


def _permute(state: torch.Tensor | None, order: torch.Tensor | None) -> Any:
    if state is None or order is None:
        return state
    return state.index_select(1, order.to(state.device))


def unroll_recurrent(model: nn.Module) -> list[str]:
    """Replace every nn.GRU / nn.LSTM / nn.RNN of ``model`` (in place) by its :class:`UnrolledRecurrent`
    twin, same weights; returns their names. The model's outputs stay the same to float32 rounding."""
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.RNNBase)]
    for name, rnn in found:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, UnrolledRecurrent.from_module(rnn))
    return [name for name, _ in found]


def bounded_state_ranges(model: nn.Module) -> dict[str, tuple[float, float]]:
    """Input ranges of hidden-to-hidden matrices that are exact bounds, not measurements: the state of a GRU,
    an (unprojected) LSTM and a tanh RNN is a tanh (or a convex mix of tanh and a zero initial state), so
    it lies in [-1, 1] for every input; a calibrated range could be exceeded on unseen data and saturate."""
    ranges = {}
    for name, m in model.named_modules():
        if isinstance(m, UnrolledRecurrent) and m.mode in ("GRU", "LSTM", "RNN_TANH") and not m.proj_size:
            for child in m.matrices():
                if child.startswith("hh"):
                    ranges[f"{name}.{child}" if name else child] = (-1.0, 1.0)
    return ranges
