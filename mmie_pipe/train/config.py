"""What defines a trained tagger (saved as `tagger.json` beside its weights)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .tagging import Scheme, TagSet

FORMAT_VERSION = 1
CONTEXT_FIELDS: tuple[str, ...] = ("knowledge", "visual_context", "caption")
# Each head fills one `Entity` field: the coarse head `type`, GEM's fine head `fine_type`.
HEAD_FIELDS: dict[str, str] = {"coarse": "type", "fine": "fine_type"}


class TaggerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    encoder: str = Field(description="the pretrained encoder it was initialized from (name or path)")
    scheme: Scheme = "BIO"
    types: list[str] = Field(min_length=1)
    # GEM mode: a second head over fine types, fed the coarse head's scores through a learned
    # coarse-to-fine matrix weighted by `beta`.
    fine_types: list[str] | None = None
    fine_to_coarse: dict[str, str] = Field(default_factory=dict)
    beta: float = 0.1
    # Record fields appended after the post as context, in this order (never tagged).
    context_fields: list[str] = Field(default_factory=list)
    max_length: int = Field(default=128, ge=8)
    dropout: float = Field(default=0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _known_fields(self) -> "TaggerConfig":
        unknown = [f for f in self.context_fields if f not in CONTEXT_FIELDS]
        if unknown:
            raise ValueError(f"unknown context fields {unknown}; expected some of {CONTEXT_FIELDS}")
        return self

    @property
    def gem(self) -> bool:
        return bool(self.fine_types)

    def tag_sets(self) -> dict[str, TagSet]:
        """Head name (`coarse`, and `fine` in GEM mode) -> its tag set."""
        sets = {"coarse": TagSet(self.scheme, tuple(self.types))}
        if self.fine_types:
            sets["fine"] = TagSet(self.scheme, tuple(self.fine_types))
        return sets

    @property
    def span_head(self) -> str:
        """The head whose decoded spans become entities (the fine one in GEM mode)."""
        return "fine" if self.gem else "coarse"
