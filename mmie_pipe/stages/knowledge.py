"""`knowledge`: PGIM's auxiliary knowledge, written by an LLM that reads the post and its image
as text (a caption or the ITA visual context).

PGIM's prompt structure: a task line, then N solved examples, then the query, each as
Text / Image / Question / Answer; the answer names the entities the model sees, their kinds and a
short reasoning. The written knowledge is stored on the record (`knowledge`), where the `extract`
stage (as context) or a tagger trained on post + knowledge reads it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..errors import ConfigError, StageInputError
from ..fewshot import Example
from ..model_io import Message, ModelRequest, Sampling
from ..prompts import render
from ..records import Record
from ..registry import stages
from .base import Role, Stage
from .context import clip, image_words
from .shots import FewShotParams, ShotPicker

NO_IMAGE = "(no image description)"
TASK = (
    "Each post below pairs a short social-media text with an image, described in words. Using the "
    "text, the image and what you know about the world, name the entities the text mentions, say "
    "what kind of thing each one is, and explain briefly."
)


class KnowledgeParams(FewShotParams):
    # model: write it; input: keep the knowledge the input carries (e.g. PGIM's ChatGPT knowledge
    # from `data convert --knowledge pgim`), an error where absent; auto: input where present.
    source: Literal["model", "input", "auto"] = "model"
    shots: int = Field(default=5, ge=0, le=32)
    examples: str = "knowledge_tweets.v1"  # or pgim:2015 / pgim:2017, or a JSONL with `answer`s
    types: list[str] = Field(default_factory=lambda: ["person", "location", "organization", "miscellaneous"], min_length=1)
    # Where the image's words come from, first present wins (examples always show their caption).
    image_from: list[Literal["visual_context", "caption"]] = Field(default_factory=lambda: ["visual_context", "caption"], min_length=1)
    mode: Literal["completion", "chat"] = "completion"
    template: str = "knowledge.pgim.v1.jinja"
    answer_chars: int = Field(default=600, ge=50)  # an example's answer is cut to this length
    image_chars: int = Field(default=300, ge=20)
    max_tokens: int = Field(default=128, gt=0)
    temperature: float = Field(default=0.0, ge=0)


@stages.register("knowledge", version=1)
class KnowledgeStage(Stage):
    name = "knowledge"
    version = 1
    Params = KnowledgeParams
    reads = ("text",)
    optional_reads = ("caption", "visual_context")
    writes = ("knowledge", "examples")
    roles = {"llm": Role(needs=frozenset({"completion"}), description="the LLM writing the knowledge")}

    @classmethod
    def role_needs(cls, params: KnowledgeParams) -> dict[str, frozenset[str]]:
        return {"llm": frozenset({"completion" if params.mode == "completion" else "chat"})}

    def __init__(self, params: KnowledgeParams, model, context):
        super().__init__(params, model, context)
        self.params: KnowledgeParams = params
        self.shots = ShotPicker(params, context.seed, context.note_once, self.qualified_name)

    async def setup(self) -> None:
        await self.shots.setup()
        if self.params.shots:
            unsolved = [ex.id for ex in self.shots.pool() if not ex.answer]
            if unsolved:
                raise ConfigError(
                    f"knowledge: {len(unsolved)} examples of {self.params.examples} have no `answer` "
                    f"(e.g. {unsolved[0]}); knowledge examples need a written answer"
                )

    @property
    def question(self) -> str:
        kinds = ", ".join(self.params.types)
        return f"Which named entities ({kinds}) does the text mention, and what are they? Give a short reason."

    def _image_text(self, record: Record) -> str:
        return image_words(record, self.params.image_from, self.params.image_chars) or NO_IMAGE

    def build_request(self, record: Record, examples: list[Example]) -> ModelRequest:
        p = self.params
        prompt = render(
            p.template,
            task=TASK,
            question=self.question,
            examples=[
                {"text": ex.text, "image": clip(ex.caption, p.image_chars) if ex.caption else NO_IMAGE,
                 "answer": clip(ex.answer or "", p.answer_chars)}
                for ex in examples
            ],
            text=record.text,
            image=self._image_text(record),
        )
        # One answer per line in every pool: the first line break ends the answer.
        sampling = Sampling(temperature=p.temperature, max_tokens=p.max_tokens, stop=("\n",))
        if p.mode == "chat":
            return ModelRequest(messages=(Message(role="user", content=prompt),), sampling=sampling)
        return ModelRequest(prompt=prompt, sampling=sampling)

    async def process(self, record: Record) -> None:
        if self.params.source != "model":
            if record.knowledge and record.knowledge.strip():
                record.provenance.setdefault("knowledge", "input")
                return
            if self.params.source == "input":
                raise StageInputError("knowledge: source is 'input' but the record carries no knowledge")
        examples = await self.shots.apick(record)
        response = await self.model.generate(self.build_request(record, examples))
        record.knowledge = " ".join(response.text.split())
        record.provenance["knowledge"] = f"{self.qualified_name}:{self.model.backend.identity().get('name', '?')}"
