"""Wiring the adapter into a frozen diffusers UNet, the diffusers way.

* Visual injection: every `BasicTransformerBlock` gets a `fuser` — diffusers' own GLIGEN layer
  (`GatedSelfAttentionDense`), which the block already calls between its self- and cross-attention
  when `cross_attention_kwargs["gligen"] = {"objs": E_r}` is passed. Its gates start at γ = 0, so a
  freshly attached adapter changes nothing.
* Cross-attention K/V: each cross-attention (`attn2`) gets an `IDAdapterAttnProcessor` holding
  trainable copies of its K/V projections; the base projections stay frozen and untouched, so
  scale 0 gives back the base model exactly.
* `unet.position_net` (GLIGEN's box encoder, which the UNet calls on the "gligen" kwargs) becomes a
  pass-through: E_r is computed outside the UNet, once per generation.
"""
from __future__ import annotations

import copy

import torch
from diffusers.models.attention import BasicTransformerBlock, GatedSelfAttentionDense
from diffusers.models.attention_processor import AttnProcessor2_0
from torch import nn


class ScaledGatedSelfAttention(GatedSelfAttentionDense):
    """diffusers' GLIGEN layer with the paper's adapter scale β: y + β·tanh(γ)·S([y, E_r]).

    diffusers' layer only has an on/off switch (`enabled`); β weakens the adapter continuously.
    The parameters, and so the state-dict layout, are exactly those of `GatedSelfAttentionDense`.
    """

    def __init__(self, query_dim: int, context_dim: int, n_heads: int, d_head: int):
        super().__init__(query_dim, context_dim, n_heads, d_head)
        self.scale = 1.0

    def forward(self, x: torch.Tensor, objs: torch.Tensor) -> torch.Tensor:
        if not self.enabled or self.scale == 0:
            return x
        n_visual = x.shape[1]
        objs = self.linear(objs)
        x = x + self.scale * self.alpha_attn.tanh() * self.attn(self.norm1(torch.cat([x, objs], dim=1)))[:, :n_visual, :]
        return x + self.scale * self.alpha_dense.tanh() * self.ff(self.norm2(x))


class _WithProjections:
    """An `Attention` seen through other K/V projections, so diffusers' own processor can run it."""

    def __init__(self, attn, to_k, to_v):
        self._attn, self.to_k, self.to_v = attn, to_k, to_v

    def __getattr__(self, name):
        return getattr(self._attn, name)


class IDAdapterAttnProcessor(nn.Module):
    """Cross-attention with trained K/V projections, blended with the frozen base ones by `scale`."""

    def __init__(self, attn):
        super().__init__()
        self.to_k = copy.deepcopy(attn.to_k).requires_grad_(True)
        self.to_v = copy.deepcopy(attn.to_v).requires_grad_(True)
        self.scale = 1.0
        self._base = AttnProcessor2_0()

    def _blend(self, base: nn.Linear, trained: nn.Linear):
        if self.scale == 1:
            return trained
        return lambda x: base(x) + self.scale * (trained(x) - base(x))

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if self.scale != 0:
            attn = _WithProjections(attn, self._blend(attn.to_k, self.to_k), self._blend(attn.to_v, self.to_v))
        return self._base(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class ObjectsPassThrough(nn.Module):
    """Stands where GLIGEN's position net stands: the UNet hands it the "gligen" kwargs."""

    def forward(self, objs: torch.Tensor) -> torch.Tensor:
        return objs


def attach_identity_layers(unet: nn.Module) -> None:
    """Add the gated self-attention layers and the K/V processors to a (frozen) UNet, in place."""
    if any(isinstance(m, (ScaledGatedSelfAttention, IDAdapterAttnProcessor)) for m in unet.modules()):
        raise ValueError("this UNet already carries IDAdapter layers")
    if getattr(unet, "position_net", None) is not None:
        raise ValueError("this UNet is a GLIGEN UNet (it has a position_net); IDAdapter needs a plain SD UNet")
    context_dim = unet.config.cross_attention_dim
    for block in unet.modules():
        if isinstance(block, BasicTransformerBlock):
            attn = block.attn1
            fuser = ScaledGatedSelfAttention(attn.query_dim, context_dim, attn.heads, attn.inner_dim // attn.heads)
            block.fuser = fuser.to(device=attn.to_q.weight.device, dtype=attn.to_q.weight.dtype)
    processors = {
        name: IDAdapterAttnProcessor(unet.get_submodule(name.removesuffix(".processor"))) if name.endswith("attn2.processor") else processor
        for name, processor in unet.attn_processors.items()
    }
    unet.set_attn_processor(processors)
    unet.position_net = ObjectsPassThrough()


def adapter_modules(unet: nn.Module) -> dict[str, nn.Module]:
    """The UNet's adapter modules by their path in the UNet."""
    return {
        name: module for name, module in unet.named_modules()
        if isinstance(module, (ScaledGatedSelfAttention, IDAdapterAttnProcessor))
    }


def unet_adapter_state_dict(unet: nn.Module) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": tensor
        for name, module in adapter_modules(unet).items()
        for key, tensor in module.state_dict().items()
    }


def set_adapter_scale(unet: nn.Module, scale: float) -> None:
    """β for every gated layer and K/V processor: 1 the trained adapter, 0 the base model exactly."""
    if not 0 <= scale:
        raise ValueError(f"adapter scale must be >= 0, got {scale}")
    modules = adapter_modules(unet)
    if not modules:
        raise ValueError("this UNet carries no IDAdapter layers (call attach_identity_layers first)")
    for module in modules.values():
        module.scale = float(scale)
