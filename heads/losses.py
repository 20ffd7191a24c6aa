"""Multi-label losses: BCE family, focal, label correlation, LSEP, WARP, and a threshold head.

Every loss is an ``nn.Module`` built by name (``get_loss("lsep")``) whose
``forward(logits, targets, weight=None)`` takes logits ``(B, C)``, targets ``(B, C)`` in [0, 1]
(soft targets from mixup allowed) and optional per-class weights ``(C,)``, and returns a scalar:
the mean over the batch. Equations and references: heads/README.md, "Losses".

The pairwise losses never build ``(B, C, C)`` tensors. With pair weights
``w_pn = t_p (1 - t_n) c_p c_n`` (``t`` targets, ``c`` class weights) the pair sum factorises:

    sum_{p,n} w_pn exp(s_n - s_p) = (sum_n (1 - t_n) c_n e^{s_n}) (sum_p t_p c_p e^{-s_p})

and each factor is a weighted log-sum-exp, so the cost is O(B C). For hard targets this is
exactly the sum over (positive, negative) pairs; for soft targets every ordered pair (p, n),
p = n included, counts with weight ``t_p (1 - t_n)``. A sample without a positive or without a
negative has no pair: its pairwise loss is 0 (and its gradient 0); the batch mean still
divides by ``B``.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

LossBuilder = Callable[..., nn.Module]
BuilderT = TypeVar("BuilderT", bound=LossBuilder)

_LOSSES: dict[str, LossBuilder] = {}


def register_loss(name: str) -> Callable[[BuilderT], BuilderT]:
    """Register a loss builder (usually the module class) under ``name``.

    Raises:
        ValueError: when ``name`` is already registered (choose another name).
    """

    def decorator(builder: BuilderT) -> BuilderT:
        if name in _LOSSES:
            raise ValueError(
                f"loss {name!r} is already registered (by {_LOSSES[name].__qualname__}); "
                "choose another name for the new loss"
            )
        _LOSSES[name] = builder
        return builder

    return decorator


def list_losses() -> list[str]:
    """Return the names of all registered losses, sorted."""
    return sorted(_LOSSES)


def get_loss(name: str, **kwargs: object) -> nn.Module:
    """Build the loss registered under ``name`` with its keyword arguments.

    Raises:
        KeyError: unknown ``name``; the message lists the known names.
        TypeError: a keyword the loss does not accept; the message lists the accepted ones.
        ValueError: a value out of range.
    """
    if name not in _LOSSES:
        raise KeyError(f"unknown loss {name!r}; known losses: {', '.join(list_losses())}")
    builder = _LOSSES[name]
    accepted = set(inspect.signature(builder).parameters)
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise TypeError(
            f"loss {name!r} does not accept {', '.join(unknown)}; "
            f"it accepts: {', '.join(sorted(accepted)) or 'no arguments'}"
        )
    return builder(**kwargs)


def _check_inputs(
    logits: Tensor, targets: Tensor, weight: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Validate shapes; return logits (half precision raised to float32), targets and class
    weights (ones when None) in the logits' dtype."""
    if logits.ndim != 2 or tuple(targets.shape) != tuple(logits.shape):
        raise ValueError(
            "expected logits and targets of the same shape (B, C), got "
            f"{tuple(logits.shape)} and {tuple(targets.shape)}; one-hot/multi-hot encode targets"
        )
    if logits.dtype in (torch.float16, torch.bfloat16):  # exp and cumsum need the range
        logits = logits.float()
    if weight is None:
        weight = logits.new_ones(logits.shape[1])
    elif tuple(weight.shape) != (logits.shape[1],):
        raise ValueError(
            f"class weights must have shape ({logits.shape[1]},), got {tuple(weight.shape)}; "
            "build them with heads.losses.class_weights(train_labels)"
        )
    return logits, targets.to(logits.dtype), weight.to(logits.dtype)


def _weighted_logsumexp(x: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """``log sum_j w_j exp(x_j)`` per row for ``w >= 0``, and whether the row has a ``w_j > 0``.

    Rows whose weights are all zero get 0 instead of -inf so that gradients stay finite;
    callers mask them with the second output.
    """
    present = w > 0
    nonempty = present.any(dim=1)
    shift = torch.where(present, x, -math.inf).amax(dim=1, keepdim=True)  # (B, C) -> (B, 1)
    shift = torch.where(nonempty[:, None], shift, 0.0).detach()
    total = (w * torch.exp(torch.where(present, x - shift, -math.inf))).sum(dim=1)  # -> (B,)
    total = torch.where(nonempty, total, 1.0)
    return shift[:, 0] + torch.log(total), nonempty


def _pair_logsumexp(
    logits: Tensor, targets: Tensor, weight: Tensor, scale: float = 1.0
) -> tuple[Tensor, Tensor]:
    """``log sum_{p,n} t_p (1-t_n) c_p c_n exp(scale (s_n - s_p))`` per sample in O(B C).

    Returns the log-sum ``(B,)`` (0 where there is no pair) and the has-a-pair mask ``(B,)``.
    """
    log_neg, has_neg = _weighted_logsumexp(scale * logits, (1 - targets) * weight)
    log_pos, has_pos = _weighted_logsumexp(-scale * logits, targets * weight)
    return log_neg + log_pos, has_neg & has_pos


def _softplus(x: Tensor) -> Tensor:
    """``log(1 + e^x)`` without overflow and without torch's linear cut-off at x > 20."""
    return torch.relu(x) + torch.log1p(torch.exp(-x.abs()))


@register_loss("bce")
class BCELoss(nn.Module):
    """Binary cross-entropy on logits, mean over samples and classes."""

    def forward(self, logits: Tensor, targets: Tensor, weight: Tensor | None = None) -> Tensor:
        """Return ``mean_{b,c} c_c BCE(s_bc, t_bc)``."""
        logits, targets, weight = _check_inputs(logits, targets, weight)
        return F.binary_cross_entropy_with_logits(logits, targets, weight=weight)


@register_loss("scaled_bce")
class ScaledBCELoss(nn.Module):
    """``scale * mean BCE``: with ``scale=None`` the scale is C, i.e. sum over classes.

    The sum over classes (mean over samples) keeps per-class gradients from shrinking as C
    grows; the SenseTime challenge report found a larger factor (x160 the mean) best.
    """

    def __init__(self, *, scale: float | None = None) -> None:
        """Create the loss.

        Args:
            scale: factor on the mean BCE; None means the number of classes C.
        """
        super().__init__()
        if scale is not None and not scale > 0:
            raise ValueError(f"scale must be > 0 or None (= number of classes), got {scale}")
        self.scale = scale

    def forward(self, logits: Tensor, targets: Tensor, weight: Tensor | None = None) -> Tensor:
        """Return ``scale * mean_{b,c} c_c BCE(s_bc, t_bc)``."""
        logits, targets, weight = _check_inputs(logits, targets, weight)
        scale = logits.shape[1] if self.scale is None else self.scale
        return scale * F.binary_cross_entropy_with_logits(logits, targets, weight=weight)


@register_loss("focal")
class FocalLoss(nn.Module):
    """Sigmoid focal loss (Lin et al. 2017), mean over samples and classes.

    ``t alpha (1-p)^gamma (-log p) + (1-t) (1-alpha) p^gamma (-log(1-p))``, ``p = sigmoid(s)``.
    Linear in ``t``, so a mixup target gives the mixup of the two losses. With ``alpha=None``
    both terms have weight 1; with ``gamma=0`` and ``alpha=None`` it is BCE.
    """

    def __init__(self, *, alpha: float | None = 0.25, gamma: float = 2.0) -> None:
        """Create the loss.

        Args:
            alpha: weight of the positive term in [0, 1] (negatives get 1 - alpha), or None.
            gamma: focusing exponent >= 0.
        """
        super().__init__()
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] or None, got {alpha}")
        if not gamma >= 0.0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.alpha, self.gamma = alpha, gamma

    def forward(self, logits: Tensor, targets: Tensor, weight: Tensor | None = None) -> Tensor:
        """Return the class-weighted mean focal loss."""
        logits, targets, weight = _check_inputs(logits, targets, weight)
        log_p, log_q = F.logsigmoid(logits), F.logsigmoid(-logits)  # log p, log(1 - p)
        a_pos, a_neg = (1.0, 1.0) if self.alpha is None else (self.alpha, 1.0 - self.alpha)
        pos = a_pos * torch.exp(self.gamma * log_q) * -log_p
        neg = a_neg * torch.exp(self.gamma * log_p) * -log_q
        return (weight * (targets * pos + (1 - targets) * neg)).mean()


@register_loss("label_correlation")
class LabelCorrelationLoss(nn.Module):
    """Label-correlation loss of C2AE (Yeh et al. 2017), mean over samples.

    Per sample ``L = (1 / (P N)) sum_{p,n} w_pn exp(scale (s_n - s_p))`` with ``P N`` the
    (soft) pair count ``(sum_c t_c)(sum_c (1 - t_c))``. The loss grows exponentially with a
    wrong margin; past ``log L = max_log`` it continues linearly
    (``e^m (1 + log L - m)``, same value and slope at ``m``) so that values and gradients stay
    finite for any logits. ``max_log=None`` keeps the pure exponential.
    """

    def __init__(self, *, scale: float = 1.0, max_log: float | None = 30.0) -> None:
        """Create the loss.

        Args:
            scale: multiplies the score differences inside the exponential (> 0).
            max_log: where the exponential turns linear, in log-loss units; None for never.
        """
        super().__init__()
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale, self.max_log = scale, max_log

    def forward(self, logits: Tensor, targets: Tensor, weight: Tensor | None = None) -> Tensor:
        """Return the mean over the batch of the per-sample losses."""
        logits, targets, weight = _check_inputs(logits, targets, weight)
        log_sum, has_pair = _pair_logsumexp(logits, targets, weight, self.scale)
        n_pairs = targets.sum(dim=1) * (1 - targets).sum(dim=1)
        log_loss = log_sum - torch.log(torch.where(has_pair, n_pairs, 1.0))
        if self.max_log is None:
            per_sample = torch.exp(log_loss)
        else:
            capped = torch.clamp(log_loss, max=self.max_log)
            per_sample = torch.exp(capped) * (1 + torch.relu(log_loss - self.max_log))
        return torch.where(has_pair, per_sample, 0.0).mean()


@register_loss("focal_lc")
class FocalLabelCorrelationLoss(nn.Module):
    """Focal loss plus ``lc_weight`` x label-correlation loss (the Alibaba challenge report)."""

    def __init__(
        self,
        *,
        alpha: float | None = 0.25,
        gamma: float = 2.0,
        lc_weight: float = 1.0,
        lc_scale: float = 1.0,
        lc_max_log: float | None = 30.0,
    ) -> None:
        """Create the loss.

        Args:
            alpha, gamma: of :class:`FocalLoss`.
            lc_weight: the report's alpha, the weight of the label-correlation term (>= 0).
            lc_scale, lc_max_log: ``scale`` and ``max_log`` of :class:`LabelCorrelationLoss`.
        """
        super().__init__()
        if not lc_weight >= 0:
            raise ValueError(f"lc_weight must be >= 0, got {lc_weight}")
        self.lc_weight = lc_weight
        self.focal = FocalLoss(alpha=alpha, gamma=gamma)
        self.label_correlation = LabelCorrelationLoss(scale=lc_scale, max_log=lc_max_log)

    def forward(self, logits: Tensor, targets: Tensor, weight: Tensor | None = None) -> Tensor:
        """Return ``focal + lc_weight * label_correlation``."""
        focal = self.focal(logits, targets, weight)
        return focal + self.lc_weight * self.label_correlation(logits, targets, weight)


@register_loss("lsep")
class LSEPLoss(nn.Module):
    """Log-sum-exp pairwise loss (Li et al. 2017), mean over samples.

    Per sample ``log(1 + sum_{p,n} w_pn exp(s_n - s_p))``, computed as
    ``softplus(logsumexp_n + logsumexp_p)``. Pair with :class:`ThresholdHead` to turn the
    ranking into label sets.
    """

    def forward(self, logits: Tensor, targets: Tensor, weight: Tensor | None = None) -> Tensor:
        """Return the mean over the batch of the per-sample losses."""
        logits, targets, weight = _check_inputs(logits, targets, weight)
        log_sum, has_pair = _pair_logsumexp(logits, targets, weight)
        return torch.where(has_pair, _softplus(log_sum), 0.0).mean()


class ThresholdHead(nn.Module):
    """Per-class decision thresholds for a ranking loss such as LSEP (Li et al. 2017).

    Li et al. estimate the thresholds from the network's features (with a small MLP); here
    one linear layer, ``theta = W f + b``, from a feature vector ``f`` (the head's descriptor,
    the scores themselves, or a constant 1 for fixed per-class thresholds). Class ``c`` is
    predicted when ``s_c > theta_c``. Train it with :func:`threshold_loss`.
    """

    def __init__(self, in_features: int, num_classes: int) -> None:
        """Create the head.

        Args:
            in_features: size of the input features.
            num_classes: number of classes C.
        """
        super().__init__()
        if in_features < 1 or num_classes < 1:
            raise ValueError(
                f"in_features and num_classes must be >= 1, got {in_features}, {num_classes}"
            )
        self.linear = nn.Linear(in_features, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        """Return thresholds ``(B, C)`` from features ``(B, in_features)``."""
        return self.linear(features)  # (B, F) -> (B, C)


def threshold_loss(
    scores: Tensor, thresholds: Tensor, targets: Tensor, weight: Tensor | None = None
) -> Tensor:
    """BCE on ``score - threshold``: ``mean c_c BCE(s_bc - theta_bc, t_bc)``.

    The scores are detached: the loss moves the thresholds to the ranker, never the ranker
    to the thresholds, so LSEP alone shapes the scores.
    """
    scores, targets, weight = _check_inputs(scores, targets, weight)
    return F.binary_cross_entropy_with_logits(scores.detach() - thresholds, targets, weight=weight)


def predict_labels(scores: Tensor, thresholds: Tensor | float) -> Tensor:
    """Return the bool label matrix ``scores > thresholds`` (thresholds broadcast: (B, C), (C,))."""
    return scores > thresholds


@register_loss("warp")
class WARPLoss(nn.Module):
    """Weighted approximate-rank pairwise loss (Weston et al. 2011, WSABIE), sampled.

    For each positive ``p`` (target >= 0.5; soft targets are thresholded) negatives are drawn
    uniformly with replacement, at most ``min(num_samples, N_neg)`` of them, until one violates
    the margin (``margin + s_n - s_p > 0``). If the first violator is draw ``k``, the rank
    estimate is ``r = floor(N_neg / k)`` and the pair costs
    ``L(r) (margin + s_n - s_p) c_p c_n`` with ``L(r) = sum_{j<=r} 1/j``; with no violator the
    positive costs 0. ``L(r)`` is a constant in the gradient, as in the paper. Per-sample
    losses sum over positives; the result is their mean over the batch. Cost
    O(B C num_samples). The draws come from a ``torch.Generator`` seeded with ``seed`` (one
    per device), or from torch's global generator when ``seed`` is None.
    """

    def __init__(self, *, margin: float = 1.0, num_samples: int = 32, seed: int | None = None):
        """Create the loss.

        Args:
            margin: hinge margin (>= 0).
            num_samples: most negatives drawn per positive (>= 1).
            seed: seed of the loss's own generator; None uses torch's global generator.
        """
        super().__init__()
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.margin, self.num_samples, self.seed = margin, num_samples, seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def forward(self, logits: Tensor, targets: Tensor, weight: Tensor | None = None) -> Tensor:
        """Return the sampled WARP loss; draws ``(B, C, num_samples)`` uniforms."""
        logits, targets, weight = _check_inputs(logits, targets, weight)
        draws = torch.rand(
            (*logits.shape, self.num_samples),
            generator=self._generator(logits.device),
            device=logits.device,
            dtype=logits.dtype,
        )
        return _warp_from_draws(logits, targets, weight, draws, self.margin)


def _warp_from_draws(
    logits: Tensor, targets: Tensor, weight: Tensor, draws: Tensor, margin: float
) -> Tensor:
    """WARP given uniforms ``draws`` in [0, 1) of shape ``(B, C, T)``: draw ``j`` of positive
    ``p`` in sample ``b`` is the negative number ``floor(draws[b, p, j] * N_neg_b)`` (in class
    order) of that sample."""
    batch, n_classes, n_draws = draws.shape
    positive = targets >= 0.5
    n_neg = (~positive).sum(dim=1)  # (B,)
    neg_first = torch.argsort(positive.to(torch.int8), dim=1, stable=True)  # negatives first
    slot = (draws * n_neg[:, None, None]).long()
    slot = torch.minimum(slot, (n_neg - 1).clamp(min=0)[:, None, None])
    neg_idx = neg_first.gather(1, slot.reshape(batch, -1))  # (B, C*T) class ids of the draws
    neg_scores = logits.gather(1, neg_idx).reshape(batch, n_classes, n_draws)  # -> (B, C, T)
    hinge = margin + neg_scores - logits[:, :, None]  # (B, C, T)
    allowed = torch.arange(n_draws, device=logits.device)[None, None, :] < n_neg[:, None, None]
    violates = (hinge > 0) & allowed & positive[:, :, None]
    found = violates.any(dim=2)  # (B, C)
    first = violates.to(torch.int32).argmax(dim=2, keepdim=True)  # first violating draw
    rank = n_neg[:, None] // (first[:, :, 0] + 1)  # (B, C), >= 1 where found
    ranks = torch.arange(1, n_classes + 1, device=logits.device, dtype=logits.dtype)
    harmonic = torch.cat([logits.new_zeros(1), torch.cumsum(1.0 / ranks, dim=0)])  # L(0..C)
    neg_of_pair = neg_idx.reshape(batch, n_classes, n_draws).gather(2, first)[:, :, 0]
    pair = harmonic[rank] * hinge.gather(2, first)[:, :, 0] * weight * weight[neg_of_pair]
    return torch.where(found, pair, 0.0).sum(dim=1).mean()


def class_weights(labels: np.ndarray | Tensor, mode: str = "sqrt") -> Tensor:
    """Per-class weights from training labels: inverse frequency, normalised to mean 1.

    ``mode="linear"``: ``w_c ~ 1 / n_c``; ``"sqrt"``: ``w_c ~ 1 / sqrt(n_c)``; ``"none"``:
    all ones. ``n_c`` is the (soft) positive count of class ``c``, taken as at least 1 so that
    a class unseen in training gets the weight of a class seen once.

    Args:
        labels: ``(N, C)`` multi-hot (or soft) training labels.
        mode: "sqrt", "linear" or "none".

    Returns:
        float32 tensor ``(C,)`` whose mean is 1.
    """
    if mode not in ("sqrt", "linear", "none"):
        raise ValueError(f"mode must be 'sqrt', 'linear' or 'none', got {mode!r}")
    if not isinstance(labels, Tensor):
        labels = torch.as_tensor(np.asarray(labels))
    if labels.ndim != 2:
        raise ValueError(f"labels must have shape (N, C), got {tuple(labels.shape)}")
    counts = labels.to(torch.float64).sum(dim=0)  # (N, C) -> (C,)
    if (counts < 1).any():
        logger.debug("class_weights: %d classes have no positive", int((counts < 1).sum()))
    counts = counts.clamp(min=1.0)
    if mode == "none":
        weights = torch.ones_like(counts)
    else:
        weights = 1.0 / (counts if mode == "linear" else counts.sqrt())
    return (weights / weights.mean()).to(torch.float32)
