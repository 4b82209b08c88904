"""Floor 2, the model library: model specs and conversion, tokenizers, the prefix-tuned LM, data
collation, training engines, generation and scoring. Imports only the ground floor and the
methods (:mod:`pipeline.methods`); never a domain library or a stage. See docs/ARCHITECTURE.md.
"""
