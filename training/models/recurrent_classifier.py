"""A recurrent sequence classifier (GRU or LSTM over NaN-padded batches) for time-series sets.

The batch is ``(batch, time, channels)`` with NaN after each sequence's end
(:mod:`dse.training.time_series`); the network packs it by those lengths, so padding never enters the
recurrence, and classifies the last layer's final state (both directions' when bidirectional).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from dse.training.time_series import sequence_lengths

from . import register_model

__all__ = ["RecurrentClassifier", "gru_classifier", "lstm_classifier"]


class RecurrentClassifier(nn.Module):
    """``rnn`` (nn.GRU / nn.LSTM, batch first) -> its last layer's final state -> ``classifier`` (Linear)."""

    def __init__(
        self,
        cell: str = "gru",
        input_size: int = 12,
        hidden_size: int = 64,
        num_layers: int = 1,
        num_classes: int = 9,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        kinds = {"gru": nn.GRU, "lstm": nn.LSTM}
        if cell not in kinds:
            raise ValueError(f"cell must be one of {sorted(kinds)}, got {cell!r}.")
        self.rnn = kinds[cell](
            input_size, hidden_size, num_layers, batch_first=True, bidirectional=bidirectional, dropout=dropout
        )
        self.directions = 2 if bidirectional else 1
        self.classifier = nn.Linear(hidden_size * self.directions, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lengths = sequence_lengths(x)
        packed = pack_padded_sequence(
            torch.nan_to_num(x, nan=0.0), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        _, state = self.rnn(packed)
        h_n = state[0] if isinstance(state, tuple) else state  # an LSTM's (h_n, c_n)
        last = h_n[-self.directions :]  # the last layer, each direction
        return self.classifier(last.transpose(0, 1).reshape(len(x), -1))


@register_model("gru_classifier")
def gru_classifier(**kwargs: object) -> RecurrentClassifier:
    """A GRU sequence classifier (keyword arguments of :class:`RecurrentClassifier`)."""
    return RecurrentClassifier("gru", **kwargs)  # type: ignore[arg-type]


@register_model("lstm_classifier")
def lstm_classifier(**kwargs: object) -> RecurrentClassifier:
    """An LSTM sequence classifier (keyword arguments of :class:`RecurrentClassifier`)."""
    return RecurrentClassifier("lstm", **kwargs)  # type: ignore[arg-type]
