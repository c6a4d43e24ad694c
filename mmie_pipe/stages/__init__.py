"""Stage implementations. Importing this package registers every built-in stage."""

import importlib

# One module per stage family; each registers its stages with `mmie_pipe.registry.stages`.
STAGE_MODULES = ("extract", "vision", "tagger", "knowledge", "mqa", "relations", "rerank", "riveg")

for _name in STAGE_MODULES:
    importlib.import_module(f"{__name__}.{_name}")
