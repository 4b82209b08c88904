"""P-Tuning v2 prefix encoder (ChatGLM ``ptuning`` style) and its on-disk format.

A prefix is ``pre_seq_len`` learned key/value vectors for *every* decoder layer. The
encoder produces one flat row per virtual token,

    (pre_seq_len, num_layers * 2 * kv_heads * head_dim)

laid out as ``[layer0.key, layer0.value, layer1.key, ...]`` with each block
``(kv_heads, head_dim)``. This is the layout of ChatGLM2's ``PrefixEncoder`` and of PEFT's
``PrefixTuning`` embedding, so the no-projection weights of either can be copied in as is.
:meth:`PrefixEncoder.key_values` turns it into one ``(key, value)`` pair per layer, each
``(batch, kv_heads, pre_seq_len, head_dim)`` -- an ``expand`` view over the batch, never a copy.

On disk (a train checkpoint folder):

* ``prefix.safetensors`` -- only the encoder weights (``embedding.weight``, ``trans.*``);
* ``prefix_config.json`` -- :class:`PrefixConfig` fields, the :class:`ArchFacts` of the base
  model, the model spec and ``"kind": "encoder"``.

:func:`export_static_prefix` writes the *computed* key/values instead
(``prefix_static.safetensors``, tensor ``past_key_values`` of shape
``(num_layers, 2, kv_heads, pre_seq_len, head_dim)``, ``"kind": "static"``), so inference needs
no encoder (and no projection MLP); :func:`load_prefix` reads either kind.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file
from torch import nn

from pipeline.core.binary import read_safetensors
from pipeline.core.io import DataError, atomic_path, write_json
from pipeline.methods.base import ArchFacts, KeyValues, eval_mode, load_into, load_tensors, read_json_config

log = logging.getLogger(__name__)

PREFIX_WEIGHTS = "prefix.safetensors"
PREFIX_STATIC = "prefix_static.safetensors"
PREFIX_CONFIG = "prefix_config.json"
STATIC_KEY = "past_key_values"
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class PrefixConfig:
    """How the P-Tuning v2 prefix is built (ChatGLM ``ptuning`` options)."""

    # number of virtual tokens (ChatGLM2 ptuning / the reference study: 128); 0 = no prefix (base model)
    pre_seq_len: int = 128
    # True: Embedding(P, hidden) -> Linear(hidden, prefix_hidden) -> Tanh -> Linear(prefix_hidden, L*2*kv_dim);
    # False: Embedding(P, L*2*kv_dim) holds the key/values directly (ChatGLM2 default, PEFT-compatible)
    prefix_projection: bool = False
    # hidden width of the projection MLP; None = the base model's hidden size (ChatGLM uses hidden_size)
    prefix_hidden_size: int | None = None
    # dropout on the prefix key/values during training (ChatGLM applies it before splitting per layer)
    prefix_dropout: float = 0.0
    # std of the normal init of the embedding; None = nn.Embedding's default N(0, 1) (what ChatGLM2 and PEFT do)
    init_std: float | None = None
    # True: real tokens take positions pre_seq_len, pre_seq_len+1, ... (PEFT PrefixTuning and HF's default for a
    # filled cache); False: positions start at 0 as in ChatGLM2's own ptuning code
    positions_after_prefix: bool = True
    # how the prefix starts: random (N(0, 1), or N(0, init_std)) | text (the frozen base model's own key/values for
    # init_text, its tokens repeated or cut to pre_seq_len: training starts from "the model has just read this
    # text" instead of noise; needs prefix_projection false)
    init: Literal["random", "text"] = "random"
    # the text read for init=text (e.g. the task description and its decision rules); ignored for init=random
    init_text: str = ""
    # train the prefix of the top N decoder layers only; None = every layer (ChatGLM, PEFT). The lower layers keep
    # their initial key/values (with init=text: the model's own reading of the text) and nothing below layer L-N
    # needs a gradient, so the backward pass stops there: a step costs about (1 + 2N/L) / 3 of a full one
    train_layers: int | None = None

    def __post_init__(self) -> None:
        if self.pre_seq_len < 0:
            raise ValueError(f"pre_seq_len must be >= 0, got {self.pre_seq_len}")
        if not 0.0 <= self.prefix_dropout < 1.0:
            raise ValueError(f"prefix_dropout must be in [0, 1), got {self.prefix_dropout}")
        if self.prefix_hidden_size is not None and self.prefix_hidden_size <= 0:
            raise ValueError(f"prefix_hidden_size must be positive, got {self.prefix_hidden_size}")
        if self.init not in ("random", "text"):
            raise ValueError(f"init must be random or text, got {self.init!r}")
        if self.init == "text" and not self.init_text.strip():
            raise ValueError("init=text needs a non-empty init_text")
        if self.init == "text" and self.prefix_projection:
            raise ValueError("init=text sets the key/values directly: it needs prefix_projection false")
        if self.train_layers is not None and self.train_layers < 1:
            raise ValueError(f"train_layers must be >= 1 or null, got {self.train_layers}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrefixConfig:
        """Build from a dict, ignoring keys that are not fields (arch facts, spec, ...)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def split_key_values(flat: torch.Tensor, facts: ArchFacts) -> KeyValues:
    """Reshape encoder output into one (key, value) pair per layer.

    Args:
        flat: ``(P, L*2*kv_heads*head_dim)`` (shared by the batch) or ``(B, P, L*2*kv_heads*head_dim)``.
    Returns:
        ``L`` pairs, each tensor ``(1 or B, kv_heads, P, head_dim)`` -- strided views, no copy.
    """
    if flat.dim() == 2:
        flat = flat.unsqueeze(0)
    b, p, _ = flat.shape
    # (B, P, L*2, H, D) -> (L*2, B, H, P, D): the same permutation ChatGLM2 and PEFT use
    kv = flat.view(b, p, facts.num_layers * 2, facts.kv_heads, facts.head_dim).permute(2, 0, 3, 1, 4)
    return [(kv[2 * i], kv[2 * i + 1]) for i in range(facts.num_layers)]


def expand_key_values(pairs: KeyValues, batch_size: int) -> KeyValues:
    """Broadcast ``(1, H, P, D)`` pairs to ``(batch_size, H, P, D)`` as views (no memory)."""
    return [(k.expand(batch_size, -1, -1, -1), v.expand(batch_size, -1, -1, -1)) for k, v in pairs]


class PrefixFacts:
    """``pre_seq_len`` / ``positions_after_prefix`` of a key/value module, read from its ``config``
    (:class:`PrefixConfig`): what :class:`~pipeline.methods.registry.KeyValueModule` asks for besides ``key_values``."""

    config: PrefixConfig

    @property
    def pre_seq_len(self) -> int:
        """Number of virtual tokens ``P``."""
        return self.config.pre_seq_len

    @property
    def positions_after_prefix(self) -> bool:
        """Whether real tokens are numbered after the prefix (see :class:`PrefixConfig`)."""
        return self.config.positions_after_prefix


class PrefixEncoder(PrefixFacts, nn.Module):
    """ChatGLM P-Tuning v2 prefix encoder.

    ``forward()`` returns the flat prefix ``(pre_seq_len, L*2*kv_heads*head_dim)``; it does not
    depend on the batch (every row shares the same virtual tokens), so callers build it once
    per forward and broadcast it with :meth:`key_values`.
    """

    def __init__(self, config: PrefixConfig, facts: ArchFacts):
        super().__init__()
        if config.pre_seq_len <= 0:
            raise ValueError("PrefixEncoder needs pre_seq_len > 0")
        self.config, self.facts = config, facts
        if config.train_layers is not None and config.train_layers > facts.num_layers:
            raise ValueError(f"train_layers {config.train_layers} exceeds the model's {facts.num_layers} layers")
        if config.prefix_projection:
            hidden = config.prefix_hidden_size or facts.hidden_size
            self.embedding = nn.Embedding(config.pre_seq_len, facts.hidden_size)
            self.trans = nn.Sequential(
                nn.Linear(facts.hidden_size, hidden), nn.Tanh(), nn.Linear(hidden, facts.row_dim)
            )
        else:
            self.embedding = nn.Embedding(config.pre_seq_len, facts.row_dim)
            self.trans = None
        if config.init_std is not None:
            nn.init.normal_(self.embedding.weight, std=config.init_std)
        self.dropout = nn.Dropout(config.prefix_dropout)

    def forward(self) -> torch.Tensor:
        """Flat prefix ``(pre_seq_len, L*2*kv_heads*head_dim)`` (no dropout applied here)."""
        # the embedding "lookup" of tokens 0..P-1 is the whole table: use the weight directly
        weight = self.embedding.weight
        return weight if self.trans is None else self.trans(weight)

    def key_values(self, batch_size: int, dtype: torch.dtype | None = None) -> KeyValues:
        """Per-layer ``(key, value)``, each ``(batch_size, kv_heads, pre_seq_len, head_dim)``.

        Without dropout the result is an ``expand`` view of one ``(1, H, P, D)`` tensor per layer.
        With dropout in training every row gets its own mask (ChatGLM semantics), which
        materialises ``(B, P, row_dim)`` once.
        """
        flat = self()
        if dtype is not None and flat.dtype != dtype:
            flat = flat.to(dtype)
        if self.training and self.config.prefix_dropout > 0:
            flat = self.dropout(flat.unsqueeze(0).expand(batch_size, -1, -1))
            return self._freeze_lower(split_key_values(flat, self.facts))
        return expand_key_values(self._freeze_lower(split_key_values(flat, self.facts)), batch_size)

    def _freeze_lower(self, pairs: KeyValues) -> KeyValues:
        """Detach the layers below the top ``train_layers`` (their rows of the table get no gradient, and
        autograd has nothing to carry back through those layers)."""
        n = self.config.train_layers
        if n is None or n >= len(pairs):
            return pairs
        cut = len(pairs) - n
        return [(k.detach(), v.detach()) if i < cut else (k, v) for i, (k, v) in enumerate(pairs)]


class StaticPrefix(PrefixFacts, nn.Module):
    """Precomputed prefix key/values (an exported encoder); same ``key_values`` API, nothing to train."""

    def __init__(self, config: PrefixConfig, facts: ArchFacts, past_key_values: torch.Tensor):
        super().__init__()
        expect = (facts.num_layers, 2, facts.kv_heads, config.pre_seq_len, facts.head_dim)
        if tuple(past_key_values.shape) != expect:
            raise ValueError(f"static prefix has shape {tuple(past_key_values.shape)}, expected {expect}")
        self.config, self.facts = config, facts
        # (L, 2, H, P, D); a buffer so .to(device/dtype) moves it, never a parameter
        self.register_buffer(STATIC_KEY, past_key_values, persistent=True)

    def key_values(self, batch_size: int, dtype: torch.dtype | None = None) -> KeyValues:
        """Per-layer ``(key, value)``, each ``(batch_size, kv_heads, pre_seq_len, head_dim)`` expand views."""
        kv = getattr(self, STATIC_KEY)
        if dtype is not None and kv.dtype != dtype:
            kv = kv.to(dtype)
        return [
            (kv[i, 0].unsqueeze(0).expand(batch_size, -1, -1, -1), kv[i, 1].unsqueeze(0).expand(batch_size, -1, -1, -1))
            for i in range(self.facts.num_layers)
        ]


def build_prefix_encoder(config: PrefixConfig, facts: ArchFacts, seed: int | None = None) -> PrefixEncoder:
    """A freshly initialised encoder (seeded with ``seed`` when given, without touching the global RNG)."""
    if seed is None:
        return PrefixEncoder(config, facts)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return PrefixEncoder(config, facts)


def repeat_to_length(ids: list[int], length: int) -> list[int]:
    """``ids`` cycled (or cut) to exactly ``length`` items: PEFT's rule for a text init of virtual tokens."""
    if not ids:
        raise ValueError("cannot repeat an empty token list")
    return (ids * (length // len(ids) + 1))[:length]


def cache_layer_key_values(cache: Any, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(key, value)`` of one layer of an HF cache (``DynamicCache`` or the legacy tuple form)."""
    if hasattr(cache, "layers"):
        return cache.layers[layer].keys, cache.layers[layer].values
    return cache[layer][0], cache[layer][1]


def output_cache(output: Any) -> Any:
    """The cache a forward with ``use_cache=True`` returned, read by its current name.

    transformers renamed the output field ``past_key_values`` to ``cache`` (after 5.20); reading the old name on a
    new version prints a deprecation warning (and will fail once the alias is gone), so read the field the output
    class declares.
    """
    fields = getattr(output, "__dataclass_fields__", {})
    return output["cache"] if "cache" in fields else output["past_key_values"]


@torch.no_grad()
def text_key_values(model: nn.Module, token_ids: list[int], facts: ArchFacts) -> torch.Tensor:
    """The base model's key/values for ``token_ids`` read from position 0, as flat prefix rows.

    Args:
        model: the frozen HF causal LM (any dtype / device).
        token_ids: ``P`` token ids (already repeated/cut to ``pre_seq_len``).
    Returns:
        ``(P, L*2*kv_heads*head_dim)`` float32 on the model's device, in :func:`split_key_values`' layout,
        so ``split_key_values(text_key_values(...))`` gives back exactly the cache the model built.
    """
    device = next(model.parameters()).device
    ids = torch.tensor([token_ids], dtype=torch.long, device=device)
    with eval_mode(model):
        cache = output_cache(model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True))
    pairs = [cache_layer_key_values(cache, i) for i in range(facts.num_layers)]
    # L pairs of (1, H, P, D) -> (L, 2, H, P, D) -> (P, L, 2, H, D) -> (P, row_dim)
    kv = torch.stack([torch.stack([k[0], v[0]]) for k, v in pairs])
    return kv.permute(3, 0, 1, 2, 4).reshape(len(token_ids), facts.row_dim).float()


@torch.no_grad()
def init_prefix_from_text(encoder: PrefixEncoder, model: nn.Module, token_ids: list[int]) -> None:
    """Set a no-projection encoder's rows to the base model's key/values of ``token_ids`` (cycled to ``P``)."""
    if encoder.trans is not None:
        raise ValueError("a text init needs prefix_projection false")
    ids = repeat_to_length(list(token_ids), encoder.config.pre_seq_len)
    encoder.embedding.weight.copy_(text_key_values(model, ids, encoder.facts).to(encoder.embedding.weight.device))


def _config_payload(config: PrefixConfig, facts: ArchFacts, kind: str, extra: dict[str, Any] | None) -> dict[str, Any]:
    return {"format_version": FORMAT_VERSION, "kind": kind, **config.to_dict(), "arch": facts.to_dict(), **(extra or {})}


def save_prefix(encoder: PrefixEncoder, out_dir: str | Path, extra: dict[str, Any] | None = None) -> list[Path]:
    """Write ``prefix.safetensors`` (encoder weights only, float32) + ``prefix_config.json``.

    ``extra`` (e.g. ``{"model_spec": "smollm2", "step": 300}``) is merged into the JSON.
    Returns the written paths.
    """
    out_dir = Path(out_dir)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in encoder.state_dict().items()}
    weights = out_dir / PREFIX_WEIGHTS
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    cfg = write_json(out_dir / PREFIX_CONFIG, _config_payload(encoder.config, encoder.facts, "encoder", extra))
    return [weights, cfg]


@torch.no_grad()
def export_static_prefix(
    encoder: PrefixEncoder, out_dir: str | Path, extra: dict[str, Any] | None = None
) -> list[Path]:
    """Write the computed key/values ``(L, 2, kv_heads, P, head_dim)`` so inference needs no encoder.

    Files: ``prefix_static.safetensors`` + ``prefix_config.json`` (``"kind": "static"``). Do not
    export into a folder holding a trainable ``prefix.safetensors`` you still need: the JSON is shared.
    """
    out_dir = Path(out_dir)
    with eval_mode(encoder):
        pairs = encoder.key_values(1)
    kv = torch.stack([torch.stack([k[0], v[0]]) for k, v in pairs]).to("cpu", torch.float32).contiguous()
    path = out_dir / PREFIX_STATIC
    with atomic_path(path) as tmp:
        save_file({STATIC_KEY: kv}, str(tmp), metadata={"format": "pt"})
    cfg = write_json(out_dir / PREFIX_CONFIG, _config_payload(encoder.config, encoder.facts, "static", extra))
    return [path, cfg]


def read_prefix_config(prefix_dir: str | Path) -> dict[str, Any]:
    """The raw ``prefix_config.json`` of a P-Tuning v2 checkpoint folder or static export (DataError when missing/bad).

    Any method's folder is read by :func:`pipeline.methods.read_method_config` (the registry knows the file names).
    """
    path = Path(prefix_dir) / PREFIX_CONFIG
    if not path.exists():
        raise DataError(path, None, None, "prefix checkpoint has no prefix_config.json")
    return read_json_config(path)


def check_facts(saved: dict[str, Any], facts: ArchFacts, path: Path) -> None:
    """Refuse a prefix trained for a differently shaped model."""
    for key in ("num_layers", "kv_heads", "head_dim"):
        if int(saved.get(key, -1)) != getattr(facts, key):
            raise DataError(path, None, f"arch.{key}",
                            f"prefix was saved for {key}={saved.get(key)}, the model has {getattr(facts, key)}")


def load_prefix(prefix_dir: str | Path, facts: ArchFacts,
                data: dict[str, Any] | None = None) -> PrefixEncoder | StaticPrefix:
    """Load an encoder checkpoint or a static export from ``prefix_dir`` (kind from the JSON; ``data``: the JSON
    when the caller has read it already)."""
    prefix_dir = Path(prefix_dir)
    data = read_prefix_config(prefix_dir) if data is None else data
    cfg_path = prefix_dir / PREFIX_CONFIG
    check_facts(data["arch"], facts, cfg_path)
    config = PrefixConfig.from_dict(data)
    kind = data.get("kind", "encoder")
    if kind == "static":
        expect = (facts.num_layers, 2, facts.kv_heads, config.pre_seq_len, facts.head_dim)
        tensors = read_safetensors(prefix_dir / PREFIX_STATIC, expected={STATIC_KEY: expect})
        return StaticPrefix(config, facts, tensors[STATIC_KEY])
    if kind != "encoder":
        raise DataError(cfg_path, None, "kind", f"unknown prefix kind {kind!r}")
    weights = prefix_dir / PREFIX_WEIGHTS
    encoder = PrefixEncoder(config, facts)
    load_into(encoder, load_tensors(weights), weights)  # DataError naming a missing file or a misfit tensor
    return encoder


def count_prefix_parameters(config: PrefixConfig, facts: ArchFacts) -> int:
    """Trainable parameter count of an encoder with ``config`` on a model with ``facts``."""
    if config.pre_seq_len == 0:
        return 0
    if not config.prefix_projection:
        return config.pre_seq_len * facts.row_dim
    h = config.prefix_hidden_size or facts.hidden_size
    return config.pre_seq_len * facts.hidden_size + (facts.hidden_size + 1) * h + (h + 1) * facts.row_dim

