"""The registered heads as one table: a pooling, its keywords, and the head's defaults per entry.

Every head is ``pooling -> VideoMLP -> classifier`` (:func:`heads.pooling.assemble_head`); the
twelve registered heads differ only in the pooling, its keywords and a few defaults, so each is
one :class:`HeadVariant` entry of :data:`HEADS`, and one builder per entry is registered under
its name (``get_head("nextvlad", ...)``). Adding a head with an existing pooling is one entry;
a new pooling is one module with its ``nn.Module`` plus one entry.

A builder's keywords: ``in_dim``, ``num_classes``, the pooling's ``options``, ``inner_dim``
(non-local heads: inner size of the non-local block, default ``D // 2``), ``hidden_dim`` (units
of the MLP layer or projection; ``None``: none), ``gating`` (context gating after it; SE context
gating for NeXtVLAD, with ``se_reduction``), ``classifier`` (``"logistic"`` or ``"moe"``),
``num_experts`` (experts per class of ``"moe"``) and ``dropout`` (before the linear layers; the
LSTM poolings also use it between layers).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from heads.lstm import LSTMPooling
from heads.moe import ClassifierKind
from heads.netvlad import NetRVLAD, NetVLAD, SoftDBoF
from heads.nextvlad import NeXtVLAD
from heads.nonlocal_gating import NonLocalPooling
from heads.pooling import MaxPooling, MeanPooling, PooledHead, assemble_head
from heads.registry import register_head


@dataclass(frozen=True)
class HeadVariant:
    """One registered head.

    Attributes:
        doc: the builder's docstring.
        pooling: ``pooling(in_dim, **options)`` -> a pooling ``(B, K, D) -> (B, P)``.
        options: the pooling's keywords and their defaults (the builder's own keywords).
        hidden_dim: default units of the MLP layer (None: no hidden layer).
        gating: default of ``gating``.
        se_gating: SE context gating (``se_reduction`` keyword) instead of context gating.
        nonlocal_block: a non-local block before the pooling (``inner_dim`` keyword).
        pooling_dropout: the pooling also takes the head's ``dropout``.
    """

    doc: str
    pooling: Callable[..., nn.Module]
    options: Mapping[str, Any] = field(default_factory=dict)
    hidden_dim: int | None = 512
    gating: bool = True
    se_gating: bool = False
    nonlocal_block: bool = False
    pooling_dropout: bool = False

    def parameters(self) -> list[inspect.Parameter]:
        """The builder's keyword-only parameters, in the order of the signature."""
        def kw(name: str, default: Any = inspect.Parameter.empty, annotation: Any = Any) -> inspect.Parameter:
            return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)

        params = [kw("in_dim", annotation=int), kw("num_classes", annotation=int)]
        params += [kw(k, v, type(v)) for k, v in self.options.items()]
        if self.nonlocal_block:
            params.append(kw("inner_dim", None, int | None))
        params += [kw("hidden_dim", self.hidden_dim, int | None), kw("gating", self.gating, bool)]
        if self.se_gating:
            params.append(kw("se_reduction", 8, int))
        return params + [kw("classifier", "logistic", ClassifierKind), kw("num_experts", 2, int),
                         kw("dropout", 0.0, float)]

    def build(self, **kwargs: Any) -> PooledHead:
        """The head for the builder's keywords (all given, defaults filled in)."""
        options = {k: kwargs[k] for k in self.options}
        if self.pooling_dropout:
            options["dropout"] = kwargs["dropout"]
        pooling = self.pooling(kwargs["in_dim"], **options)
        if self.nonlocal_block:
            pooling = NonLocalPooling(pooling, inner_dim=kwargs["inner_dim"])
        gating = ("se" if self.se_gating else "context") if kwargs["gating"] else "none"
        extra = {"se_reduction": kwargs["se_reduction"]} if self.se_gating else {}
        return assemble_head(pooling, num_classes=kwargs["num_classes"], hidden_dim=kwargs["hidden_dim"],
                             gating=gating, classifier=kwargs["classifier"], num_experts=kwargs["num_experts"],
                             dropout=kwargs["dropout"], **extra)


def _lstm(in_dim: int, *, lstm_size: int, num_layers: int, dropout: float) -> LSTMPooling:
    return LSTMPooling(in_dim, lstm_size, num_layers=num_layers, dropout=dropout)


def _bilstm(in_dim: int, *, lstm_size: int, num_layers: int, dropout: float) -> LSTMPooling:
    return LSTMPooling(in_dim, lstm_size, num_layers=num_layers, bidirectional=True, dropout=dropout)


_LSTM = {"lstm_size": 256, "num_layers": 1}
_NEXTVLAD = {"num_clusters": 64, "expansion": 2, "groups": 8}

HEADS: dict[str, HeadVariant] = {
    "mean_mlp": HeadVariant("Mean over valid clips -> MLP (``hidden_dim`` units, None = no hidden layer) -> "
                            "classifier.", MeanPooling, gating=False),
    "max_mlp": HeadVariant("Max over valid clips -> MLP -> classifier.", MaxPooling, gating=False),
    "lstm": HeadVariant("LSTM final state -> [hidden layer] -> [context gating] -> classifier.", _lstm, _LSTM,
                        hidden_dim=None, gating=False, pooling_dropout=True),
    "bilstm": HeadVariant("Bidirectional LSTM (both final states, ``2 H``) -> [hidden layer] -> [context gating] -> "
                          "classifier.", _bilstm, _LSTM, hidden_dim=None, gating=False, pooling_dropout=True),
    "netvlad": HeadVariant("NetVLAD -> projection (Linear, BN, ReLU) -> context gating -> classifier.", NetVLAD,
                           {"num_clusters": 32}),
    "netrvlad": HeadVariant("NetRVLAD -> projection -> context gating -> classifier.", NetRVLAD,
                            {"num_clusters": 32}),
    "softdbof": HeadVariant("Soft-DBoF (``max_pool``: also the max-pooled assignments) -> projection -> context "
                            "gating -> classifier.", SoftDBoF, {"num_clusters": 256, "max_pool": False}),
    "nextvlad": HeadVariant("NeXtVLAD -> dropout -> projection (Linear, BN, ReLU) -> SE context gating -> "
                            "classifier.", NeXtVLAD, _NEXTVLAD, se_gating=True),
    "nonlocal_netvlad": HeadVariant("Non-local block -> NetVLAD -> MLP + context gating -> classifier.", NetVLAD,
                                    {"num_clusters": 32}, nonlocal_block=True),
    "nonlocal_nextvlad": HeadVariant("Non-local block -> NeXtVLAD -> MLP + context gating -> classifier.", NeXtVLAD,
                                     _NEXTVLAD, nonlocal_block=True),
    "nonlocal_lstm": HeadVariant("Non-local block -> LSTM final state -> MLP + context gating -> classifier.", _lstm,
                                 _LSTM, nonlocal_block=True, pooling_dropout=True),
    "nonlocal_bilstm": HeadVariant("Non-local block -> BiLSTM final states -> MLP + context gating -> classifier.",
                                   _bilstm, _LSTM, nonlocal_block=True, pooling_dropout=True),
}


def head_builder(name: str, variant: HeadVariant) -> Callable[..., PooledHead]:
    """The keyword-only builder of ``variant``, named ``name``, with a real signature."""
    signature = inspect.Signature(variant.parameters(), return_annotation=PooledHead)

    def build(**kwargs: Any) -> PooledHead:
        bound = signature.bind(**kwargs)  # a keyword the head does not take is a TypeError
        bound.apply_defaults()
        return variant.build(**bound.arguments)

    build.__signature__ = signature  # type: ignore[attr-defined]
    build.__name__ = build.__qualname__ = name
    build.__doc__ = variant.doc
    return build


for _name, _variant in HEADS.items():
    register_head(_name)(head_builder(_name, _variant))
