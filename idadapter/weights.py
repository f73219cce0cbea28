"""Adapter weights: one safetensors file, named groups, the config in its metadata and beside it.

Key layout (all float tensors; shapes follow `IDAdapterConfig` and the base UNet):

    mff.<param>              MixedFacialFeatures (patch_proj, identity_proj, blocks, norm_out)
    token_mlp.<param>        ClassTokenMLP (net.0, net.2)
    unet.<block>.fuser.<param>              gated self-attention of one BasicTransformerBlock
    unet.<block>.attn2.processor.to_k.<p>   trained cross-attention K projection (to_v likewise)

where <block> is the block's path in the diffusers UNet, e.g.
`down_blocks.0.attentions.0.transformer_blocks.0`. The metadata holds `idadapter_config` (the JSON
of `IDAdapterConfig`); a directory save also writes it as `adapter_config.json`.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import IDAdapterConfig
from .injection import adapter_modules, attach_identity_layers, unet_adapter_state_dict
from .model import IDAdapter

WEIGHTS_NAME = "idadapter.safetensors"
CONFIG_NAME = "adapter_config.json"
CONFIG_METADATA_KEY = "idadapter_config"


class AdapterMismatch(ValueError):
    """The adapter file does not fit the base model; the message lists every difference."""


def adapter_state_dict(adapter: IDAdapter, unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    state = dict(adapter.state_dict())
    state.update({f"unet.{name}": t for name, t in unet_adapter_state_dict(unet).items()})
    return state


def save_adapter(directory: str | Path, adapter: IDAdapter, unet: torch.nn.Module) -> Path:
    """Write `idadapter.safetensors` and `adapter_config.json` into `directory`; returns the weights path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config_json = adapter.config.model_dump_json()
    tensors = {k: t.detach().to("cpu").contiguous() for k, t in adapter_state_dict(adapter, unet).items()}
    weights = directory / WEIGHTS_NAME
    partial = weights.with_suffix(".tmp")
    save_file(tensors, str(partial), metadata={CONFIG_METADATA_KEY: config_json, "format": "pt"})
    partial.replace(weights)
    (directory / CONFIG_NAME).write_text(json.dumps(json.loads(config_json), indent=2) + "\n")
    return weights


def weights_file(path: str | Path) -> Path:
    path = Path(path)
    candidate = path / WEIGHTS_NAME if path.is_dir() else path
    if not candidate.is_file():
        raise FileNotFoundError(f"{candidate}: no IDAdapter weights file ({WEIGHTS_NAME}) there")
    return candidate


def read_adapter_config(path: str | Path) -> IDAdapterConfig:
    weights = weights_file(path)
    with safe_open(str(weights), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if CONFIG_METADATA_KEY not in metadata:
        raise AdapterMismatch(f"{weights}: no '{CONFIG_METADATA_KEY}' in the safetensors metadata")
    return IDAdapterConfig.model_validate_json(metadata[CONFIG_METADATA_KEY])


def load_adapter(path: str | Path, unet: torch.nn.Module, device=None, dtype=None) -> IDAdapter:
    """Build the adapter from `path` (file or directory), attach its layers to `unet` and load all weights."""
    weights = weights_file(path)
    config = read_adapter_config(weights)
    if config.cross_attention_dim != unet.config.cross_attention_dim:
        raise AdapterMismatch(
            f"{weights}: adapter built for cross_attention_dim {config.cross_attention_dim}, "
            f"the UNet has {unet.config.cross_attention_dim} (an SD 1.5 adapter on SD 2.1, or the reverse?)"
        )
    adapter = IDAdapter(config)
    if not adapter_modules(unet):
        attach_identity_layers(unet)
    load_adapter_weights(weights, adapter, unet)
    return adapter.to(device=device or unet.device, dtype=dtype or unet.dtype)


def load_adapter_weights(path: str | Path, adapter: IDAdapter, unet: torch.nn.Module) -> None:
    """Load `path` into an existing adapter and the adapter layers of `unet`, in place.

    Every key and shape is checked before anything is loaded; `AdapterMismatch` lists what differs.
    """
    weights = weights_file(path)
    expected = {k: tuple(t.shape) for k, t in adapter_state_dict(adapter, unet).items()}
    with safe_open(str(weights), framework="pt") as handle:
        found = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
        problems = (
            [f"missing {k} {expected[k]}" for k in sorted(expected.keys() - found.keys())]
            + [f"unexpected {k} {found[k]}" for k in sorted(found.keys() - expected.keys())]
            + [f"{k}: file {found[k]}, model {expected[k]}" for k in sorted(expected.keys() & found.keys())
               if found[k] != expected[k]]
        )
        if problems:
            raise AdapterMismatch(f"{weights} does not fit this base model:\n  " + "\n  ".join(problems))
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    adapter.load_state_dict({k: t for k, t in tensors.items() if not k.startswith("unet.")})
    for name, module in adapter_modules(unet).items():
        prefix = f"unet.{name}."
        module.load_state_dict({k.removeprefix(prefix): t for k, t in tensors.items() if k.startswith(prefix)})
