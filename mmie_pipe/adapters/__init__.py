"""Model backends. Importing this package registers them; heavy libraries load lazily inside."""

from . import fake, llama_server, openai_backend, transformers_backend, vllm_backend  # noqa: F401
