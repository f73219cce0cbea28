"""Which parameters the adapter trains, by group."""
from __future__ import annotations

from torch import nn

from .injection import ScaledGatedSelfAttention, adapter_modules


def trainable_parameters(adapter: nn.Module, unet: nn.Module) -> list[nn.Parameter]:
    """The adapter's own parameters and the UNet's adapter layers; everything else stays frozen."""
    return [*adapter.parameters(), *(p for m in adapter_modules(unet).values() for p in m.parameters())]


def parameter_groups(adapter: nn.Module, unet: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters per group: mff, token_mlp, gated self-attention, cross-attention K/V."""
    groups: dict[str, list[nn.Parameter]] = {}
    for name, child in adapter.named_children():
        groups.setdefault(name, []).extend(child.parameters())
    for module in adapter_modules(unet).values():
        group = "gated_self_attention" if isinstance(module, ScaledGatedSelfAttention) else "cross_attention_kv"
        groups.setdefault(group, []).extend(module.parameters())
    return groups


def parameter_counts(adapter: nn.Module, unet: nn.Module) -> dict[str, int]:
    """Trainable parameters per group (`parameter_groups`) and the total."""
    counts = {group: sum(p.numel() for p in params) for group, params in parameter_groups(adapter, unet).items()}
    counts["total"] = sum(counts.values())
    return counts
