"""LyCORIS weight deltas: LoHa, LoKr and full differences, for one module of a LoRA-style file.

Formats (KohakuBlueleaf/LyCORIS, as A1111's and ComfyUI's loaders read its files):
- LoHa (Hadamard product of two low-rank products, FedPara, Hyeon-Woo et al. 2022):
  ΔW = (w1a @ w1b) ⊙ (w2a @ w2b) · alpha / r, r = hada_w1_b.shape[0]. Conv weights are stored flattened
  ([out, r] @ [r, in·kh·kw]) and reshaped to the kernel. The Tucker form (`hada_t1`/`hada_t2`, conv only)
  rebuilds each factor as W[p, q, k, l] = Σ_ij t[i, j, k, l] · wa[i, p] · wb[j, q], with wa [r, out] and
  wb [r, in].
- LoKr (Kronecker product, Yeh et al. 2024, "Navigating Text-To-Image Customization"): ΔW = kron(w1, w2),
  each factor stored full (`lokr_w1`, `lokr_w2`) or low-rank (`_a @ _b`; w2 also in the Tucker form with
  `lokr_t2`). The scale alpha / rank applies only when a factor is low-rank; rank is lokr_w2_b's first
  dimension when w2 is low-rank, else lokr_w1_b's. With both factors full, alpha is ignored (LyCORIS trains
  that case with scale 1). A 2-D w1 with a 4-D w2 is a [a, c, 1, 1] kernel in the product.
- Full differences: `diff` is ΔW itself, `diff_b` is the bias delta; no scale.
No alpha means scale 1, as for plain LoRA. The user's strength is not applied here (WeightPatch does it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from sdstudio.engine.errors import NetworkFileError

LOHA_SUFFIXES = frozenset({"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"})
LOKR_SUFFIXES = frozenset({"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b",
                           "lokr_t2"})
DIFF_SUFFIXES = frozenset({"diff", "diff_b"})
LYCORIS_SUFFIXES = LOHA_SUFFIXES | LOKR_SUFFIXES | DIFF_SUFFIXES

def lycoris_deltas(parts: Mapping[str, Tensor]) -> dict[str, LycorisDelta]:
    """One module's tensors, keyed by suffix (may include "alpha"), -> {"weight": fn} and/or {"bias": fn}.
    fn(original float32 weight) gives ΔW in float32 with the original's number of elements, scaled as the
    format defines. Factors are checked against each other here, and each function's `shape` (known before
    anything is computed) against the weight by `check`, which the function itself also calls."""
    unknown = sorted(set(parts) - LYCORIS_SUFFIXES - {"alpha"})
    if unknown:
        raise NetworkFileError(f"LyCORIS module has tensors SD Studio does not apply: {', '.join(unknown)}")
    kinds = [name for name, suffixes in (("LoHa", LOHA_SUFFIXES), ("LoKr", LOKR_SUFFIXES),
                                         ("full diff", {"diff"})) if suffixes & set(parts)]
    if len(kinds) > 1:
        raise NetworkFileError(f"LyCORIS module mixes {' and '.join(kinds)} tensors; "
                               "a module is of one kind")
    # Kept in the stored dtype (a file costs its own size); products are taken in float32 when applied.
    tensors = dict(parts)
    alpha = _alpha(tensors.pop("alpha", None))
    deltas: dict[str, LycorisDelta] = {}
    if kinds == ["LoHa"]:
        deltas["weight"] = LycorisDelta("LoHa", *_loha(tensors, alpha))
    elif kinds == ["LoKr"]:
        deltas["weight"] = LycorisDelta("LoKr", *_lokr(tensors, alpha))
    elif kinds == ["full diff"]:
        diff = tensors["diff"]
        deltas["weight"] = LycorisDelta("full diff", tuple(diff.shape), diff.float)
    if "diff_b" in tensors:
        diff_b = tensors["diff_b"]
        deltas["bias"] = LycorisDelta("bias diff", tuple(diff_b.shape), diff_b.float)
    if not deltas:
        raise NetworkFileError("LyCORIS module has no weight tensors (only an alpha)")
    return deltas


def _alpha(alpha: Tensor | None) -> float | None:
    if alpha is None:
        return None
    if alpha.numel() != 1:
        raise NetworkFileError(f"LyCORIS alpha must be one number, found shape {tuple(alpha.shape)}")
    return float(alpha.float().reshape(()))


def _need(tensors: Mapping[str, Tensor], *names: str) -> list[Tensor]:
    missing = [n for n in names if n not in tensors]
    if missing:
        raise NetworkFileError(f"LyCORIS module is incomplete: {', '.join(missing)} missing "
                               f"(it has {', '.join(sorted(tensors))})")
    return [tensors[n] for n in names]


def _product(a: Tensor, b: Tensor, what: str) -> Callable[[], Tensor]:
    """a @ b, shapes checked now, computed when the patch is applied (a whole file's ΔW at once would be a
    second copy of the model)."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise NetworkFileError(f"LyCORIS {what} factors do not multiply: {tuple(a.shape)} @ {tuple(b.shape)}")
    return lambda: a.float() @ b.float()


def _tucker(t: Tensor, wa: Tensor, wb: Tensor, what: str) -> Callable[[], Tensor]:
    """LyCORIS's Tucker rebuild W[p, q, ...] = Σ_ij t[i, j, ...] wa[i, p] wb[j, q]; wa [r, out], wb [r, in]"""
    if t.ndim < 3 or wa.ndim != 2 or wb.ndim != 2 or t.shape[0] != wa.shape[0] or t.shape[1] != wb.shape[0]:
        raise NetworkFileError(f"LyCORIS {what} Tucker tensors do not fit: core {tuple(t.shape)}, "
                               f"{tuple(wa.shape)}, {tuple(wb.shape)}")
    return lambda: torch.einsum("ij...,ip,jq->pq...", t.float(), wa.float(), wb.float())


def _shape(tensors: Mapping[str, Tensor], a: str, b: str, t: str | None = None) -> tuple[int, ...]:
    """The shape a low-rank (or Tucker) factor rebuilds to, without computing it."""
    if t is not None and t in tensors:
        return (tensors[a].shape[1], tensors[b].shape[1], *tensors[t].shape[2:])
    return (tensors[a].shape[0], tensors[b].shape[1])


def _loha(tensors: Mapping[str, Tensor], alpha: float | None) -> tuple[tuple[int, ...], Callable[[], Tensor]]:
    w1a, w1b, w2a, w2b = _need(tensors, "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
    tucker = [n for n in ("hada_t1", "hada_t2") if n in tensors]
    if len(tucker) == 1:
        raise NetworkFileError(f"LyCORIS LoHa module has {tucker[0]} without its pair")
    if tucker:
        w1 = _tucker(tensors["hada_t1"], w1a, w1b, "LoHa w1")
        w2 = _tucker(tensors["hada_t2"], w2a, w2b, "LoHa w2")
    else:
        w1 = _product(w1a, w1b, "LoHa w1")
        w2 = _product(w2a, w2b, "LoHa w2")
    shape1 = _shape(tensors, "hada_w1_a", "hada_w1_b", "hada_t1")
    shape2 = _shape(tensors, "hada_w2_a", "hada_w2_b", "hada_t2")
    if shape1 != shape2:
        raise NetworkFileError(f"LyCORIS LoHa halves differ in shape: {shape1} vs {shape2}")
    scale = 1.0 if alpha is None else alpha / w1b.shape[0]
    return shape1, lambda: w1() * w2() * scale


def _lokr(tensors: Mapping[str, Tensor], alpha: float | None) -> tuple[tuple[int, ...], Callable[[], Tensor]]:
    rank = None
    if "lokr_w1" in tensors:
        w1_full = tensors["lokr_w1"]
        w1, shape1 = w1_full.float, tuple(w1_full.shape)
    else:
        w1a, w1b = _need(tensors, "lokr_w1_a", "lokr_w1_b")
        w1, shape1 = _product(w1a, w1b, "LoKr w1"), _shape(tensors, "lokr_w1_a", "lokr_w1_b")
        rank = w1b.shape[0]
    if "lokr_w2" in tensors:
        w2_full = tensors["lokr_w2"]
        w2, shape2 = w2_full.float, tuple(w2_full.shape)
    else:
        w2a, w2b = _need(tensors, "lokr_w2_a", "lokr_w2_b")
        if "lokr_t2" in tensors:
            w2 = _tucker(tensors["lokr_t2"], w2a, w2b, "LoKr w2")
        else:
            w2 = _product(w2a, w2b, "LoKr w2")
        shape2 = _shape(tensors, "lokr_w2_a", "lokr_w2_b", "lokr_t2")
        rank = w2b.shape[0]  # w2's rank wins when both are low-rank (they are equal in LyCORIS's files)
    if len(shape1) != 2 or len(shape2) not in (2, 4):
        raise NetworkFileError(f"LyCORIS LoKr factors have unusable shapes: w1 {shape1}, w2 {shape2} "
                               f"(expected 2 dimensions, and 2 or 4)")
    scale = 1.0 if alpha is None or rank is None else alpha / rank

    def delta() -> Tensor:
        a, b = w1(), w2().contiguous()  # torch.kron cannot view the einsum's strided result
        if b.ndim == 4:
            a = a[:, :, None, None]
        return torch.kron(a, b) * scale

    return (shape1[0] * shape2[0], shape1[1] * shape2[1], *shape2[2:]), delta


@dataclass(frozen=True)
class LycorisDelta:
    """A module's ΔW for one weight: `shape` is known when the file is read, the product is computed when the
    patch is applied (called with the original weight, as WeightPatch.delta is)."""

    what: str
    shape: tuple[int, ...]
    compute: Callable[[], Tensor] = field(repr=False)

    def check(self, weight_shape: Sequence[int]) -> None:
        """Refuse a weight this ΔW does not fit: same output rows and element count, and the same shape when
        both are conv kernels (a flattened [out, in·kh·kw] ΔW is reshaped to the kernel)."""
        want = tuple(weight_shape)
        fits = (math.prod(self.shape) == math.prod(want) and len(self.shape) >= 1 and len(want) >= 1
                and self.shape[0] == want[0])
        if fits and len(self.shape) == len(want) == 4:
            fits = self.shape == want
        if not fits:
            raise NetworkFileError(f"LyCORIS {self.what} has shape {self.shape}, but the weight is {want}; "
                                   f"the file was made for another model")

    def __call__(self, weight: Tensor) -> Tensor:
        self.check(weight.shape)
        return self.compute().reshape(weight.shape)
