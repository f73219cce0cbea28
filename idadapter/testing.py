"""A tiny Stable-Diffusion-shaped pipeline with random weights, built offline from configs.

For tests and examples only: it has the SD 1.5 or SD 2.1 layout (the parts the adapter depends on)
at a size that runs on a CPU in seconds. Nothing it produces is a real image; never score it.
"""
from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import (
    CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPTokenizer, CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

TINY_WORDS = (
    "a photo of the woman man person is sks smiling in portrait painting beach wearing hat , ."
).split()
TINY_IMAGE_SIZE = 32

# Stable Diffusion 2.1 (768-v) shapes, from stabilityai/stable-diffusion-2-1's config files
SD21_UNET = dict(
    sample_size=96, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
)
SD21_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=768,
)
# OpenCLIP ViT-H/14: SD 2.1's text tower, and the vision tower the adapter reads (16x16 patches + class)
SD21_TEXT = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                 num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=1024)
VIT_H14_VISION = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                      image_size=224, patch_size=14, hidden_act="gelu", projection_dim=1024)


def tiny_tokenizer() -> CLIPTokenizer:
    """A CLIP BPE tokenizer whose vocabulary is printable ASCII plus TINY_WORDS (each kept whole)."""
    symbols = [chr(code) for code in range(33, 127)]
    vocab = symbols + [s + "</w>" for s in symbols]
    merges = []
    for word in TINY_WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        merged = pieces[0]
        for piece in pieces[1:]:
            merges.append((merged, piece))
            merged += piece
            if merged not in vocab:
                vocab.append(merged)
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(
        vocab={token: i for i, token in enumerate(vocab)}, merges=list(dict.fromkeys(merges)), model_max_length=77,
    )


def tiny_unet(layout: str = "sd21", cross_attention_dim: int = 32) -> UNet2DConditionModel:
    layouts = {
        # SD 2.x: per-level head dims and linear projections in the transformer blocks
        "sd21": dict(attention_head_dim=(2, 4), use_linear_projection=True),
        # SD 1.x: one head dim, convolutional projections
        "sd15": dict(attention_head_dim=4, use_linear_projection=False),
    }
    return UNet2DConditionModel(
        sample_size=TINY_IMAGE_SIZE // 2, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), norm_num_groups=32,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim, **layouts[layout],
    )


def sd21_shaped_pipeline(device: str = "cuda", dtype: torch.dtype = torch.float16) -> StableDiffusionPipeline:
    """Stable Diffusion 2.1 at its true shapes, random weights, built on `device`: for timings only."""
    tokenizer = tiny_tokenizer()
    with torch.device(device):
        pipe = StableDiffusionPipeline(
            vae=AutoencoderKL(**SD21_VAE), unet=UNet2DConditionModel(**SD21_UNET),
            text_encoder=CLIPTextModel(CLIPTextConfig(**SD21_TEXT, bos_token_id=tokenizer.bos_token_id,
                                                      eos_token_id=tokenizer.eos_token_id)),
            tokenizer=tokenizer, scheduler=DDIMScheduler(
                beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction"),
            safety_checker=None, feature_extractor=CLIPImageProcessor(size={"shortest_edge": 224}, crop_size=224),
            image_encoder=CLIPVisionModelWithProjection(CLIPVisionConfig(**VIT_H14_VISION)),
            requires_safety_checker=False,
        )
    return pipe.to(dtype=dtype)


def tiny_pipeline(directory: str | Path, layout: str = "sd21", seed: int = 0,
                  prediction_type: str = "epsilon") -> StableDiffusionPipeline:
    """Build a tiny SD pipeline (with a CLIP image encoder) and save it to `directory`."""
    pipe = tiny_random_pipeline(layout, seed, prediction_type)
    pipe.save_pretrained(Path(directory))
    return pipe


def tiny_random_pipeline(layout: str = "sd21", seed: int = 0, prediction_type: str = "epsilon") -> StableDiffusionPipeline:
    """A tiny SD pipeline (with a CLIP image encoder), random weights from `seed`."""
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=8, projection_dim=32,
    ))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64), norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=TINY_IMAGE_SIZE,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type,
    )
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=tiny_unet(layout), scheduler=scheduler,
        safety_checker=None, feature_extractor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32),
        image_encoder=image_encoder, requires_safety_checker=False,
    )
    return pipe


FACE_IMAGE_SIZE = 64


def face_crops(paths, size: int = FACE_IMAGE_SIZE, face_identity=None) -> list:
    """Each photo's main face, cropped as references are (`references.face_crop`, 3.5) and resized to
    `size`: images the tiny models can learn, in which YuNet finds a face."""
    from PIL import Image

    from eval.faces import load_image

    from .identity_loss import FaceIdentity, image_tensor
    from .references import face_crop

    face_identity = face_identity or FaceIdentity.from_register("sface")
    crops = []
    for path in paths:
        rgb = load_image(path)
        (landmarks,) = face_identity.landmarks(image_tensor(rgb))
        if landmarks is None:
            raise ValueError(f"{path}: no face found")
        crops.append(face_crop(Image.fromarray(rgb), landmarks, 3.5).resize((size, size), Image.Resampling.BICUBIC))
    return crops


def face_vae(images: list, steps: int = 60, seed: int = 0, learning_rate: float = 3e-3) -> AutoencoderKL:
    """A tiny VAE (factor 2) trained for `steps` full-batch steps to reconstruct `images` (PIL, one size).

    Random VAE weights decode no faces, so the identity loss never runs; this one decodes faces from
    latents near its training images, and its `scaling_factor` is 1 / the latents' std, as SD's is.
    """
    import numpy as np

    torch.manual_seed(seed)
    pixels = torch.from_numpy(np.stack([np.asarray(image.convert("RGB")) for image in images])).permute(0, 3, 1, 2)
    pixels = pixels.float() / 127.5 - 1
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32), norm_num_groups=16,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=pixels.shape[-1],
    )
    optimizer = torch.optim.Adam(vae.parameters(), lr=learning_rate)
    for _ in range(steps):
        posterior = vae.encode(pixels).latent_dist
        loss = torch.nn.functional.mse_loss(vae.decode(posterior.sample()).sample, pixels) + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)  # a frozen model carries no gradients
    with torch.no_grad():
        vae.register_to_config(scaling_factor=float(1 / vae.encode(pixels).latent_dist.mean.std()))
    return vae.eval().requires_grad_(False)


FACE_BASE_PROMPT = "a photo of a person"
FACE_BASE_STEPS = 750  # 12 of 12 samples and 11 of 12 (guidance 3 and 1) hold a face the face core finds
FACE_BASE_VERSION = 1  # raise when face_base_pipeline changes: cached bases are keyed by it


def face_base_pipeline(images: list, steps: int = FACE_BASE_STEPS, seed: int = 0, learning_rate: float = 2e-3,
                       unconditional_share: float = 0.1, progress=None) -> StableDiffusionPipeline:
    """A tiny base that draws faces: `face_vae(images)` and the tiny UNet pretrained on its latents.

    The tiny random UNet samples no face, so nothing the adapter does can be judged on its outputs.
    This one is trained with plain L_SD (ε, full batch of `images` and their mirror images, Adam) on
    FACE_BASE_PROMPT, and on the empty prompt for `unconditional_share` of the samples so that the
    unconditional half of classifier-free guidance draws faces too. With 8 photos it learns them by
    heart: a test bed, never a model to score. `progress(step, loss)` is called after each step.
    """
    import numpy as np

    pipe = tiny_random_pipeline(seed=seed)
    pipe.vae = face_vae(images, seed=seed)
    pixels = torch.from_numpy(np.stack([np.asarray(image.convert("RGB")) for image in images])).permute(0, 3, 1, 2)
    pixels = torch.cat([pixels, pixels.flip(-1)]).float() / 127.5 - 1
    with torch.no_grad():
        latents = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
        prompt_ids = pipe.tokenizer([FACE_BASE_PROMPT, ""], padding="max_length", max_length=77,
                                    return_tensors="pt").input_ids
        conditional, unconditional = pipe.text_encoder(prompt_ids)[0]
    unet, scheduler = pipe.unet.train(), pipe.scheduler
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(unet.parameters(), lr=learning_rate)
    for step in range(steps):
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(latents),), generator=generator)
        dropped = torch.rand(len(latents), generator=generator) < unconditional_share
        context = torch.where(dropped[:, None, None], unconditional, conditional)
        predicted = unet(scheduler.add_noise(latents, noise, timesteps), timesteps, context).sample
        loss = torch.nn.functional.mse_loss(predicted, noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if progress is not None:
            progress(step + 1, loss.item())
    optimizer.zero_grad(set_to_none=True)
    pipe.unet = unet.eval().requires_grad_(False)
    return pipe


def face_base_folder(images: list, steps: int, seed: int = 0, cache_dir: Path | None = None) -> Path:
    """Where `cached_face_base` keeps the base for these images and settings."""
    import hashlib

    import numpy as np

    from eval.models import user_cache_dir

    digest = hashlib.sha256(repr((FACE_BASE_VERSION, steps, seed)).encode())
    for image in images:
        digest.update(np.asarray(image.convert("RGB")).tobytes())
    return Path(cache_dir or user_cache_dir()) / f"tiny-face-base-{digest.hexdigest()[:16]}"


def cached_face_base(images: list, steps: int = FACE_BASE_STEPS, seed: int = 0, cache_dir: Path | None = None) -> Path:
    """The folder of `face_base_pipeline(images, steps, seed)`, trained once and kept in the cache
    (`$IDAVATAR_CACHE_DIR`, else the user cache), keyed by the images' pixels and the settings."""
    import shutil

    from tqdm import tqdm

    folder = face_base_folder(images, steps, seed, cache_dir)
    if not (folder / "model_index.json").exists():
        with tqdm(total=steps, desc="pretraining the tiny face base", unit="step") as bar:
            pipe = face_base_pipeline(images, steps, seed, progress=lambda step, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.4f}")))
        partial = folder.with_name(folder.name + ".partial")  # renamed into place only when complete
        shutil.rmtree(partial, ignore_errors=True)
        pipe.save_pretrained(partial)
        partial.rename(folder)
    return folder


def random_adapter(pipe: StableDiffusionPipeline, gate: float = 0.0, seed: int = 0, mff_heads: int = 4):
    """A random IDAdapter sized for `pipe`, attached to its UNet; `gate` sets every γ (0: a fresh adapter)."""
    from .config import IDAdapterConfig
    from .injection import adapter_modules, attach_identity_layers
    from .model import IDAdapter

    torch.manual_seed(seed)
    config = IDAdapterConfig.for_models(pipe.unet, pipe.text_encoder, pipe.image_encoder, mff_heads=mff_heads)
    adapter = IDAdapter(config)
    attach_identity_layers(pipe.unet)
    with torch.no_grad():
        for module in adapter_modules(pipe.unet).values():
            for name, parameter in module.named_parameters():
                if name.startswith("alpha_"):
                    parameter.fill_(gate)
    return adapter


def main(argv: list[str] | None = None) -> int:
    """`python -m idadapter.testing DIR`: a tiny random base (DIR/base) and adapter (DIR/adapter)."""
    import argparse

    from .weights import save_adapter

    parser = argparse.ArgumentParser(prog="idadapter.testing", description=main.__doc__)
    parser.add_argument("directory")
    parser.add_argument("--layout", choices=["sd15", "sd21"], default="sd21")
    args = parser.parse_args(argv)
    directory = Path(args.directory)
    pipe = tiny_pipeline(directory / "base", layout=args.layout)
    save_adapter(directory / "adapter", random_adapter(pipe, gate=0.5), pipe.unet)
    print(f"tiny random model (for trying the tools, never for scoring): {directory / 'base'}, {directory / 'adapter'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
