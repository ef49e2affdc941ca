"""An attention processor that reports what the token scores need.

Installed on the attention modules of the cached blocks only when the score needs something
from inside the attention (``vnorm``: the per-head value norms; ``attention``: the
head-averaged attention map). With nothing requested it runs exactly the operations of
diffusers' ``AttnProcessor2_0`` (projections, fused ``scaled_dot_product_attention``, output
projection), so outputs are bit-identical to the default processor.

* ``want_vnorm``: stores ``|v|_2`` per head and token, ``(B, H, N_kv)``, computed from the value
  projection the attention needs anyway; attention itself stays fused (V-caching).
* ``want_probs``: computes the attention explicitly (``softmax(q k^T * scale + mask)``, in
  float32 for half-precision inputs) and stores the head mean ``(B, N_q, N_kv)``. Only ToCa's
  ``attention`` score asks for it, and only on full steps (self-attention) or on the recomputed
  rows of the cross-attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["CachingAttnProcessor"]


class CachingAttnProcessor:
    """Drop-in for diffusers' ``AttnProcessor2_0`` with optional V-norm / attention-map output."""

    def __init__(self) -> None:
        self.want_vnorm = False
        self.want_probs = False
        self.vnorm: torch.Tensor | None = None
        self.probs: torch.Tensor | None = None

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        if hidden_states.ndim != 3:
            raise ValueError("CachingAttnProcessor expects (batch, tokens, channels) inputs")
        source = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        batch, kv_len = source.shape[0], source.shape[1]
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, kv_len, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if self.want_vnorm:
            self.vnorm = torch.linalg.vector_norm(value.float(), dim=-1)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        if self.want_probs:
            logits = (query.float() @ key.float().transpose(-1, -2)) * attn.scale
            if attention_mask is not None:
                logits = logits + attention_mask.float()
            probs = logits.softmax(dim=-1)
            self.probs = probs.mean(dim=1)
            hidden_states = (probs.to(value.dtype) @ value).to(query.dtype)
        else:
            hidden_states = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
            )
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor
