"""A frozen Hugging Face causal LM plus one tuning method: :class:`AdaptedLM`, :func:`load_model`, the chat format.

Every method of :mod:`pipeline.methods` runs through the same class and the same call path
(``new_cache`` / ``extend_mask`` / ``position_offset`` / ``call_base``), so generation, label scoring and
training need no per-method code; the path is chosen by the method's kind
(:class:`~pipeline.methods.registry.MethodKind`), never by its name:

* **key/value methods** (``ptuning_v2``, ``prefix_tuning``): the prefix encoder gives every layer's
  key/values directly;
* **input-layer methods** (``prompt_tuning``, ``ptuning_v1``): the virtual-token embeddings ``(P, hidden)``
  run once through the frozen model at positions ``0..P-1`` and *their* key/values fill the same prefix
  cache. Causal attention makes that exactly PEFT's "concatenate the prompt to the input embeddings"
  (virtual tokens never see real ones), but the virtual tokens are computed once per forward instead of
  once per row, with gradients flowing back through the frozen layers into the prompt;
* **LoRA**: the adapted linears sit inside the base model; no virtual tokens (``pre_seq_len == 0``);
* **cls_head** (any method): :meth:`AdaptedLM.head_logits` reads the prompt's last hidden state.

How the prefix reaches the model
--------------------------------
The prefix key/values are put into a transformers ``DynamicCache`` (one layer per decoder
layer) and passed as the model's cache (``cache=`` in transformers >= 5.x, ``past_key_values=``
before; the name is read from the forward signature). The 2-D attention mask gets
``pre_seq_len`` ones in front. For a training/scoring forward the cache layers are
*read-only* (:class:`PrefixOnlyLayer`): ``update`` returns ``cat(prefix, new)`` without storing
it, so a gradient-checkpointing replay sees the same prefix again; for generation the layers
are ordinary ``DynamicLayer`` objects seeded with the prefix and grow as tokens are decoded.

Positions (documented choice)
-----------------------------
Real tokens get ``position = offset + (index among the row's non-pad tokens)`` computed from the
attention mask, so left- and right-padded rows see the same positions as the unpadded row.
``offset = pre_seq_len`` by default (``PrefixConfig.positions_after_prefix``): that is PEFT
``PrefixTuning``'s semantics (HF models number the first new token after the cached length, and
PEFT shifts explicit ``position_ids`` by ``num_virtual_tokens``), so our logits equal PEFT's
(tests prove it). ChatGLM2's own ptuning starts real tokens at 0; set
``positions_after_prefix=False`` for that. Without a prefix the offset is 0 (plain model).

Performance
-----------
Without projection the prefix is the embedding table itself (no lookup), viewed per layer and
``expand``-ed over the batch (no copy); the only materialisation is the ``cat`` the attention
layer does anyway. SDPA attention is requested at load time. A forward *with labels* projects only
the supervised positions onto the vocabulary by default (``supervised_logits_only``; HF's boolean
``logits_to_keep``), which skips the ``lm_head`` + softmax work on the prompt part of SFT rows:
identical loss and gradients, ~1.2-1.3x the training tokens/s of PEFT on SmolLM2-135M (CPU).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from pipeline.methods import (
    Adapters,
    MethodConfig,
    build_adapters,
    export_static,
    load_adapter_weights,
    load_adapters,
    no_adapters,
    save_adapters,
)
from pipeline.methods.base import ArchFacts, KeyValues, arch_facts
from pipeline.methods.ptuning_v2 import StaticPrefix, expand_key_values
from pipeline.models.checkpoint import Checkpoint, as_checkpoint
from pipeline.models.store import resolve_model_dir
from pipeline.models.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

#: Short domain system prompt used with chat templates (replaces e.g. SmolLM2's "You are a helpful AI
#: assistant named SmolLM ..."). Kept short because the paper's input budget is 256 tokens.
SYSTEM_PROMPT = (
    "You are a space situational awareness analyst. You infer the intentions of "
    "non-cooperative space targets near a space station."
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# --------------------------------------------------------------------------------------------- cache
class PrefixOnlyLayer(DynamicLayer):
    """A cache layer holding only the prefix; ``update`` returns ``cat(prefix, new)`` and stores nothing.

    Keys/values: ``(B, kv_heads, P, head_dim)``, usually ``expand`` views of one shared tensor.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        super().__init__()
        self.keys, self.values = keys, values
        self.device, self.dtype = keys.device, keys.dtype
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        """Return ``(B, H, P+T, D)`` keys/values for attention; the cache itself is unchanged."""
        return torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2)


class PrefixCache(DynamicCache):
    """A ``DynamicCache`` pre-filled with prefix key/values, one layer per decoder layer.

    ``read_only=True``: :class:`PrefixOnlyLayer` layers (training / scoring forward, safe under
    gradient checkpointing). ``read_only=False``: ``DynamicLayer`` layers seeded with the prefix that
    grow during generation (the first ``update`` makes the one real copy).
    """

    def __init__(self, pairs: KeyValues, read_only: bool = True):
        layers: list[DynamicLayer] = []
        for k, v in pairs:
            if read_only:
                layers.append(PrefixOnlyLayer(k, v))
            else:
                layer = DynamicLayer()
                layer.keys, layer.values = k, v
                layer.device, layer.is_initialized = k.device, True
                layers.append(layer)
        Cache.__init__(self, layers=layers)


def cache_kwarg_name(model: nn.Module) -> str:
    """``"cache"`` (transformers >= 5.x) or ``"past_key_values"`` (older), from the forward signature."""
    params = inspect.signature(model.forward).parameters
    if "cache" in params:
        return "cache"
    if "past_key_values" in params:
        return "past_key_values"
    raise TypeError(f"{type(model).__name__}.forward accepts neither cache= nor past_key_values=")


def positions_from_mask(attention_mask: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Position ids ``(B, T)`` that count only real tokens: ``offset + cumsum(mask) - 1`` (pads clamped).

    Left-padded, right-padded and unpadded rows thus give their real tokens the same positions.
    """
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.clamp_(min=0) + offset


@dataclasses.dataclass
class ClassOutput:
    """Output of a cls_head forward: mean cross-entropy over levels and the heads' logits ``{level: (B, n)}``."""

    loss: torch.Tensor
    class_logits: dict[str, torch.Tensor]


# ------------------------------------------------------------------------------------------ AdaptedLM
class AdaptedLM(nn.Module):
    """A frozen causal LM plus the trainable part of one tuning method (:class:`~pipeline.methods.Adapters`).

    Args:
        model: any HF causal LM (Llama, Qwen2, GLM, GLM-4, GPT-2, converted ChatGLM ...). Every
            base weight gets ``requires_grad=False`` and the base stays in eval mode (no dropout).
        adapters: the method's adapters (:func:`pipeline.methods.build_adapters` / ``load_adapters``; a weight
            delta such as LoRA already injected into ``model``), or a :class:`~pipeline.methods.MethodConfig` to
            build fresh ones from; None = the bare base model.
        supervised_logits_only: default of the same-named :meth:`forward` argument. True: a forward
            *with labels* projects only the supervised positions onto the vocabulary (same loss and
            gradients, ~1.3x faster SFT steps; ``logits`` is then ``(N, vocab)``).
    """

    def __init__(
        self,
        model: nn.Module,
        adapters: Adapters | MethodConfig | None = None,
        supervised_logits_only: bool = True,
    ):
        super().__init__()
        self.model = model
        self.supervised_logits_only = supervised_logits_only
        self.facts: ArchFacts = arch_facts(model.config)
        if isinstance(adapters, MethodConfig):
            adapters = build_adapters(adapters, model, self.facts)
        adapters = no_adapters() if adapters is None else adapters
        for p in self.model.parameters():
            p.requires_grad_(False)
        device = next(model.parameters()).device
        for module in adapters.modules():  # device only: adapters keep their own (float32) dtype
            module.to(device)
            module.requires_grad_(True)
        self.adapters, self.method = adapters, adapters.method
        self.prefix, self.prompt, self.lora, self.cls_head = (adapters.prefix, adapters.prompt, adapters.lora,
                                                              adapters.cls_head)
        self._cache_kwarg = cache_kwarg_name(model)
        self._decoder = getattr(model, "base_model", model)
        self._decoder_cache_kwarg = cache_kwarg_name(self._decoder)
        self._checkpointing = False
        self.train(False)

    # -- facts
    @property
    def pre_seq_len(self) -> int:
        """Number of virtual tokens in use (0 for a method without, e.g. LoRA, or for the base model)."""
        return self.adapters.pre_seq_len

    @property
    def position_offset(self) -> int:
        """Position of the first real token (see the module docstring): after input-layer virtual tokens always."""
        return self.pre_seq_len if self.adapters.positions_after_prefix else 0

    @property
    def config(self) -> Any:
        """The base model's HF config."""
        return self.model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The method's parameters (empty for a base model or a static prefix)."""
        return [p for p in self.parameters() if p.requires_grad]

    # -- modes
    def train(self, mode: bool = True) -> AdaptedLM:
        """Train the adapters; the base model stays in eval mode (its dropout off) whatever ``mode`` is."""
        super().train(mode)
        self.model.eval()
        if self.lora is not None:  # the LoRA branches live inside the base model: their dropout follows ``mode``
            self.lora.train(mode)
        if self._checkpointing:
            self._mark_checkpoint_layers(mode)
        return self

    def gradient_checkpointing_enable(self) -> None:
        """Recompute decoder layers in backward (non-reentrant) while keeping the prefix cache.

        HF only checkpoints layers in training mode and drops the cache while doing so; we flag
        just the decoder-layer modules as training (their dropout children stay in eval) and let
        them keep our read-only prefix cache, so gradients still reach the prefix.
        """
        kwargs = {"use_reentrant": False}
        if hasattr(self.model, "activation_checkpointing_enable"):  # transformers >= 5.2x name
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        self._checkpointing = True
        self.train(self.training)

    def _mark_checkpoint_layers(self, mode: bool) -> None:
        from transformers.modeling_layers import GradientCheckpointingLayer

        for module in self.model.modules():
            if isinstance(module, GradientCheckpointingLayer):
                module.training = mode
                module._can_checkpoint_with_cache = True  # our prefix layers are read-only: replay-safe

    # -- building blocks (used by pipeline.models.generation too)
    def prefix_key_values(self, batch_size: int) -> KeyValues | None:
        """Per-layer prefix ``(key, value)``, each ``(batch_size, kv_heads, P, head_dim)``; None without prefix."""
        if self.prefix is not None:
            return self.prefix.key_values(batch_size, dtype=self.dtype)
        if self.prompt is not None:
            return self.prompt_key_values(batch_size)
        return None

    def prompt_key_values(self, batch_size: int) -> KeyValues:
        """Every layer's key/values of the input-layer virtual tokens, ``(batch_size, kv_heads, P, head_dim)`` views.

        The prompt embeddings ``(1, P, hidden)`` run once through the frozen decoder at positions ``0..P-1``
        (differentiable: gradients reach the prompt through the frozen layers). Gradient checkpointing is
        paused for this short pass: a replay would append to the cache being filled.
        """
        emb = self.prompt().to(self.dtype).unsqueeze(0)  # (1, P, hidden)
        p = emb.shape[1]
        cache = DynamicCache()
        positions = torch.arange(p, device=emb.device).unsqueeze(0)
        if self._checkpointing:
            self._mark_checkpoint_layers(False)
        try:
            self._decoder(inputs_embeds=emb, attention_mask=torch.ones(1, p, dtype=torch.long, device=emb.device),
                          position_ids=positions, use_cache=True, **{self._decoder_cache_kwarg: cache})
        finally:
            if self._checkpointing:
                self._mark_checkpoint_layers(self.training)
        pairs = [(layer.keys, layer.values) for layer in cache.layers[: self.facts.num_layers]]
        return expand_key_values(pairs, batch_size)

    def new_cache(self, batch_size: int, read_only: bool = False) -> DynamicCache | None:
        """A cache holding the prefix (computed once here), or an empty ``DynamicCache`` without prefix."""
        pairs = self.prefix_key_values(batch_size)
        if pairs is None:
            return None if read_only else DynamicCache()
        return PrefixCache(pairs, read_only=read_only)

    def position_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Position ids ``(B, T)`` of a batch's real tokens (:func:`positions_from_mask` after the offset).

        A base model with a ``chatglm_position_ids(input_ids, positions)`` hook (ChatGLM-6B's 2-D positions)
        rewrites them in its own encoding; the result still advances by ``+1`` per decoded token.
        """
        positions = positions_from_mask(attention_mask, self.position_offset)
        hook = getattr(self.model, "chatglm_position_ids", None)
        return hook(input_ids, positions) if callable(hook) else positions

    def extend_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` -> ``(B, P+T)`` with ``P`` ones in front (the prefix is visible to every row)."""
        if self.pre_seq_len == 0:
            return attention_mask
        ones = attention_mask.new_ones(attention_mask.shape[0], self.pre_seq_len)
        return torch.cat([ones, attention_mask], dim=1)

    def call_base(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: Cache | None,
        **kwargs: Any,
    ) -> Any:
        """Call the base model with the right cache keyword. ``attention_mask`` covers cache + new tokens."""
        if cache is not None:
            kwargs[self._cache_kwarg] = cache
        return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs)

    def last_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Final hidden state ``(B, hidden)`` of each row's last real token (any padding side), with the method."""
        cache = self.new_cache(input_ids.shape[0], read_only=True)
        positions = self.position_ids(input_ids, attention_mask)
        kwargs: dict[str, Any] = {"use_cache": False}
        if cache is not None:
            kwargs[self._decoder_cache_kwarg] = cache
        out = self._decoder(input_ids=input_ids, attention_mask=self.extend_mask(attention_mask),
                            position_ids=positions, **kwargs)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]  # (B, T, hidden)
        t = attention_mask.shape[1]
        last = t - 1 - attention_mask.long().flip(1).argmax(1)  # index of each row's last 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def head_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """The cls heads' logits ``{level: (B, n_labels)}`` over the prompt's last token."""
        if self.cls_head is None:
            raise ValueError("this model has no cls_head")
        return self.cls_head(self.last_hidden(input_ids, attention_mask))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        supervised_logits_only: bool | None = None,
        class_labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """Full-sequence forward with the method.

        With ``class_labels`` ``(B, levels)`` (cls_head training; -100 = no gold) the output is the heads'
        ``loss`` (mean cross-entropy over levels) and ``class_logits`` ``{level: (B, n)}``; ``labels`` is ignored.

        Args:
            input_ids: ``(B, T)``; attention_mask: ``(B, T)`` (1 = real token; None = all real);
            labels: ``(B, T)`` with -100 on ignored positions (HF shifts them), or None.
            supervised_logits_only: with labels, project only the positions whose next token is
                supervised onto the vocabulary (the prompt part of an SFT batch is skipped): same loss
                and gradients, much less ``lm_head`` + softmax work; ``logits`` is then ``(N, vocab)``
                for the ``N`` supervised positions in row-major order. None = the instance default
                (True); pass False for the full ``(B, T, vocab)`` logits alongside the loss.
            kwargs: passed to the base model (e.g. ``logits_to_keep``, ``num_items_in_batch``).
        Returns:
            the HF ``CausalLMOutput``: ``loss`` (when labels given) and ``logits`` ``(B, T, vocab)``
            (``(N, vocab)`` in the supervised-only case).
        """
        if supervised_logits_only is None:
            supervised_logits_only = self.supervised_logits_only
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if class_labels is not None:
            logits = self.head_logits(input_ids, attention_mask)
            return ClassOutput(loss=self.cls_head.loss(logits, class_labels), class_logits=logits)
        position_ids = kwargs.pop("position_ids", None)
        if position_ids is None:
            position_ids = self.position_ids(input_ids, attention_mask)
        cache = self.new_cache(input_ids.shape[0], read_only=True)
        kwargs.setdefault("use_cache", False)
        mask = self.extend_mask(attention_mask)
        if supervised_logits_only and labels is not None:
            return self._forward_supervised(input_ids, mask, position_ids, cache, labels, **kwargs)
        return self.call_base(input_ids, mask, position_ids, cache, labels=labels, **kwargs)

    def _forward_supervised(
        self, input_ids: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor, cache: Cache | None,
        labels: torch.Tensor, **kwargs: Any,
    ) -> Any:
        """Loss from the supervised positions only (``logits_to_keep`` as a boolean ``(B, T)`` mask)."""
        targets = labels[:, 1:]
        keep = torch.zeros_like(labels, dtype=torch.bool)
        keep[:, :-1] = targets != -100  # position t predicts token t+1
        num_items = kwargs.pop("num_items_in_batch", None)
        out = self.call_base(input_ids, mask, position_ids, cache, logits_to_keep=keep, **kwargs)
        logits = out.logits.reshape(-1, out.logits.shape[-1])  # (N, vocab)
        # float32 cross-entropy, mean over supervised tokens (or sum / num_items_in_batch): what HF's
        # ForCausalLMLoss computes from the full logits
        if num_items is None:
            out.loss = nn.functional.cross_entropy(logits.float(), targets[keep[:, :-1]])
        else:
            out.loss = nn.functional.cross_entropy(logits.float(), targets[keep[:, :-1]], reduction="sum") / num_items
        return out

    # -- persistence
    def save_adapter(self, out_dir: str | Path, extra: dict[str, Any] | None = None) -> list[Path]:
        """Write the method's trained weights + method JSON (+ heads): see :func:`pipeline.methods.save_adapters`."""
        return save_adapters(self.adapters, out_dir, self.facts, extra)

    def load_adapter_weights(self, folder: str | Path) -> None:
        """Reload this method's trained weights from a checkpoint folder of the same run (resume)."""
        load_adapter_weights(self.adapters, folder)

    def export_static_prefix(self, out_dir: str | Path, extra: dict[str, Any] | None = None) -> list[Path]:
        """Write the computed key/values (``prefix_static.safetensors``) for encoder-free inference."""
        if isinstance(self.prefix, StaticPrefix) or self.prefix is None:
            raise ValueError("export_static_prefix needs a trainable ptuning_v2 / prefix_tuning encoder")
        return export_static(self.adapters, out_dir, extra)


# ----------------------------------------------------------------------------------------- loading
def load_base_model(model_dir: str | Path, dtype: str = "float32", device: str = "cpu") -> nn.Module:
    """``AutoModelForCausalLM`` from a local folder, SDPA attention when the architecture has it."""
    from transformers import AutoModelForCausalLM

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    try:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=DTYPES[dtype], attn_implementation="sdpa")
    except (ValueError, ImportError) as exc:  # architectures without SDPA support
        log.warning("SDPA attention unavailable for %s (%s); using the default", model_dir, exc)
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=DTYPES[dtype])
    return model.to(device).eval()


def load_model(
    spec: str,
    checkpoint: Checkpoint | str | Path | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    system_prompt: str | None = SYSTEM_PROMPT,
    method: MethodConfig | None = None,
) -> tuple[AdaptedLM, Any]:
    """Load a model spec (``smollm2`` | ``tiny:<name>`` | folder) as an :class:`AdaptedLM` plus tokenizer.

    The one loader for every method; the adapters come from exactly one place:

    * ``checkpoint``: a train checkpoint of any method (a folder, read and verified by
      :func:`pipeline.models.checkpoint.read_checkpoint`, or the :class:`Checkpoint` already read); its method JSON
      says which method (a static export too); one made for another base model is an exit-2 DataError;
    * ``method``: fresh adapters of the selected method (training);
    * neither: the bare base model, still wrapped (``pre_seq_len == 0``) so every call path is the same.

    The adapter parameters stay float32 whatever ``dtype`` the base model gets (cast per forward).
    The tokenizer carries the chat format's system prompt (:func:`set_system_prompt`): the one a checkpoint
    recorded at training time (:data:`SYSTEM_PROMPT` for checkpoints older than the record), else
    ``system_prompt``.
    """
    if checkpoint is not None and method is not None:
        raise ValueError("load_model takes a checkpoint or a method for fresh adapters, not both")
    ckpt = as_checkpoint(checkpoint) if checkpoint is not None else None
    model_dir = resolve_model_dir(spec)
    model = load_base_model(model_dir, dtype=dtype, device=device)
    tokenizer = load_tokenizer(model_dir)
    facts = arch_facts(model.config)
    adapters = None
    if ckpt is not None:
        adapters = load_adapters(ckpt.folder, model, facts, data=ckpt.meta)
        system_prompt = ckpt.system_prompt(SYSTEM_PROMPT)
    elif method is not None:
        adapters = build_adapters(method, model, facts)
    set_system_prompt(tokenizer, system_prompt)
    lm = AdaptedLM(model, adapters)
    log.info("loaded %s (%s) with method %s, %d virtual tokens, %d trainable parameters", spec,
             type(model).__name__, lm.method or "none", lm.pre_seq_len,
             sum(p.numel() for p in lm.trainable_parameters()))
    return lm, tokenizer


# ------------------------------------------------------------------------------------- chat format
#: attribute of a tokenizer carrying its model's system prompt (set by :func:`set_system_prompt`)
_SYSTEM_ATTR = "pipeline_system_prompt"


def set_system_prompt(tokenizer: Any, system: str | None) -> None:
    """Give ``tokenizer`` the system prompt :func:`build_chat_prompt` uses with it.

    The tokenizer travels with its model to every place that formats a prompt (training rows, dev checks,
    scoring, generation), so it carries the one setting they must agree on. ``None`` = no system turn
    (the template's own default, e.g. SmolLM2's 28-token "You are a helpful AI assistant named SmolLM ...");
    ``""`` = an empty system turn (the shortest form, 14 tokens of template on SmolLM2).
    """
    setattr(tokenizer, _SYSTEM_ATTR, system)


def system_prompt_of(tokenizer: Any) -> str | None:
    """The system prompt set on ``tokenizer`` (:data:`SYSTEM_PROMPT` when none was set)."""
    return getattr(tokenizer, _SYSTEM_ATTR, SYSTEM_PROMPT)


def build_chat_prompt(tokenizer: Any, prompt: str) -> str:
    """The ONE place the chat format is applied (train, predict and eval all call it).

    Order: a tokenizer hook ``build_glm_prompt(prompt)`` (ChatGLM, e.g. ``"[Round 1]\\n\\n问：...\\n\\n答："``);
    else the tokenizer's chat template with ``add_generation_prompt=True`` and the tokenizer's system prompt
    (:func:`system_prompt_of`: a checkpoint's recorded one, else the short domain :data:`SYSTEM_PROMPT`;
    retried without a system turn if the template rejects one); else ``"{prompt}\\n"``. Tokenize the result
    with :func:`prompt_add_special_tokens`.
    """
    hook = getattr(tokenizer, "build_glm_prompt", None)
    if callable(hook):
        return hook(prompt)
    if getattr(tokenizer, "chat_template", None):
        system = system_prompt_of(tokenizer)
        user = [{"role": "user", "content": prompt}]
        messages = ([{"role": "system", "content": system}] if system is not None else []) + user
        try:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:  # noqa: BLE001 - some templates refuse a system turn (jinja raises its own types)
            if system is None:
                raise
            return tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    return f"{prompt}\n"


def prompt_add_special_tokens(tokenizer: Any) -> bool:
    """Whether to let the tokenizer add BOS etc. to a :func:`build_chat_prompt` string.

    False when a chat template (or GLM hook) already wrote the special tokens into the text.
    """
    return not (callable(getattr(tokenizer, "build_glm_prompt", None)) or getattr(tokenizer, "chat_template", None))


def encode_chat_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of the chat-formatted ``prompt`` (what train, predict and eval feed the model).

    A ChatGLM tokenizer builds them from pieces (``encode_glm_prompt`` hook: THUDM's exact ids, typed
    special-token text kept as text); others tokenize :func:`build_chat_prompt`'s string.
    """
    hook = getattr(tokenizer, "encode_glm_prompt", None)
    if callable(hook):
        return list(hook(tokenizer, prompt))
    text = build_chat_prompt(tokenizer, prompt)
    return tokenizer(text, add_special_tokens=prompt_add_special_tokens(tokenizer))["input_ids"]
