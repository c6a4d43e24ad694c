"""Transformer encoder -> first-subword vectors -> linear head(s) -> CRF(s).

One head per `Entity` field it fills: `coarse` (-> `type`) always, `fine` (-> `fine_type`) in GEM mode, where the fine
scores also receive `beta * softmax(coarse scores) @ M` with a learned coarse-to-fine matrix `M`.
Loss and decoding run over post words only; context subwords feed the encoder and nothing else.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchcrf import CRF

from .config import TaggerConfig
from .tagging import TagSet

FORBIDDEN = -10_000.0  # score of an illegal transition; fixed (its gradient is masked to zero)


class ConstrainedCrf(CRF):
    """pytorch-crf's CRF with the scheme's illegal transitions pinned to `FORBIDDEN`, so that
    training never wastes probability on them and Viterbi never decodes them."""

    def __init__(self, tags: TagSet):
        super().__init__(len(tags), batch_first=True)
        allowed, start, end = tags.allowed_transitions()
        self.register_buffer("blocked", ~torch.tensor(allowed), persistent=False)
        self.register_buffer("blocked_start", ~torch.tensor(start), persistent=False)
        self.register_buffer("blocked_end", ~torch.tensor(end), persistent=False)
        self.pin_forbidden()
        for param, mask in (
            (self.transitions, "blocked"),
            (self.start_transitions, "blocked_start"),
            (self.end_transitions, "blocked_end"),
        ):
            param.register_hook(lambda grad, mask=mask: grad.masked_fill(getattr(self, mask), 0.0))

    @torch.no_grad()
    def pin_forbidden(self) -> None:
        self.transitions.masked_fill_(self.blocked, FORBIDDEN)
        self.start_transitions.masked_fill_(self.blocked_start, FORBIDDEN)
        self.end_transitions.masked_fill_(self.blocked_end, FORBIDDEN)


class CrfTagger(nn.Module):
    def __init__(self, encoder: nn.Module, config: TaggerConfig):
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.tag_sets = config.tag_sets()
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(config.dropout)
        self.heads = nn.ModuleDict({name: nn.Linear(hidden, len(tags)) for name, tags in self.tag_sets.items()})
        self.crfs = nn.ModuleDict({name: ConstrainedCrf(tags) for name, tags in self.tag_sets.items()})
        if config.gem:
            coarse, fine = self.tag_sets["coarse"], self.tag_sets["fine"]
            self.coarse_to_fine = nn.Parameter(_hierarchy_prior(coarse, fine, config.fine_to_coarse))

    def head_parameters(self) -> list[nn.Parameter]:
        """Everything but the encoder (trained with its own, larger learning rate)."""
        encoder_ids = {id(p) for p in self.encoder.parameters()}
        return [p for p in self.parameters() if id(p) not in encoder_ids]

    def emissions(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per head, `[batch, words, tags]` scores at each post word's first subword."""
        inputs: dict[str, Any] = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if "token_type_ids" in batch:
            inputs["token_type_ids"] = batch["token_type_ids"]
        hidden = self.encoder(**inputs).last_hidden_state
        index = batch["word_index"].unsqueeze(-1).expand(-1, -1, hidden.size(-1))
        words = self.dropout(hidden.gather(1, index))
        scores = {"coarse": self.heads["coarse"](words)}
        if self.config.gem:
            coarse_probs = scores["coarse"].softmax(-1)
            scores["fine"] = self.heads["fine"](words) + self.config.beta * coarse_probs @ self.coarse_to_fine
        return scores

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean negative log-likelihood per post, summed over heads."""
        scores = self.emissions(batch)
        mask = batch["word_mask"]
        total = scores["coarse"].new_zeros(())
        for name, emission in scores.items():
            total = total - self.crfs[name](emission, batch[f"tags_{name}"], mask=mask, reduction="mean")
        return total

    def decode(self, scores: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, list[list[int]]]:
        return {name: self.crfs[name].decode(emission, mask=mask) for name, emission in scores.items()}


def _hierarchy_prior(coarse: TagSet, fine: TagSet, fine_to_coarse: dict[str, str]) -> torch.Tensor:
    """Start `M` at 1 where a coarse tag is the fine tag's parent (same prefix, parent type), else 0."""
    prior = torch.zeros(len(coarse), len(fine))
    coarse_index = coarse.index
    for j, tag in enumerate(fine.tags):
        if tag == "O":
            prior[coarse_index["O"], j] = 1.0
            continue
        parent = fine_to_coarse.get(tag[2:])
        if parent is not None and f"{tag[0]}-{parent}" in coarse_index:
            prior[coarse_index[f"{tag[0]}-{parent}"], j] = 1.0
    return prior
