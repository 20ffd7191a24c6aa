"""LSTM and bidirectional LSTM pooling over the valid clips of each video.

The valid clips of a video are moved to the front in their original order (the mask need not be
a prefix), packed with ``pack_padded_sequence`` and run through the LSTM, so padded clips are
never stepped over. The video descriptor is the last layer's final hidden state: ``h_T`` of the
forward direction, concatenated with the backward direction's final state (after it has read
the first valid clip) for the bidirectional LSTM.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from heads._masking import prepare_clips


def valid_clips_first(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Move each video's valid clips to the front, keeping their order.

    Args:
        x: clip features ``(B, K, D)``.
        mask: ``(B, K)`` bool, True = valid.

    Returns:
        ``(x_sorted, lengths)``: features with the valid clips of row ``b`` in
        ``x_sorted[b, :lengths[b]]``, and the number of valid clips per video ``(B,)``.
    """
    order = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)  # (B, K): valid first
    index = order.unsqueeze(-1).expand(-1, -1, x.shape[-1])  # (B, K) -> (B, K, D)
    return x.gather(1, index), mask.sum(1)


class LSTMPooling(nn.Module):
    """The final hidden state of a (bi)LSTM run over the valid clips.

    A video without valid clips is read as a single all-zero clip.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_size: int = 256,
        *,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ) -> None:
        """Create the pooling.

        Args:
            in_dim: clip feature size ``D``.
            hidden_size: LSTM units per direction ``H``.
            num_layers: stacked LSTM layers.
            bidirectional: also run the clips backwards; the output is then ``2 H``.
            dropout: dropout between stacked layers (``nn.LSTM`` semantics).
        """
        super().__init__()
        if hidden_size < 1 or num_layers < 1:
            raise ValueError(f"hidden_size and num_layers must be >= 1, got {hidden_size}, "
                             f"{num_layers}")
        self.in_dim = in_dim
        self.num_layers = num_layers
        self.num_directions = 2 if bidirectional else 1
        self.out_dim = hidden_size * self.num_directions
        self.lstm = nn.LSTM(in_dim, hidden_size, num_layers=num_layers, batch_first=True,
                            bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pool ``(B, K, D)`` clips into ``(B, out_dim)``."""
        x, mask = prepare_clips(x, mask, in_dim=self.in_dim)
        x_sorted, lengths = valid_clips_first(x, mask)
        packed = pack_padded_sequence(x_sorted, lengths.clamp(min=1).cpu(), batch_first=True,
                                      enforce_sorted=False)
        _, (h_n, _) = self.lstm(packed)  # h_n: (layers * dirs, B, H)
        last = h_n.view(self.num_layers, self.num_directions, x.shape[0], -1)[-1]  # (dirs, B, H)
        return last.transpose(0, 1).reshape(x.shape[0], self.out_dim)  # (dirs, B, H) -> (B, dirs H)
