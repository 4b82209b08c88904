"""Floor 0, the ground floor: what every stage and library builds on, importing nothing above it.

``config`` (typed YAML configs), ``io`` (atomic JSONL/JSON, ``DataError``), ``stage`` (the stage
contract and manifests), ``registry`` (stage names -> modules, imported lazily), ``profile`` (run
profiles and their runner), ``taxonomy`` (the label vocabulary), ``answer`` (the answer line: the
one module that writes and parses it). See docs/ARCHITECTURE.md.
"""
