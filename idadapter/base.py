"""The user's Stable Diffusion base, loaded from disk only, with the CLIP vision encoder the adapter reads."""
from __future__ import annotations

from pathlib import Path

from diffusers import StableDiffusionPipeline


def load_base_pipeline(base: str | Path, image_encoder: str | Path | None = None,
                       torch_dtype=None) -> StableDiffusionPipeline:
    """A Stable Diffusion folder (diffusers layout) or an id already in the HF cache; never downloads.

    The CLIP vision encoder comes from `image_encoder` (a transformers folder with its image processor)
    or else from the base folder's own `image_encoder/` and `feature_extractor/`.
    """
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            str(base), dtype=torch_dtype, local_files_only=True, safety_checker=None, requires_safety_checker=False,
        )
    except (OSError, ValueError) as error:
        raise FileNotFoundError(
            f"Stable Diffusion base weights not found at {base!r} (a diffusers folder with model_index.json, "
            f"or a model id already in the local HF cache; nothing is downloaded): {error}"
        ) from error
    if image_encoder is not None:
        try:
            pipe.register_modules(
                image_encoder=CLIPVisionModelWithProjection.from_pretrained(
                    str(image_encoder), dtype=torch_dtype, local_files_only=True),
                feature_extractor=CLIPImageProcessor.from_pretrained(str(image_encoder), local_files_only=True),
            )
        except (OSError, ValueError) as error:
            raise FileNotFoundError(f"CLIP vision encoder not found at {image_encoder!r}: {error}") from error
    if pipe.image_encoder is None or pipe.feature_extractor is None:
        raise FileNotFoundError(
            f"{base}: no image_encoder/feature_extractor in the base folder; give the CLIP vision folder "
            "(image_encoder = \"PATH\" in the config, --image-encoder PATH on the command line)"
        )
    return pipe
