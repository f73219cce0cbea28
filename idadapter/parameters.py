"""Which parameters the adapter trains, counted by group."""
from __future__ import annotations

from collections import Counter

from torch import nn

from .injection import ScaledGatedSelfAttention, adapter_modules


def trainable_parameters(adapter: nn.Module, unet: nn.Module) -> list[nn.Parameter]:
    """The adapter's own parameters and the UNet's adapter layers; everything else stays frozen."""
    return [*adapter.parameters(), *(p for m in adapter_modules(unet).values() for p in m.parameters())]


def parameter_counts(adapter: nn.Module, unet: nn.Module) -> dict[str, int]:
    """Trainable parameters per group: mff, token_mlp, gated self-attention, cross-attention K/V, total."""
    counts: Counter[str] = Counter()
    for name, child in adapter.named_children():
        counts[name] += sum(p.numel() for p in child.parameters())
    for module in adapter_modules(unet).values():
        group = "gated_self_attention" if isinstance(module, ScaledGatedSelfAttention) else "cross_attention_kv"
        counts[group] += sum(p.numel() for p in module.parameters())
    counts["total"] = sum(counts.values())
    return dict(counts)
