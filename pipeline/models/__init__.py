"""Floor 2, the model library: model specs and conversion, tokenizers, the prefix-tuned LM, data
collation, training engines, generation and scoring. Imports only the ground floor and the
methods (:mod:`pipeline.methods`); never a domain library or a stage. See docs/ARCHITECTURE.md.
"""

# ChatGLM-6B's native architecture: ``import pipeline.models`` registers ``model_type: chatglm6b`` with
# transformers' AutoConfig / AutoModel / AutoModelForCausalLM (see pipeline/models/chatglm6b.py)
from pipeline.models import chatglm6b as _chatglm6b  # noqa: E402,F401
