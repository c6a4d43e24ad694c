"""Dataset loaders: stream the benchmark files under the data root as typed input `Record`s.

Entry point: `load_split(dataset, split, data_root=None, captions=None, knowledge=None)`.
Per-format loaders (`load_twitter`, `load_gmner`, `load_fmnerg`, `load_mnre`, caption, knowledge
and example-pool readers) work on explicit paths. Every malformed input raises `DataFormatError`
naming file and line. See docs/data.md.
"""

from .build import image_file_name, image_stem
from .captions import iter_blip2_captions, iter_owl_captions, read_captions
from .conll import TaggedBlock, read_conll_blocks
from .errors import DataFormatError
from .examples import PoolExample, load_pgim_examples
from .fmnerg import load_fmnerg
from .knowledge import KnowledgeIndex, PgimKnowledge, iter_pgim_knowledge
from .mnre import load_mnre
from .paths import DataRoot, DataRootNotFound, resolve_data_root
from .registry import (
    CAPTION_KINDS,
    DATASET_NAMES,
    DATASETS,
    KNOWLEDGE_KINDS,
    DatasetSpec,
    canonical_split,
    dataset_spec,
    load_split,
    split_path,
)
from .twitter import load_conll_tweets, load_gmner, load_twitter
from .voc import VocAnnotation, VocIndex, read_voc

__all__ = [
    "CAPTION_KINDS",
    "DATASETS",
    "DATASET_NAMES",
    "KNOWLEDGE_KINDS",
    "DataFormatError",
    "DataRoot",
    "DataRootNotFound",
    "DatasetSpec",
    "KnowledgeIndex",
    "PgimKnowledge",
    "PoolExample",
    "TaggedBlock",
    "VocAnnotation",
    "VocIndex",
    "canonical_split",
    "dataset_spec",
    "image_file_name",
    "image_stem",
    "iter_blip2_captions",
    "iter_owl_captions",
    "iter_pgim_knowledge",
    "load_conll_tweets",
    "load_fmnerg",
    "load_gmner",
    "load_mnre",
    "load_pgim_examples",
    "load_split",
    "load_twitter",
    "read_captions",
    "read_conll_blocks",
    "read_voc",
    "resolve_data_root",
    "split_path",
]
