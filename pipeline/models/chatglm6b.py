"""ChatGLM-6B (THUDM's first release, "v1") as a native transformers model: no remote code.

The architecture (GLM, Du et al. 2022, as THUDM's ``modeling_chatglm.py`` runs it):

* **2-D rotary positions**: each head's first half rotates by the *position id*, its second half by
  the *block position id*, each with RoPE over half the head (non-interleaved ``rotate_half``).
  Context tokens (before ``<sop>``) get positions ``0..c-1`` and block 0; ``<sop>`` and everything
  generated after it keep the position of the ``[gMASK]`` token ("frozen at the mask") and count
  block positions ``1, 2, ...``. THUDM builds the rotary tables from a float16 ``inv_freq``: kept here.
* **prefix-LM mask**: every context token sees the whole context (bidirectional), tokens from
  ``<sop>`` on see the context and their own past (causal).
* **blocks**: LayerNorm (with bias) everywhere, fused per-head ``[q | k | v]`` projection with bias,
  GELU (tanh) MLP with biases, and the residual ``LN(x) * alpha + f(LN(x))`` with
  ``alpha = sqrt(2 * 28)`` (``sqrt(2 * layers)`` of the real model; THUDM's code uses 28 for any
  config) -- the normalised input, not ``x``, is carried.

Tensor names are THUDM's (``transformer.layers.N.attention.query_key_value.weight`` ...), so a
THUDM folder converts by copying (:func:`pipeline.models.chatglm.convert_chatglm6b`).

How the 2-D positions travel through the project's one call path
-----------------------------------------------------------------
:class:`pipeline.models.lm.AdaptedLM`, generation and label scoring hand every model ``(B, T)``
position ids that grow by one per decoded token. :meth:`ChatGLM6BForCausalLM.chatglm_position_ids`
(called by ``AdaptedLM.position_ids``) packs into each of them the row's context length ``c`` and
mask position ``m`` with the ordinal position ``p``: ``((c + 1) * M + m + 1) * M + p`` with
``M = 2**20``. ``+1`` still advances ``p`` only, repeating rows for candidates copies the fields, and
the model unpacks ``position = p if p < c else m``, ``block = 0 if p < c else p - c + 1`` and the
context mask. Plain ids (``< M``) are read as in THUDM's own forward: ``c`` from the first
``<sop>`` in the call, ``m`` from the first ``[gMASK]`` / ``[MASK]``; a row without ``<sop>`` is
an ordinary causal sequence (block 0).

A 4-D attention mask, as label scoring passes for its candidate tree, is used as given: those
tokens all come after ``<sop>``, where the prefix-LM mask is causal anyway.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep

MODEL_TYPE = "chatglm6b"
#: field width of the packed position ids (see the module docstring)
POSITION_FIELD = 2**20


class ChatGLM6BConfig(PretrainedConfig):
    """THUDM ChatGLM-6B hyper-parameters (their ``config.json`` field names)."""

    model_type = MODEL_TYPE
    attribute_map = {"num_hidden_layers": "num_layers"}

    def __init__(self, vocab_size: int = 130528, hidden_size: int = 4096, num_layers: int = 28,
                 num_attention_heads: int = 32, inner_hidden_size: int = 16384, layernorm_epsilon: float = 1e-5,
                 max_sequence_length: int = 2048, bos_token_id: int = 130004, eos_token_id: int = 130005,
                 mask_token_id: int = 130000, gmask_token_id: int = 130001, pad_token_id: int = 3,
                 alpha_layers: int = 28, **kwargs: Any):
        self.vocab_size, self.hidden_size, self.num_layers = vocab_size, hidden_size, num_layers
        self.num_attention_heads, self.inner_hidden_size = num_attention_heads, inner_hidden_size
        self.layernorm_epsilon, self.max_sequence_length = layernorm_epsilon, max_sequence_length
        self.mask_token_id, self.gmask_token_id = mask_token_id, gmask_token_id
        # the residual's alpha = sqrt(2 * alpha_layers): THUDM's GLMBlock defaults num_layers to 28 and their
        # ChatGLMModel never passes the config's, so alpha is sqrt(56) for every config (= sqrt(2 * 28 layers))
        self.alpha_layers = alpha_layers
        # THUDM's config leaves tie_word_embeddings at transformers' default (True): one matrix for both ends
        kwargs.setdefault("tie_word_embeddings", True)
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


# ----------------------------------------------------------------------------------------- positions
def pack_positions(positions: torch.Tensor, context: torch.Tensor, mask_pos: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` ordinal positions + per-row context length / mask position ``(B,)`` -> packed ids ``(B, T)``."""
    m = POSITION_FIELD
    return ((context[:, None] + 1) * m + mask_pos[:, None] + 1) * m + positions


def find_context(input_ids: torch.Tensor, positions: torch.Tensor, config: ChatGLM6BConfig
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row ``(has_sop, c, m)`` ``(B,)``: the ordinal position of the first ``<sop>`` and of the first
    ``[gMASK]`` (else ``[MASK]``, else ``c - 1``) in this call (THUDM's ``get_position_ids``)."""
    def first(hit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        found = hit.any(-1)
        idx = hit.long().argmax(-1)
        return found, positions.gather(1, idx[:, None])[:, 0]

    has_sop, c = first(input_ids == config.bos_token_id)
    has_g, g = first(input_ids == config.gmask_token_id)
    has_m, mk = first(input_ids == config.mask_token_id)
    m = torch.where(has_g, g, torch.where(has_m, mk, c - 1))
    return has_sop, c, m


def unpack_positions(position_ids: torch.Tensor, input_ids: torch.Tensor | None, config: ChatGLM6BConfig
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(position, block, is_context)``, each ``(B, T)``, from packed or plain position ids."""
    m = POSITION_FIELD
    p = position_ids % m
    packed = position_ids >= m
    c = position_ids // (m * m) - 1
    mk = (position_ids // m) % m - 1
    if input_ids is not None and not bool(packed.all()):
        has_sop, c0, m0 = find_context(input_ids, p, config)
        big = torch.full_like(c0, torch.iinfo(torch.int32).max)
        c = torch.where(packed, c, torch.where(has_sop, c0, big)[:, None])
        mk = torch.where(packed, mk, m0[:, None])
    is_ctx = p < c
    position = torch.where(is_ctx, p, mk)
    block = torch.where(is_ctx, torch.zeros_like(p), p - c + 1)
    no_sop = c >= torch.iinfo(torch.int32).max  # an ordinary causal row
    return position, block, is_ctx & ~no_sop


def rotary_tables(positions: torch.Tensor, dim: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin ``(B, 1, T, dim)`` for RoPE over ``dim`` channels (``cat(freqs, freqs)``, THUDM's float16 inv_freq)."""
    inv_freq = (1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device) / dim)))
    inv_freq = inv_freq.half().float()
    freqs = positions.float()[..., None] * inv_freq  # (B, T, dim/2)
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_2d_rotary(x: torch.Tensor, rope: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """``x`` ``(B, H, T, D)``: first half rotated by the position tables, second half by the block tables."""
    cos1, sin1, cos2, sin2 = rope
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos1 + rotate_half(x1) * sin1, x2 * cos2 + rotate_half(x2) * sin2], dim=-1)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """THUDM's (OpenAI's) tanh GELU."""
    return 0.5 * x * (1.0 + torch.tanh(0.7978845608028654 * x * (1.0 + 0.044715 * x * x)))


# -------------------------------------------------------------------------------------------- blocks
class ChatGLM6BAttention(nn.Module):
    def __init__(self, config: ChatGLM6BConfig, layer_idx: int):
        super().__init__()
        self.layer_idx, self.heads, self.head_dim = layer_idx, config.num_attention_heads, config.head_dim
        self.query_key_value = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=True)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=True)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, ...], mask: torch.Tensor,
                cache: Cache | None) -> torch.Tensor:
        """``x`` ``(B, T, hidden)``; ``mask`` additive ``(B, 1, T, S)``; returns ``(B, T, hidden)``."""
        b, t, _ = x.shape
        qkv = self.query_key_value(x).view(b, t, self.heads, 3 * self.head_dim).transpose(1, 2)
        q, k, v = qkv.split(self.head_dim, dim=-1)  # per head [q | k | v]
        q, k = apply_2d_rotary(q, rope), apply_2d_rotary(k, rope)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype))
        return self.dense(out.transpose(1, 2).reshape(b, t, -1))


class ChatGLM6BMLP(nn.Module):
    def __init__(self, config: ChatGLM6BConfig):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(config.hidden_size, config.inner_hidden_size, bias=True)
        self.dense_4h_to_h = nn.Linear(config.inner_hidden_size, config.hidden_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense_4h_to_h(gelu(self.dense_h_to_4h(x)))


class ChatGLM6BBlock(GradientCheckpointingLayer):
    def __init__(self, config: ChatGLM6BConfig, layer_idx: int):
        super().__init__()
        self.alpha = math.sqrt(2 * config.alpha_layers)
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)
        self.attention = ChatGLM6BAttention(config, layer_idx)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)
        self.mlp = ChatGLM6BMLP(config)

    def forward(self, hidden_states: torch.Tensor, rope: tuple[torch.Tensor, ...], mask: torch.Tensor,
                cache: Cache | None = None, **kwargs: Any) -> torch.Tensor:
        # GLM's residual carries the *normalised* input, scaled by alpha = sqrt(2 * layers)
        h = self.input_layernorm(hidden_states)
        x = h * self.alpha + self.attention(h, rope, mask, cache)
        h = self.post_attention_layernorm(x)
        return h * self.alpha + self.mlp(h)


class ChatGLM6BPreTrainedModel(PreTrainedModel):
    config_class = ChatGLM6BConfig
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["ChatGLM6BBlock"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def build_mask(pad: torch.Tensor, is_ctx: torch.Tensor, past: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive prefix-LM mask ``(B, 1, T, past+T)`` from the 2-D padding mask ``pad`` ``(B, past+T)``.

    Query ``i`` sees key ``j`` when ``j`` is real and (``j <= past + i`` or both are context tokens);
    cached keys all precede the new tokens. A padding query also sees itself (no empty softmax row).
    """
    b, t = is_ctx.shape
    s = past + t
    q_idx = torch.arange(t, device=pad.device)[:, None] + past
    k_idx = torch.arange(s, device=pad.device)[None, :]
    allowed = (k_idx <= q_idx)[None].expand(b, t, s).clone()
    ctx_k = torch.cat([torch.zeros(b, past, dtype=torch.bool, device=pad.device), is_ctx], dim=1)
    allowed |= is_ctx[:, :, None] & ctx_k[:, None, :]
    allowed &= pad.bool()[:, None, :]
    allowed |= (k_idx == q_idx)[None]
    return torch.zeros(b, 1, t, s, dtype=dtype, device=pad.device).masked_fill_(~allowed[:, None], torch.finfo(dtype).min)


class ChatGLM6BModel(ChatGLM6BPreTrainedModel):
    """The decoder: word embeddings, the GLM blocks, the final LayerNorm (THUDM's ``transformer``)."""

    def __init__(self, config: ChatGLM6BConfig):
        super().__init__(config)
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([ChatGLM6BBlock(config, i) for i in range(config.num_layers)])
        self.final_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.word_embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.word_embeddings = value

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, past_key_values: Cache | None = None,
                inputs_embeds: torch.Tensor | None = None, use_cache: bool | None = None,
                cache: Cache | None = None, **kwargs: Any) -> BaseModelOutputWithPast:
        """``input_ids`` ``(B, T)``; ``attention_mask`` ``(B, past+T)`` (1 = real) or an additive / boolean
        ``(B, 1, T, past+T)`` mask used as given; ``position_ids`` ``(B, T)`` packed or plain (module docstring)."""
        cache = cache if cache is not None else past_key_values
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        b, t, _ = inputs_embeds.shape
        if use_cache and cache is None:
            cache = DynamicCache()
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            if attention_mask is not None and attention_mask.dim() == 2:
                position_ids = (attention_mask[:, -t:].long().cumsum(-1) - 1).clamp(min=0)
            else:
                position_ids = torch.arange(t, device=inputs_embeds.device).expand(b, t)
        position, block, is_ctx = unpack_positions(position_ids, input_ids, self.config)
        dtype = inputs_embeds.dtype
        if attention_mask is not None and attention_mask.dim() == 4:
            mask = attention_mask if attention_mask.dtype != torch.bool else torch.zeros(
                attention_mask.shape, dtype=dtype, device=attention_mask.device).masked_fill_(
                    ~attention_mask, torch.finfo(dtype).min)
        else:
            pad = attention_mask if attention_mask is not None else torch.ones(
                b, past + t, dtype=torch.long, device=inputs_embeds.device)
            mask = build_mask(pad, is_ctx, past, dtype)
        half = self.config.head_dim // 2
        rope = (*rotary_tables(position, half, dtype), *rotary_tables(block, half, dtype))
        hidden = inputs_embeds
        for layer in self.layers:
            hidden = layer(hidden, rope, mask, cache=cache)
        hidden = self.final_layernorm(hidden)
        return BaseModelOutputWithPast(last_hidden_state=hidden, past_key_values=cache if use_cache else None)


class ChatGLM6BForCausalLM(ChatGLM6BPreTrainedModel):
    """ChatGLM-6B with its LM head (``lm_head``, tied to the word embeddings as THUDM's loader ties it)."""

    _tied_weights_keys = {"lm_head.weight": "transformer.word_embeddings.weight"}

    def __init__(self, config: ChatGLM6BConfig):
        super().__init__(config)
        self.transformer = ChatGLM6BModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.transformer.word_embeddings

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def chatglm_position_ids(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Pack each row's context length and mask position into its ``(B, T)`` ordinal ``positions``.

        Rows without ``<sop>`` keep plain positions (an ordinary causal row).
        """
        has_sop, c, m = find_context(input_ids, positions, self.config)
        packed = pack_positions(positions, c, m)
        return torch.where(has_sop[:, None], packed, positions)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, past_key_values: Cache | None = None,
                inputs_embeds: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                use_cache: bool | None = None, logits_to_keep: int | torch.Tensor = 0,
                cache: Cache | None = None, **kwargs: Any) -> CausalLMOutputWithPast:
        """Logits ``(B, T, vocab)`` (or the ``logits_to_keep`` rows); ``labels`` ``(B, T)`` (-100 = ignored,
        shifted here) give the mean next-token cross-entropy (sum / ``num_items_in_batch`` when given)."""
        num_items = kwargs.pop("num_items_in_batch", None)
        out = self.transformer(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               inputs_embeds=inputs_embeds, use_cache=use_cache,
                               cache=cache if cache is not None else past_key_values)
        logits = self.lm_head(slice_logits_to_keep(out.last_hidden_state, logits_to_keep))
        loss = None
        if labels is not None:
            flat = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
            target = labels[:, 1:].reshape(-1).to(flat.device)
            if num_items is None:
                loss = F.cross_entropy(flat, target, ignore_index=-100)
            else:
                loss = F.cross_entropy(flat, target, ignore_index=-100, reduction="sum") / num_items
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=out.past_key_values)


def register() -> None:
    """Make ``AutoConfig`` / ``AutoModel`` / ``AutoModelForCausalLM`` know ``model_type: chatglm6b`` (idempotent)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    try:
        AutoConfig.register(MODEL_TYPE, ChatGLM6BConfig)
        AutoModel.register(ChatGLM6BConfig, ChatGLM6BModel)
        AutoModelForCausalLM.register(ChatGLM6BConfig, ChatGLM6BForCausalLM)
    except ValueError:  # already registered
        pass


register()

__all__ = ["ChatGLM6BConfig", "ChatGLM6BForCausalLM", "ChatGLM6BModel", "MODEL_TYPE", "pack_positions",
           "register", "unpack_positions"]
