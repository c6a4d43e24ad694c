"""Batched inference: records -> entities with character offsets and type distributions.

Used by the `tagger` stage and by training's dev/test evaluation, so both decode the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..records import Entity, Record
from .alignment import PostTokens, post_tokens, span_entity
from .checkpoint import LoadedTagger
from .encoding import EncodedInput, InputEncoder, collate
from .span_types import span_type_distribution


@dataclass(frozen=True)
class TagRequest:
    text: str
    tokens: PostTokens
    context: list[str]  # context words (already joined across fields)


def pick_device(requested: str = "auto") -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


class Predictor:
    def __init__(self, tagger: LoadedTagger, *, batch_size: int = 32, context_fields: Sequence[str] | None = None):
        self.tagger = tagger
        self.batch_size = batch_size
        self.context_fields = list(tagger.config.context_fields if context_fields is None else context_fields)
        self.encoder = InputEncoder(tagger.tokenizer, tagger.config.max_length)
        self.tag_sets = tagger.config.tag_sets()

    @property
    def device(self) -> Any:
        return next(self.tagger.model.parameters()).device

    def request(self, record: Record) -> TagRequest:
        parts = [getattr(record, name, None) for name in self.context_fields]
        return TagRequest(record.text, post_tokens(record), self.encoder.context_words(parts))

    def encode(self, request: TagRequest) -> EncodedInput:
        return self.encoder.encode(request.tokens.words, request.context)

    def predict_records(self, records: Sequence[Record]) -> list[list[Entity]]:
        return self.predict([self.request(r) for r in records])

    def predict(self, requests: Sequence[TagRequest]) -> list[list[Entity]]:
        """Entities per request; posts without tokens get none."""
        pairs = [(r, self.encode(r) if r.tokens.words else None) for r in requests]
        return self.predict_encoded(pairs)

    def predict_encoded(self, pairs: Sequence[tuple[TagRequest, EncodedInput | None]]) -> list[list[Entity]]:
        """Like `predict` for requests already encoded (`None`: nothing to tag). Batches are
        length-sorted so that little padding is computed."""
        results: list[list[Entity]] = [[] for _ in pairs]
        order = sorted((i for i, (_, enc) in enumerate(pairs) if enc is not None), key=lambda i: len(pairs[i][1].input_ids))
        for begin in range(0, len(order), self.batch_size):
            chunk = order[begin : begin + self.batch_size]
            found = self._predict_batch([pairs[i][0] for i in chunk], [pairs[i][1] for i in chunk])
            for i, entities in zip(chunk, found):
                results[i] = entities
        return results

    def _predict_batch(self, requests: Sequence[TagRequest], encoded: Sequence[EncodedInput]) -> list[list[Entity]]:
        import torch

        model = self.tagger.model
        pad_id = self.tagger.tokenizer.pad_token_id or 0
        batch = {k: v.to(self.device) for k, v in collate(encoded, pad_id).items()}
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                scores = model.emissions(batch)
                paths = model.decode(scores, batch["word_mask"])
        finally:
            model.train(was_training)
        crf_scores = {
            name: (crf.transitions.tolist(), crf.start_transitions.tolist(), crf.end_transitions.tolist())
            for name, crf in model.crfs.items()
        }
        span_head = self.tagger.config.span_head
        out = []
        for row, request in enumerate(requests):
            n = len(request.tokens.words)
            emissions = {name: s[row, :n].float().cpu().tolist() for name, s in scores.items()}
            out.append(self._entities(request, emissions, {k: v[row] for k, v in paths.items()}, crf_scores, span_head))
        return out

    def _entities(self, request, emissions, paths, crf_scores, span_head) -> list[Entity]:
        tags = self.tag_sets[span_head]
        names = tags.tags
        path = paths[span_head]
        entities = []
        for span in tags.decode([names[t] for t in path]):
            entity = span_entity(request.text, request.tokens.offsets, span)
            probs = span_type_distribution(emissions[span_head], *crf_scores[span_head], path, span, tags)
            if span_head == "fine":
                entity.fine_type = span.type
                entity.type = self._coarse_type(span, emissions["coarse"])
            entity.type_probs = probs
            entity.score = probs[span.type]
            entities.append(entity)
        return entities

    def _coarse_type(self, span, coarse_emissions) -> str:
        """GEM: the fine type's parent when training saw it, else the best-scoring coarse type."""
        parent = self.tagger.config.fine_to_coarse.get(span.type)
        if parent is not None:
            return parent
        coarse = self.tag_sets["coarse"]
        index = coarse.index
        length = span.end - span.start

        def score(t: str) -> float:
            return sum(
                coarse_emissions[span.start + k][index[f"{coarse.span_prefix(k, length)}-{t}"]] for k in range(length)
            )

        return max(coarse.types, key=score)
