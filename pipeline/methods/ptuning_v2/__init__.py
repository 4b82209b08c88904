"""P-Tuning v2 (ChatGLM ``ptuning``): a trained key/value prefix for every decoder layer.

* :class:`PrefixConfig` -- the method's settings (the ``method.ptuning_v2`` section of a train config);
* :class:`PrefixEncoder` / :class:`StaticPrefix` -- the module (trainable / exported key/values);
* :func:`save_prefix` / :func:`export_static_prefix` / :func:`load_prefix` -- the on-disk format.

:class:`pipeline.models.lm.PrefixLM` puts the key/values into the base model's cache.
"""

from pipeline.methods.ptuning_v2.prefix import (
    FORMAT_VERSION,
    PREFIX_CONFIG,
    PREFIX_STATIC,
    PREFIX_WEIGHTS,
    STATIC_KEY,
    KeyValues,
    PrefixConfig,
    PrefixEncoder,
    StaticPrefix,
    build_prefix_encoder,
    check_facts,
    count_prefix_parameters,
    expand_key_values,
    init_prefix_from_text,
    repeat_to_length,
    text_key_values,
    export_static_prefix,
    load_prefix,
    output_cache,
    read_prefix_config,
    save_prefix,
    split_key_values,
)

__all__ = [
    "FORMAT_VERSION", "PREFIX_CONFIG", "PREFIX_STATIC", "PREFIX_WEIGHTS", "STATIC_KEY", "KeyValues", "PrefixConfig",
    "PrefixEncoder", "StaticPrefix", "build_prefix_encoder", "check_facts", "count_prefix_parameters",
    "expand_key_values", "export_static_prefix", "init_prefix_from_text", "load_prefix", "output_cache",
    "read_prefix_config", "repeat_to_length", "save_prefix", "split_key_values", "text_key_values",
]
