"""The identity text token: E_c = MLP(mean CLIP class embedding) replaces the input embedding of "sks".

The prompt carries "<class noun> is sks"; while `identity_token_injected` is active, the text encoder's
token-embedding layer returns E_c wherever the input id is the identity token's, so the frozen text
encoder reads the identity as if it were a word.
"""
from __future__ import annotations

import re
from contextlib import contextmanager

import torch
from torch import nn

from .config import IDAdapterConfig


class ClassTokenMLP(nn.Module):
    def __init__(self, config: IDAdapterConfig):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(config.vision_hidden_size, config.text_hidden_size),
            nn.GELU(),
            nn.Linear(config.text_hidden_size, config.text_hidden_size),
        )

    def forward(self, class_embeddings: torch.Tensor) -> torch.Tensor:
        """class_embeddings (B, N, vision_hidden) → E_c (B, text_hidden), from their mean."""
        return self.net(class_embeddings.mean(dim=1))


def identity_prompt(prompt: str, class_noun: str, token: str = "sks") -> str:
    """The prompt with "<class noun> is <token>" appended, unless it already names the token."""
    if re.search(rf"\b{re.escape(token)}\b", prompt):
        return prompt
    return f"{prompt.rstrip(' ,.')}, {class_noun} is {token}"


def identity_token_id(tokenizer, token: str = "sks") -> int:
    ids = tokenizer(token, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise ValueError(
            f"the tokenizer splits the identity token {token!r} into {len(ids)} pieces; "
            "choose a word it keeps whole (IDAdapterConfig.identity_token)"
        )
    return ids[0]


@contextmanager
def identity_token_injected(text_encoder: nn.Module, token_id: int, token_embeddings: torch.Tensor):
    """Within the block, the text encoder's input embedding of `token_id` in row b is token_embeddings[b].

    Rows without the token are left alone (e.g. the negative prompt); gradients flow into
    `token_embeddings` through the frozen text encoder.
    """
    def replace(_module, inputs, output):
        is_token = (inputs[0] == token_id).unsqueeze(-1)
        if not is_token.any():
            return output
        if token_embeddings.shape[0] != output.shape[0]:
            raise ValueError(
                f"{token_embeddings.shape[0]} identity embeddings for a text batch of {output.shape[0]}"
            )
        return torch.where(is_token, token_embeddings.to(output.dtype).unsqueeze(1), output)

    handle = text_encoder.get_input_embeddings().register_forward_hook(replace)
    try:
        yield
    finally:
        handle.remove()
