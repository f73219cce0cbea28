"""Wiring the adapter into a frozen diffusers UNet, the diffusers way.

* Visual injection: every `BasicTransformerBlock` gets a `fuser` — diffusers' own GLIGEN layer
  (`GatedSelfAttentionDense`), which the block already calls between its self- and cross-attention
  when `cross_attention_kwargs["gligen"] = {"objs": E_r}` is passed. Its gates start at γ = 0, so a
  freshly attached adapter changes nothing.
* Cross-attention K/V: each cross-attention (`attn2`) gets an `IDAdapterAttnProcessor` holding
  trainable copies of its K/V projections; the base projections stay frozen and untouched, so
  scale 0 gives back the base model exactly.
* Something may later replace the UNet's attention processors (`enable_attention_slicing`,
  `set_attn_processor`, `enable_xformers_memory_efficient_attention`), which would drop the trained
  K/V silently: `check_adapter_layers` refuses a UNet that lost any, and
  `reinstall_adapter_processors` puts the adapter's back around the new processors.
* `unet.position_net` (GLIGEN's box encoder, which the UNet calls on the "gligen" kwargs) becomes a
  pass-through: E_r is computed outside the UNet, once per generation.
"""
from __future__ import annotations

import copy

import torch
from typing import NamedTuple

from diffusers.models.attention import BasicTransformerBlock, GatedSelfAttentionDense
from diffusers.models.attention_processor import AttnProcessor2_0
from torch import nn


class MaskedObjects(NamedTuple):
    """E_r with a per-sample mask: the gated layers of samples where `present` is False leave them as
    they are (y := y), as GLIGEN's pipeline masks grounding in the unconditional half of guidance."""

    tokens: torch.Tensor  # (B, T, D)
    present: torch.Tensor  # (B,) bool


class ScaledGatedSelfAttention(GatedSelfAttentionDense):
    """diffusers' GLIGEN layer with the paper's adapter scale β: y + β·tanh(γ)·S([y, E_r]).

    diffusers' layer only has an on/off switch (`enabled`); β weakens the adapter continuously.
    The parameters, and so the state-dict layout, are exactly those of `GatedSelfAttentionDense`.
    """

    def __init__(self, query_dim: int, context_dim: int, n_heads: int, d_head: int):
        super().__init__(query_dim, context_dim, n_heads, d_head)
        self.scale = 1.0

    def forward(self, x: torch.Tensor, objs: torch.Tensor | MaskedObjects) -> torch.Tensor:
        if not self.enabled or self.scale == 0:
            return x
        scale = self.scale
        if isinstance(objs, MaskedObjects):
            scale = self.scale * objs.present.to(x.dtype).view(-1, 1, 1)
            objs = objs.tokens
        n_visual = x.shape[1]
        objs = self.linear(objs)
        x = x + scale * self.alpha_attn.tanh() * self.attn(self.norm1(torch.cat([x, objs], dim=1)))[:, :n_visual, :]
        return x + scale * self.alpha_dense.tanh() * self.ff(self.norm2(x))


class _WithProjections:
    """An `Attention` seen through other K/V projections, so diffusers' own processor can run it."""

    def __init__(self, attn, to_k, to_v):
        self._attn, self.to_k, self.to_v = attn, to_k, to_v

    def __getattr__(self, name):
        return getattr(self._attn, name)


class AdapterLayersDropped(RuntimeError):
    pass


class IDAdapterAttnProcessor(nn.Module):
    """Cross-attention with trained K/V projections, blended with the frozen base ones by `scale`.

    The attention itself is computed by `inner`, any diffusers processor that reads `attn.to_k` /
    `attn.to_v` (SDPA by default; sliced or xformers attention when those were asked for).
    """

    def __init__(self, attn, inner=None):
        super().__init__()
        self.to_k = copy.deepcopy(attn.to_k).requires_grad_(True)
        self.to_v = copy.deepcopy(attn.to_v).requires_grad_(True)
        self.scale = 1.0
        self.inner = inner or AttnProcessor2_0()

    def _blend(self, base: nn.Linear, trained: nn.Linear):
        if self.scale == 1:
            return trained
        return lambda x: base(x) + self.scale * (trained(x) - base(x))

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if self.scale != 0:
            attn = _WithProjections(attn, self._blend(attn.to_k, self.to_k), self._blend(attn.to_v, self.to_v))
        extra = {} if temb is None else {"temb": temb}  # sliced attention takes no temb
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, **extra)


class ObjectsPassThrough(nn.Module):
    """Stands where GLIGEN's position net stands: the UNet hands it the "gligen" kwargs, and its output
    to every gated layer. `masks` (B,) bool, optional: which samples see E_r (see `MaskedObjects`)."""

    def forward(self, objs: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor | MaskedObjects:
        return objs if masks is None else MaskedObjects(objs, masks)


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


def check_adapter_layers(unet: nn.Module) -> None:
    """Refuse a UNet whose adapter layers are incomplete: every transformer block needs its gated
    layer and every cross-attention its K/V processor (else the trained weights are silently unused)."""
    blocks = [name for name, m in unet.named_modules() if isinstance(m, BasicTransformerBlock)]
    gated = [name for name in blocks if isinstance(getattr(unet.get_submodule(name), "fuser", None), ScaledGatedSelfAttention)]
    cross = {name: p for name, p in unet.attn_processors.items() if name.endswith("attn2.processor")}
    kv = [name for name, p in cross.items() if isinstance(p, IDAdapterAttnProcessor)]
    if not gated and not kv:
        raise AdapterLayersDropped("this UNet carries no IDAdapter layers (call attach_identity_layers first)")
    if len(gated) < len(blocks) or len(kv) < len(cross):
        replaced = sorted({type(p).__name__ for p in cross.values() if not isinstance(p, IDAdapterAttnProcessor)})
        raise AdapterLayersDropped(
            f"the UNet lost IDAdapter layers: {len(kv)} of {len(cross)} cross-attention K/V processors "
            f"(replaced by {', '.join(replaced) or 'nothing'}) and {len(gated)} of {len(blocks)} gated layers remain. "
            "enable_attention_slicing, set_attn_processor and xformers replace the attention processors: call them "
            "through IDAdapterPipeline (which re-installs the adapter around them) or before load_adapter")


def reinstall_adapter_processors(unet: nn.Module, processors: dict[str, IDAdapterAttnProcessor]) -> list[str]:
    """Put the adapter's K/V processors back where another processor replaced them, running the new
    one inside (so sliced or xformers attention still computes the attention); returns their names."""
    current = unet.attn_processors
    replaced = [name for name, processor in processors.items() if current[name] is not processor]
    for name in replaced:
        inner = current[name]
        if isinstance(inner, nn.Module):  # carries its own weights (another adapter): no sound way to nest
            raise AdapterLayersDropped(f"{name}: replaced by {type(inner).__name__}, a processor with weights of "
                                       "its own; IDAdapter's K/V processors cannot run around it")
        processors[name].inner = inner
    if replaced:
        unet.set_attn_processor({name: processors.get(name, processor) for name, processor in current.items()})
    return replaced


def adapter_modules(unet: nn.Module) -> dict[str, nn.Module]:
    """The UNet's adapter modules by their path in the UNet."""
    return {
        name: module for name, module in unet.named_modules()
        if isinstance(module, (ScaledGatedSelfAttention, IDAdapterAttnProcessor))
    }


def unet_adapter_state_dict(unet: nn.Module) -> dict[str, torch.Tensor]:
    check_adapter_layers(unet)
    return {
        f"{name}.{key}": tensor
        for name, module in adapter_modules(unet).items()
        for key, tensor in module.state_dict().items()
    }


def set_adapter_scale(unet: nn.Module, scale: float) -> None:
    """β for every gated layer and K/V processor: 1 the trained adapter, 0 the base model exactly."""
    if not 0 <= scale:
        raise ValueError(f"adapter scale must be >= 0, got {scale}")
    check_adapter_layers(unet)
    for module in adapter_modules(unet).values():
        module.scale = float(scale)
