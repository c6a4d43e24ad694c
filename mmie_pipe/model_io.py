"""What a stage asks of a model, and what it gets back.

Everything that can change a model's output lives in `ModelRequest`, so that hashing a request
(plus the backend's model identity and the stage's name and version) is a sound cache key.
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImagePart(Frozen):
    """An image inside a message. Identified by content hash; bytes are loaded only to send."""

    type: Literal["image"] = "image"
    sha256: str
    mime: str = "image/jpeg"
    path: str | None = Field(default=None, exclude=True)  # where to read the bytes; never hashed

    @classmethod
    def from_path(cls, path: str | Path) -> "ImagePart":
        data = Path(path).read_bytes()
        mime = mimetypes.guess_type(str(path))[0] or "image/jpeg"
        return cls(sha256=hashlib.sha256(data).hexdigest(), mime=mime, path=str(path))

    def data_url(self) -> str:
        if self.path is None:
            raise ValueError("image part has no path to read its bytes from")
        data = Path(self.path).read_bytes()
        return f"data:{self.mime};base64,{base64.b64encode(data).decode('ascii')}"


class TextPart(Frozen):
    type: Literal["text"] = "text"
    text: str


class Message(Frozen):
    role: Literal["system", "user", "assistant"]
    content: str | tuple[TextPart | ImagePart, ...]

    @property
    def images(self) -> list[ImagePart]:
        if isinstance(self.content, str):
            return []
        return [p for p in self.content if isinstance(p, ImagePart)]


class Sampling(Frozen):
    temperature: float = Field(default=0.0, ge=0)
    max_tokens: int = Field(default=256, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    stop: tuple[str, ...] = ()
    seed: int | None = 0


class Constraint(Frozen):
    """Structured output: a JSON schema, or one answer out of a closed set."""

    json_schema: dict[str, Any] | None = None
    schema_name: str = "answer"
    choices: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "Constraint":
        if (self.json_schema is None) == (self.choices is None):
            raise ValueError("a constraint needs exactly one of json_schema or choices")
        return self


class ModelRequest(Frozen):
    """A chat (`messages`) or plain completion (`prompt`) request."""

    messages: tuple[Message, ...] | None = None
    prompt: str | None = None
    sampling: Sampling = Sampling()
    constraint: Constraint | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=1000)
    lora: str | None = None  # name of a LoRA adapter the backend knows
    sample_index: int = Field(default=0, ge=0)  # distinct cache entries for repeated sampling
    # With `constraint.choices`: return the probability of every option (`ModelResponse.choice`),
    # not only the chosen one. See `mmie_pipe.choices` for how each backend computes it.
    score_choices: bool = False

    @model_validator(mode="after")
    def _one_form(self) -> "ModelRequest":
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("a request needs exactly one of messages or prompt")
        return self

    @model_validator(mode="after")
    def _scored_needs_choices(self) -> "ModelRequest":
        if self.score_choices and (self.constraint is None or not self.constraint.choices):
            raise ValueError("score_choices needs a constraint with choices")
        return self

    @property
    def images(self) -> list[ImagePart]:
        return [img for m in self.messages or () for img in m.images]

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(self.constraint.choices or ()) if self.constraint else ()


class TokenLogprob(BaseModel):
    token: str
    logprob: float
    top: dict[str, float] = Field(default_factory=dict)


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )


class ChoiceScores(BaseModel):
    """The model's distribution over a closed set of options.

    `probs` is normalised over the options (it sums to 1). `other_mass` is the probability the model
    put on answers that are none of the options, before normalising (None when the method cannot
    see it, e.g. likelihood scoring); a large value says the model wanted to answer something else.
    `unseen` lists options that were not among the server's top log-probabilities (probability 0).
    """

    probs: dict[str, float]
    other_mass: float | None = None
    method: Literal["first_token", "likelihood"] = "first_token"
    unseen: list[str] = Field(default_factory=list)

    @property
    def best(self) -> str:
        return max(self.probs, key=lambda option: (self.probs[option], -list(self.probs).index(option)))


class ModelResponse(BaseModel):
    text: str
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None
    usage: Usage = Field(default_factory=Usage)
    choice: ChoiceScores | None = None
    cached: bool = False
