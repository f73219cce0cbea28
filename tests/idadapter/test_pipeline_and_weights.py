"""IDAdapterPipeline on the tiny SD model, and the adapter's safetensors round trip."""
import json

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file, save_file

from idadapter.injection import adapter_modules
from idadapter.pipeline import IDAdapterPipeline, NoFaceInReference
from idadapter.testing import random_adapter, tiny_pipeline, tiny_unet
from idadapter.weights import AdapterMismatch, CONFIG_NAME, WEIGHTS_NAME, adapter_state_dict, load_adapter, save_adapter

STEPS = dict(num_inference_steps=2, output_type="np")


def generate(pipeline, photo, scale, seed=3, **kwargs):
    return pipeline(photo, "a photo of a woman smiling", class_noun="woman", adapter_scale=scale,
                    generator=torch.Generator().manual_seed(seed), **STEPS, **kwargs).images


def perturbed_pipeline(pipe, face_identity):
    """A pipeline whose adapter has open gates and trained K/V that differ from the base's."""
    adapter = random_adapter(pipe, gate=0.5)
    perturb(pipe, adapter)
    return IDAdapterPipeline(pipe, adapter, face_identity), adapter


@pytest.mark.slow
def test_scale_zero_gives_the_plain_pipelines_images_and_the_adapter_changes_them(tiny_base, pipe, face_identity, demo_photo):
    plain_pipe = StableDiffusionPipeline.from_pretrained(tiny_base, local_files_only=True)
    plain_pipe.set_progress_bar_config(disable=True)
    plain = plain_pipe("a photo of a woman smiling", generator=torch.Generator().manual_seed(3), **STEPS).images
    pipeline = IDAdapterPipeline(pipe, random_adapter(pipe, gate=0.5), face_identity)
    photo = demo_photo("ardern_2018.jpg")
    assert np.array_equal(generate(pipeline, photo, 0.0), plain)
    with_adapter = generate(pipeline, photo, 1.0)
    assert with_adapter.shape == plain.shape and np.abs(with_adapter - plain).mean() > 1e-3
    assert np.array_equal(generate(pipeline, photo, 1.0), with_adapter)  # same seed, same images
    other_person = generate(pipeline, demo_photo("obama_flag.jpg"), 1.0)
    assert np.abs(other_person - with_adapter).mean() > 1e-4


@pytest.mark.slow
def test_the_adapter_scale_is_continuous_at_zero(pipe, face_identity, demo_photo):
    pipeline, _ = perturbed_pipeline(pipe, face_identity)
    photo = demo_photo("ardern_2018.jpg")
    at_zero, near_zero, full = (generate(pipeline, photo, scale) for scale in (0.0, 1e-6, 1.0))
    assert np.abs(near_zero - at_zero).max() < 1e-4  # it was 0.067: β = 0 dropped the identity phrase and E_c
    assert np.abs(full - at_zero).max() > 1e-2


@pytest.mark.slow
def test_attention_processors_set_later_run_inside_the_adapters(pipe, face_identity, demo_photo):
    from diffusers.models.attention_processor import AttnProcessor

    from idadapter.injection import AdapterLayersDropped, IDAdapterAttnProcessor, set_adapter_scale

    pipeline, adapter = perturbed_pipeline(pipe, face_identity)
    photo = demo_photo("ardern_2018.jpg")
    reference = generate(pipeline, photo, 1.0)
    kv_processors = lambda: [p for p in pipe.unet.attn_processors.values() if isinstance(p, IDAdapterAttnProcessor)]
    assert len(kv_processors()) == 4

    pipe.enable_attention_slicing(1)
    np.testing.assert_allclose(generate(pipeline, photo, 1.0), reference, atol=1e-5)
    assert len(kv_processors()) == 4 and type(kv_processors()[0].inner).__name__ == "SlicedAttnProcessor"

    pipe.unet.set_attn_processor(AttnProcessor())
    with pytest.raises(AdapterLayersDropped, match="0 of 4 cross-attention K/V processors"):
        set_adapter_scale(pipe.unet, 1.0)  # a bare UNet that lost them is refused, not run without them
    np.testing.assert_allclose(generate(pipeline, photo, 1.0), reference, atol=1e-5)
    pipe.unet.set_attn_processor(AttnProcessor())
    with pytest.raises(AdapterLayersDropped, match="lost IDAdapter layers"):
        IDAdapterPipeline(pipe, adapter, face_identity)  # built on a UNet that had already lost them


@pytest.mark.slow
def test_several_images_per_prompt_without_guidance(pipe, face_identity, demo_photo):
    pipeline = IDAdapterPipeline(pipe, random_adapter(pipe, gate=0.5), face_identity)
    images = generate(pipeline, demo_photo("biden.jpg"), 1.0, num_images_per_prompt=3, guidance_scale=1.0)
    assert images.shape == (3, 32, 32, 3)
    assert np.abs(images[0] - images[1]).mean() > 0  # different noise per image


@pytest.mark.slow
def test_identity_in_the_unconditional_half_is_a_switch_of_guided_sampling_only(pipe, face_identity, demo_photo):
    pipeline, _ = perturbed_pipeline(pipe, face_identity)
    photo = demo_photo("ardern_2018.jpg")
    both, masked = (generate(pipeline, photo, 1.0, guidance_scale=3.0, num_images_per_prompt=2,
                             identity_in_unconditional=choice) for choice in (True, False))
    assert np.abs(both - masked).max() > 1e-3
    unguided = [generate(pipeline, photo, 1.0, guidance_scale=1.0, identity_in_unconditional=choice)
                for choice in (True, False)]
    assert np.array_equal(*unguided)  # without guidance there is no unconditional half


@pytest.mark.slow
def test_a_reference_photo_without_a_face_is_refused(pipe, face_identity):
    from PIL import Image

    pipeline = IDAdapterPipeline(pipe, random_adapter(pipe, gate=0.5), face_identity)
    with pytest.raises(NoFaceInReference, match="no face"):
        generate(pipeline, Image.new("RGB", (128, 128), (120, 90, 60)), 1.0)


def perturb(pipe, adapter, seed=5):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in [*adapter.parameters(), *(p for m in adapter_modules(pipe.unet).values() for p in m.parameters())]:
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))


@pytest.mark.slow
def test_save_then_load_is_exact(tmp_path, tiny_base, pipe, face_identity, demo_photo):
    adapter = random_adapter(pipe)
    perturb(pipe, adapter)
    weights = save_adapter(tmp_path / "adapter", adapter, pipe.unet)
    assert weights.name == WEIGHTS_NAME
    assert json.loads((tmp_path / "adapter" / CONFIG_NAME).read_text())["identity_token"] == "sks"
    fresh = StableDiffusionPipeline.from_pretrained(tiny_base, local_files_only=True)
    fresh.set_progress_bar_config(disable=True)
    loaded = load_adapter(tmp_path / "adapter", fresh.unet)
    original, reloaded = adapter_state_dict(adapter, pipe.unet), adapter_state_dict(loaded, fresh.unet)
    assert original.keys() == reloaded.keys()
    assert all(torch.equal(original[k], reloaded[k]) for k in original)
    photo = demo_photo("macron_2014.jpg")
    assert np.array_equal(generate(IDAdapterPipeline(pipe, adapter, face_identity), photo, 1.0),
                          generate(IDAdapterPipeline(fresh, loaded, face_identity), photo, 1.0))


def test_the_key_layout_is_the_documented_one(tmp_path, pipe):
    weights = save_adapter(tmp_path, random_adapter(pipe), pipe.unet)
    groups = {key.split(".")[0] for key in load_file(weights)}
    assert groups == {"mff", "token_mlp", "unet"}
    unet_keys = [k for k in load_file(weights) if k.startswith("unet.")]
    assert any(".fuser.attn.to_q.weight" in k for k in unet_keys)
    assert any(k.endswith(".attn2.processor.to_k.weight") for k in unet_keys)
    assert any(k.endswith(".attn2.processor.to_v.weight") for k in unet_keys)


def test_loading_names_every_key_and_shape_that_does_not_fit(tmp_path, tiny_base, pipe):
    weights = save_adapter(tmp_path, random_adapter(pipe), pipe.unet)
    tensors = load_file(weights)
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as handle:
        metadata = handle.metadata()
    fuser_key = next(k for k in tensors if k.endswith("fuser.linear.weight"))
    tensors[fuser_key] = torch.zeros(3, 3)
    del tensors["token_mlp.net.0.bias"]
    tensors["mff.extra"] = torch.zeros(1)
    save_file(tensors, str(weights), metadata=metadata)
    fresh = StableDiffusionPipeline.from_pretrained(tiny_base, local_files_only=True)
    with pytest.raises(AdapterMismatch) as error:
        load_adapter(weights, fresh.unet)
    message = str(error.value)
    assert "missing token_mlp.net.0.bias" in message
    assert "unexpected mff.extra" in message
    assert f"{fuser_key}: file (3, 3)" in message


def test_an_adapter_for_another_text_width_is_refused_before_loading(tmp_path, pipe):
    weights = save_adapter(tmp_path / "a", random_adapter(pipe), pipe.unet)
    with pytest.raises(AdapterMismatch, match="cross_attention_dim 32"):
        load_adapter(weights, tiny_unet(cross_attention_dim=64))


def test_a_missing_weights_file_is_named(tmp_path, pipe):
    with pytest.raises(FileNotFoundError, match="no IDAdapter weights file"):
        load_adapter(tmp_path / "nowhere", pipe.unet)


@pytest.mark.slow
def test_the_sd15_layout_works_the_same_way(tmp_path, face_identity, demo_photo):
    pipe = tiny_pipeline(tmp_path / "sd15", layout="sd15")
    pipe.set_progress_bar_config(disable=True)
    plain = pipe("a photo of a woman smiling", generator=torch.Generator().manual_seed(3), **STEPS).images
    pipeline = IDAdapterPipeline(pipe, random_adapter(pipe, gate=0.5), face_identity)
    photo = demo_photo("ardern_2022.jpg")
    assert np.array_equal(generate(pipeline, photo, 0.0), plain)
    assert np.abs(generate(pipeline, photo, 1.0) - plain).mean() > 1e-3
