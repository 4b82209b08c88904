"""ChatGLM domain adaptation with P-Tuning v2: staged pipeline (data prep → prompts → train → evaluate → label)."""

__version__ = "0.1.0"
