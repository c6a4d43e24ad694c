"""mmie-pipe: LLM/MLLM-centric multimodal information extraction as typed, cached, staged pipelines."""

__version__ = "0.1.0"
