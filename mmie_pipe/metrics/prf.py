"""Counts -> precision / recall / F1, micro-averaged and per type.

Convention: a ratio with a zero denominator is 0.0 (as seqeval with `zero_division=0`), so a
system that predicts nothing scores P = R = F1 = 0, and an empty gold set gives R = 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PRF:
    tp: int = 0
    n_pred: int = 0
    n_gold: int = 0

    @property
    def precision(self) -> float:
        return self.tp / self.n_pred if self.n_pred else 0.0

    @property
    def recall(self) -> float:
        return self.tp / self.n_gold if self.n_gold else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def __iadd__(self, other: "PRF") -> "PRF":
        self.tp += other.tp
        self.n_pred += other.n_pred
        self.n_gold += other.n_gold
        return self

    def to_dict(self) -> dict[str, float | int]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "tp": self.tp,
            "pred": self.n_pred,
            "gold": self.n_gold,
        }


@dataclass
class Scores:
    """Micro-averaged counts plus the same counts per type (or per relation label)."""

    micro: PRF = field(default_factory=PRF)
    per_type: dict[str, PRF] = field(default_factory=dict)
    extra: dict[str, float | int] = field(default_factory=dict)  # e.g. MRE accuracy

    def type(self, name: str) -> PRF:
        return self.per_type.setdefault(name, PRF())

    @property
    def macro_f1(self) -> float:
        return sum(p.f1 for p in self.per_type.values()) / len(self.per_type) if self.per_type else 0.0

    def to_dict(self) -> dict:
        out: dict = {"micro": self.micro.to_dict()}
        if self.per_type:
            out["macro_f1"] = self.macro_f1
            out["per_type"] = {k: v.to_dict() for k, v in sorted(self.per_type.items())}
        out.update(self.extra)
        return out
