"""Trainable components: the transformer + CRF tagger (docs/tagger.md).

One job per module: `tagging` (BIO/BIOES tag sets and legal transitions), `alignment` (post
tokens <-> character offsets), `encoding` (post + context -> subword inputs, context-side
truncation), `config` (what defines a tagger), `model` (encoder, heads, constrained CRFs),
`span_types` (per-entity type distributions), `checkpoint` (build / save / load), `data`
(training records and gold tags), `trainer` (the loop), `evaluation`, `predictor` (batched
inference shared by training and the `tagger` stage), `tiny_encoder` (a random
tiny BERT for tests). torch and transformers are imported only by the modules that run them.
"""
