"""`IDAdapterPipeline`: one photo + a prompt → images of that person, no test-time tuning.

It wraps a diffusers `StableDiffusionPipeline` (SD 1.5 or 2.1 layout) and changes only what the
paper changes: the prompt gets "<class noun> is sks" with E_c as that token's embedding, and the UNet
gets E_r through its gated self-attention layers. `adapter_scale` (β) weakens the adapter
continuously: it scales the gated layers and the K/V change, and blends the text conditioning from
the plain prompt's (β = 0) to the identity prompt's with E_c (β = 1); at 0 the call is exactly the
plain pipeline's. Attention processors set on the pipeline after it was built (attention slicing,
xformers, `set_attn_processor`) run inside the adapter's K/V processors, which are re-installed
around them before each call.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from .base import load_base_pipeline
from .identity_loss import FaceIdentity, image_tensor
from .identity_token import identity_prompt, identity_token_id, identity_token_injected
from .injection import (
    IDAdapterAttnProcessor, check_adapter_layers, reinstall_adapter_processors, set_adapter_scale,
)
from .model import IDAdapter, IdentityConditioning, clip_reference_features
from .references import duplicated_references, face_crop
from .weights import load_adapter


# whether the unconditional half of classifier-free guidance sees E_r (docs/idadapter.md, "Unconditional branch")
IDENTITY_IN_UNCONDITIONAL = True


class NoFaceInReference(ValueError):
    pass


class IDAdapterPipeline:
    def __init__(self, pipe: StableDiffusionPipeline, adapter: IDAdapter, face_identity: FaceIdentity):
        if pipe.image_encoder is None or pipe.feature_extractor is None:
            raise ValueError("the pipeline needs a CLIP image encoder and its feature extractor (image_encoder=...)")
        check_adapter_layers(pipe.unet)
        self.pipe = pipe
        self.kv_processors = {name: processor for name, processor in pipe.unet.attn_processors.items()
                              if isinstance(processor, IDAdapterAttnProcessor)}
        self.adapter = adapter.eval().requires_grad_(False)
        self.face_identity = face_identity
        self.token_id = identity_token_id(pipe.tokenizer, adapter.config.identity_token)

    @classmethod
    def from_pretrained(cls, base: str | Path, adapter: str | Path, image_encoder: str | Path | None = None,
                        recognizer_file: str | Path | None = None, torch_dtype=None,
                        device: str | torch.device = "cpu") -> "IDAdapterPipeline":
        """Base SD weights, adapter weights and (unless the base folder has one) a CLIP vision encoder folder."""
        pipe = load_base_pipeline(base, image_encoder, torch_dtype).to(device)
        loaded = load_adapter(adapter, pipe.unet)
        face_identity = FaceIdentity.from_register(loaded.config.recognizer, recognizer_file).to(device)
        return cls(pipe, loaded, face_identity)

    @property
    def device(self) -> torch.device:
        return self.pipe.unet.device

    @torch.no_grad()
    def identity_conditioning(self, photo: Image.Image) -> IdentityConditioning:
        """E_r and E_c from one photo, duplicated N times as in the paper's inference."""
        name = getattr(photo, "filename", "") or "the reference photo"
        photo = photo.convert("RGB")
        image = image_tensor(np.asarray(photo)).to(self.device)
        (landmarks,) = self.face_identity.landmarks(image)
        if landmarks is None:
            raise NoFaceInReference(f"{name}: no face found")
        identity = self.face_identity.mean_identity(image, [landmarks])
        face = face_crop(photo, landmarks, self.adapter.config.reference_crop_scale)
        references = duplicated_references(face, self.adapter.config.num_references)
        pixels = self.pipe.feature_extractor(images=references, return_tensors="pt").pixel_values.to(self.device)
        patches, classes = clip_reference_features(self.pipe.image_encoder, pixels[None])
        dtype = self.pipe.unet.dtype
        return self.adapter(patches.to(dtype), classes.to(dtype), identity[None].to(dtype))

    @torch.no_grad()
    def __call__(self, photo: Image.Image, prompt: str, class_noun: str = "person", adapter_scale: float = 1.0,
                 negative_prompt: str | None = None, num_images_per_prompt: int = 1, num_inference_steps: int = 50,
                 guidance_scale: float = 7.5, generator: torch.Generator | None = None,
                 identity_in_unconditional: bool = IDENTITY_IN_UNCONDITIONAL, **kwargs):
        """Images of the person in `photo`; extra keyword arguments go to the Stable Diffusion pipeline.

        With classifier-free guidance, `identity_in_unconditional` decides whether the unconditional
        half also sees E_r (True), or whether its gated layers are masked as GLIGEN's pipeline masks
        grounding (False), which makes the identity a guidance direction too (docs/idadapter.md).
        """
        reinstall_adapter_processors(self.pipe.unet, self.kv_processors)
        set_adapter_scale(self.pipe.unet, adapter_scale)
        common = dict(num_images_per_prompt=num_images_per_prompt, num_inference_steps=num_inference_steps,
                      guidance_scale=guidance_scale, generator=generator, **kwargs)
        if adapter_scale == 0:
            return self.pipe(prompt=prompt, negative_prompt=negative_prompt, **common)
        conditioning = self.identity_conditioning(photo)
        guided = guidance_scale > 1 and self.pipe.unet.config.time_cond_proj_dim is None
        with identity_token_injected(self.pipe.text_encoder, self.token_id, conditioning.token):
            prompt_embeds, negative_embeds = self.pipe.encode_prompt(
                identity_prompt(prompt, class_noun, self.adapter.config.identity_token), self.device,
                1, guided, negative_prompt,
            )  # one copy: the Stable Diffusion call repeats the embeddings per image
        if adapter_scale != 1:  # β → 0 approaches the plain prompt's conditioning, continuously
            plain_embeds, _ = self.pipe.encode_prompt(prompt, self.device, 1, False)
            prompt_embeds = torch.lerp(plain_embeds, prompt_embeds, adapter_scale)
        objs = conditioning.visual.repeat(num_images_per_prompt * (2 if guided else 1), 1, 1)
        gligen = {"objs": objs}
        if guided and not identity_in_unconditional:  # diffusers puts the unconditional half first
            gligen["masks"] = torch.arange(len(objs), device=objs.device) >= num_images_per_prompt
        return self.pipe(prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_embeds,
                         cross_attention_kwargs={"gligen": gligen}, **common)
