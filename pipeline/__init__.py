"""ChatGLM domain adaptation with P-Tuning v2: staged pipeline (data prep → prompts → train → evaluate → label)."""

__version__ = "0.1.0"

#: how to enter the project's environment (printed when a dependency is missing: the wrong interpreter)
SETUP_HINT = ("Set up once with `make setup`, then `source .venv/bin/activate` (or run `.venv/bin/glm-pipeline ...`; "
              "a conda env: `conda env create -f environment.yml`).")


def missing_package_message(name: str, executable: str) -> str:
    """The one ``error:`` line for a third-party package that cannot be imported."""
    return (f"error: the Python package {name!r} is missing from {executable}; this interpreter is not the "
            f"project's environment. {SETUP_HINT}")
