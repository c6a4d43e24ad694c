"""Model backends. Importing this package registers them; heavy libraries load lazily inside."""

from . import fake, llama_server, openai_backend, transformers_backend, vllm_backend  # noqa: F401
# Local image tools are backends too (declared under `backends:`, started by the runner).
from . import detectors, ocr, ofa  # noqa: F401,E402
