"""The trainer end to end on the tiny model and a small identity set made of the bundled real photos."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from diffusers import DDPMScheduler
from hypothesis import given, settings
from hypothesis import strategies as st
from accelerate.utils import set_seed
from PIL import Image
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from idadapter.data import IdentityDataset, StepBatchSampler, scan_identity_folders
from idadapter.injection import adapter_modules
from idadapter.parameters import trainable_parameters
from idadapter.base import load_base_pipeline
from idadapter.testing import face_crops, face_vae
from idadapter.train import main, train
from idadapter.training import (
    TrainConfig, load_training_models, predicted_original, training_losses, training_models,
)
from idadapter.weights import WEIGHTS_NAME, adapter_state_dict

SANITY_STEPS = 20
IDENTITIES = {
    "obama": ("man", ["obama_flag.jpg", "obama_oval.jpg", "obama_podium.jpg", "obama_senate.jpg"]),
    "macron": ("man", ["macron_2014.jpg", "macron_2025.jpg"]),
    "ardern": ("woman", ["ardern_2018.jpg", "ardern_2022.jpg"]),
}


@pytest.fixture(scope="module")
def identity_set(tmp_path_factory, faces_dir):
    root = tmp_path_factory.mktemp("identities")
    for identity, (noun, files) in IDENTITIES.items():
        folder = root / identity
        folder.mkdir()
        (folder / "identity.json").write_text(json.dumps({"class_noun": noun}))
        for i, name in enumerate(files):
            with Image.open(faces_dir / name) as photo:  # small copies keep the CPU test quick
                photo.convert("RGB").resize((photo.width * 192 // max(photo.size), photo.height * 192 // max(photo.size))).save(folder / name)
            if i == 0:
                (folder / name).with_suffix(".txt").write_text(f"a portrait of a {noun} smiling")
    (root / "obama" / "broken.jpg").write_bytes(b"not an image")
    return root


def tiny_config(tiny_base, identity_set, output_dir, **overrides) -> TrainConfig:
    values = dict(
        base=str(tiny_base), data_dir=str(identity_set), output_dir=str(output_dir), resolution=32,
        mff_heads=4, learning_rate=1e-2, batch_size=2, max_steps=12, checkpoint_every=6, log_every=1,
        mixed_precision="no", num_workers=0, seed=7,
    )
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def scanned(identity_set, face_identity):
    return scan_identity_folders(identity_set, face_identity)


def test_the_dataset_reads_identity_folders_and_reports_a_broken_file(scanned, caplog):
    images = scanned
    assert len(images) == 8
    assert any("broken.jpg: skipped, cannot read the image" in r.getMessage() for r in caplog.get_records("setup"))
    assert {image.identity for image in images} == set(IDENTITIES)
    captions = {image.path.name: image.caption for image in images}
    assert captions["ardern_2018.jpg"] == "a portrait of a woman smiling"
    assert captions["ardern_2022.jpg"] == "a photo of a woman"


def test_samples_draw_references_of_the_same_person_and_are_reproducible(scanned, pipe):
    images = scanned
    dataset = IdentityDataset(images, pipe.tokenizer, pipe.feature_extractor, resolution=32, num_references=4)
    macron = next(i for i, image in enumerate(images) if image.path.name == "macron_2025.jpg")
    sample = dataset[(macron, 11)]
    assert sample["pixel_values"].shape == (3, 32, 32) and -1 <= sample["pixel_values"].min()
    assert sample["reference_pixel_values"].shape == (4, 3, 32, 32)  # 1 other photo, padded with 3 augmented
    assert torch.equal(sample["reference_pixel_values"], dataset[(macron, 11)]["reference_pixel_values"])
    tokens = pipe.tokenizer.convert_ids_to_tokens(sample["input_ids"].tolist())
    assert tokens[1:6] == ["a</w>", "photo</w>", "of</w>", "a</w>", "man</w>"] and "sks</w>" in tokens
    obama = next(i for i, image in enumerate(images) if image.identity == "obama")
    same = float(torch.tensor(images[obama].embedding) @ dataset[(obama, 3)]["identity_feature"])
    assert same > 0.5  # the mean reference feature is close to the person's own


def test_batches_depend_only_on_seed_and_step():
    full = list(StepBatchSampler(10, 3, seed=1, start_step=0, total_steps=6))
    resumed = list(StepBatchSampler(10, 3, seed=1, start_step=4, total_steps=6))
    assert resumed == full[4:]
    assert list(StepBatchSampler(10, 3, seed=1, start_step=0, total_steps=6, process_index=1)) != full


def fixed_batch_loss(models, dataset) -> float:
    loader = DataLoader(dataset, batch_sampler=StepBatchSampler(len(dataset), 4, seed=99, start_step=0, total_steps=3))
    total = 0.0
    with torch.no_grad():
        for step, batch in enumerate(loader):
            total += float(training_losses(models, batch, torch.Generator().manual_seed(step), 0.0)["loss"])
    return total / 3


def frozen_state(models) -> dict[str, torch.Tensor]:
    """Copies of every frozen base weight the trainer holds: UNet (adapter layers excluded), VAE, text and
    vision encoders."""
    adapter = tuple(name + "." for name in adapter_modules(models.unet))
    state = {f"unet.{k}": v.clone() for k, v in models.unet.state_dict().items() if not k.startswith(adapter)}
    for part in ("vae", "text_encoder", "image_encoder"):
        state.update({f"{part}.{k}": v.clone() for k, v in getattr(models, part).state_dict().items()})
    return state


def assert_only_the_adapter_changed(models, frozen_before, adapter_before) -> None:
    frozen_after = frozen_state(models)
    assert frozen_after.keys() == frozen_before.keys()
    changed = [k for k in frozen_before if not torch.equal(frozen_before[k], frozen_after[k])]
    assert not changed, f"frozen base weights changed: {changed[:5]}"
    adapter_after = adapter_state_dict(models.adapter, models.unet)
    assert any(not torch.equal(adapter_before[k], adapter_after[k]) for k in adapter_before)  # it did train


@pytest.mark.slow
def test_training_lowers_the_loss_trains_only_the_adapter_and_resumes_exactly(tmp_path, tiny_base, identity_set, scanned):
    config = tiny_config(tiny_base, identity_set, tmp_path / "run")
    set_seed(config.seed)
    models = load_training_models(config, torch.device("cpu"), torch.float32)
    frozen_before = frozen_state(models)
    adapter_before = {k: v.clone() for k, v in adapter_state_dict(models.adapter, models.unet).items()}
    dataset = IdentityDataset(scanned, models.tokenizer,
                              models.feature_extractor, 32, 4)
    loss_before = fixed_batch_loss(models, dataset)

    train(config, models)  # the very modules it trains are the ones checked below
    assert_only_the_adapter_changed(models, frozen_before, adapter_before)
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == list(range(1, 13))
    assert all({"loss", "loss_sd", "loss_id", "faces", "images"} <= entry.keys() for entry in log)
    loss_after = fixed_batch_loss(models, dataset)
    assert loss_after < 0.95 * loss_before, (loss_before, loss_after)
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-6"]
    assert not list((tmp_path / "run" / "checkpoint-6").glob("model*"))  # no copy of the frozen base

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(tmp_path / "run" / "checkpoint-6", resumed / "checkpoint-6")
    train(tiny_config(tiny_base, identity_set, resumed, resume="latest", log_every=3))
    straight, continued = load_file(tmp_path / "run" / WEIGHTS_NAME), load_file(resumed / WEIGHTS_NAME)
    assert straight.keys() == continued.keys()
    assert all(torch.allclose(straight[k], continued[k], atol=1e-6) for k in straight)
    # each line of the resumed run holds the means (and the face and image totals) of its 3 steps
    means = [json.loads(line) for line in (resumed / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in means] == [9, 12]
    for entry in means:
        steps = log[entry["step"] - 3:entry["step"]]
        for key in ("loss", "loss_sd", "loss_id"):
            assert entry[key] == pytest.approx(sum(s[key] for s in steps) / 3, rel=1e-5), key
        assert entry["faces"] == sum(s["faces"] for s in steps) and entry["images"] == 3 * config.batch_size


def test_a_target_is_never_its_own_reference_and_single_photo_identities_are_left_out(scanned, pipe, caplog):
    one_macron = [image for image in scanned if image.path.name != "macron_2025.jpg"]
    dataset = IdentityDataset(one_macron, pipe.tokenizer, pipe.feature_extractor, resolution=32, num_references=4)
    assert {image.identity for image in dataset.images} == {"obama", "ardern"}
    assert "identity 'macron' left out of training: one usable photo" in caplog.text
    macron_only = [image for image in scanned if image.path.name == "macron_2014.jpg"]
    with pytest.raises(ValueError, match="no identity has two usable photos"):
        IdentityDataset(macron_only, pipe.tokenizer, pipe.feature_extractor, resolution=32, num_references=4)


@pytest.mark.slow
def test_accelerate_launch_trains_on_two_processes_from_a_toml_config(tmp_path, tiny_base, identity_set):
    config_file = tmp_path / "train.toml"
    config_file.write_text(
        f'base = "{tiny_base}"\ndata_dir = "{identity_set}"\noutput_dir = "{tmp_path / "out"}"\n'
        'resolution = 32\nmff_heads = 4\nbatch_size = 1\nmax_steps = 2\ncheckpoint_every = 2\nlog_every = 1\n'
        'mixed_precision = "no"\nnum_workers = 0\ngradient_checkpointing = true\n'
    )
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "idadapter.train", "--config", str(config_file)]
    environment = {**os.environ, "ACCELERATE_USE_CPU": "true"}  # two CPU processes (gloo) stand in for two GPUs
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out"
    assert (out / WEIGHTS_NAME).is_file()
    assert {p.name for p in (out / "checkpoint-2").glob("random_states_*")} == {"random_states_0.pkl", "random_states_1.pkl"}
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 2  # one writer
    assert result.stdout.count("adapter written to") == 1
    assert "trainable parameters" in result.stderr


def test_a_bad_config_is_named(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml: training config not found" in capsys.readouterr().err


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["epsilon", "v_prediction"]), st.lists(st.integers(0, 999), min_size=1, max_size=4))
def test_the_one_step_estimate_recovers_the_clean_latents_from_the_true_target(prediction_type, steps):
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              prediction_type=prediction_type)
    generator = torch.Generator().manual_seed(len(steps))
    latents = torch.randn(len(steps), 4, 4, 4, generator=generator, dtype=torch.float64)
    noise = torch.randn(latents.shape, generator=generator, dtype=torch.float64)
    steps = torch.tensor(steps)
    noisy = scheduler.add_noise(latents, noise, steps)
    target = scheduler.get_velocity(latents, noise, steps) if prediction_type == "v_prediction" else noise
    torch.testing.assert_close(predicted_original(scheduler, noisy, steps, target), latents, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def face_set(tmp_path_factory, faces_dir, face_identity):
    """The identity set as 64 px face crops, and a tiny VAE trained on them: x̂0 can hold faces."""
    root = tmp_path_factory.mktemp("face-identities")
    for identity, (noun, files) in IDENTITIES.items():
        (root / identity).mkdir()
        (root / identity / "identity.json").write_text(json.dumps({"class_noun": noun}))
        for name, crop in zip(files, face_crops([faces_dir / n for n in files], face_identity=face_identity)):
            crop.save(root / identity / name)
    crops = [Image.open(path).convert("RGB") for path in sorted(root.glob("*/*.jpg"))]
    return root, face_vae(crops)


def face_models_and_batch(tiny_base, face_set, face_identity, config: TrainConfig):
    """The tiny base with the face VAE, a fresh adapter (seeded by `config.seed`) and one batch of the face set."""
    root, vae = face_set
    set_seed(config.seed)
    pipe = load_base_pipeline(tiny_base)
    pipe.vae = vae
    models = training_models(pipe, face_identity, config, torch.device("cpu"), torch.float32)
    dataset = IdentityDataset(scan_identity_folders(root, face_identity), models.tokenizer, models.feature_extractor,
                              config.resolution, config.num_references)
    batch_sampler = StepBatchSampler(len(dataset), config.batch_size, 0, 0, 1)
    return models, next(iter(DataLoader(dataset, batch_sampler=batch_sampler)))


def first_seed_with_faces(models, batch, faces: int, **loss_options) -> int:
    """The first generator seed (noise, timesteps) whose x̂0 holds at least `faces` faces where L_id applies."""
    with torch.no_grad():
        return next(seed for seed in range(50) if training_losses(
            models, batch, torch.Generator().manual_seed(seed), 1.0, **loss_options)["faces"] >= faces)


def test_the_identity_loss_alone_fits_one_fixed_batch(tiny_base, face_set, face_identity):
    """The gradient path's sanity check: Adam on the trainer's own L_id alone, on one fixed batch (targets,
    references, noise and timesteps in [0, 500)), must lower it by a large fraction. A gradient that is
    cut, detached or of the wrong sign leaves it where it is (or raises it)."""
    config = tiny_config(tiny_base, face_set[0], "-", resolution=64, batch_size=2, seed=3)
    models, batch = face_models_and_batch(tiny_base, face_set, face_identity, config)
    seed = first_seed_with_faces(models, batch, config.batch_size)  # every sample's x̂0 holds a face
    optimizer = torch.optim.Adam(trainable_parameters(models.adapter, models.unet), lr=1e-2)
    trajectory = []
    for _ in range(SANITY_STEPS):
        losses = training_losses(models, batch, torch.Generator().manual_seed(seed), 1.0)
        optimizer.zero_grad(set_to_none=True)
        losses["loss_id"].backward()
        optimizer.step()
        trajectory.append(float(losses["loss_id"].detach()))
    with torch.no_grad():
        final = training_losses(models, batch, torch.Generator().manual_seed(seed), 1.0)
    assert final["faces"] == config.batch_size
    assert float(final["loss_id"]) < 0.6 * trajectory[0], trajectory + [float(final["loss_id"])]


@pytest.mark.slow
def test_faces_in_the_one_step_estimate_give_an_identity_loss_that_trains_the_adapter(
        tmp_path, tiny_base, face_set, face_identity):
    root, _ = face_set
    config = tiny_config(tiny_base, root, tmp_path / "run", resolution=64, batch_size=4, max_steps=4, log_every=2,
                         checkpoint_every=100, learning_rate=1e-3, identity_loss_weight=1.0,
                         identity_timesteps=(0, 200))
    models, batch = face_models_and_batch(tiny_base, face_set, face_identity, config)
    # noise and timesteps: the first draw with a face in x̂0 (seed 0 has none in range)
    seed = first_seed_with_faces(models, batch, 1, identity_timesteps=(0, 200))
    losses = training_losses(models, batch, torch.Generator().manual_seed(seed), 1.0, identity_timesteps=(0, 200))
    assert losses["faces"] > 0 and losses["loss_id"] > 0
    torch.testing.assert_close(losses["loss"], losses["loss_sd"] + losses["loss_id"])
    losses["loss_id"].backward()  # L_id alone reaches the adapter, through the frozen decoder
    assert models.adapter.token_mlp.net[0].weight.grad.abs().sum() > 0
    layers = adapter_modules(models.unet).values()
    assert all(m.to_k.weight.grad.abs().sum() > 0 for m in layers if hasattr(m, "to_k"))
    assert all(m.alpha_attn.grad.abs() > 0 for m in layers if hasattr(m, "alpha_attn"))
    # with every γ = 0 the gated path is closed: E_r (the MFF) gets gradient only once the gates open
    assert models.adapter.mff.patch_proj.weight.grad.abs().sum() == 0
    assert all(p.grad is None for p in models.vae.parameters())
    models.adapter.zero_grad(set_to_none=True)
    models.unet.zero_grad(set_to_none=True)

    frozen_before = frozen_state(models)
    adapter_before = {k: v.clone() for k, v in adapter_state_dict(models.adapter, models.unet).items()}
    train(config, models)
    assert_only_the_adapter_changed(models, frozen_before, adapter_before)
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert sum(entry["faces"] for entry in log) > 0 and sum(entry["images"] for entry in log) == 16
    for entry in log:  # L_id is in the logged loss: loss = loss_sd + λ·loss_id
        assert entry["loss"] == pytest.approx(entry["loss_sd"] + entry["loss_id"], rel=1e-5)
    assert any(entry["loss_id"] > 0 for entry in log)


@pytest.mark.parametrize("name", ["idadapter_sd21.toml", "idadapter_sd15.toml"])
def test_the_example_configs_are_valid(name):
    from pathlib import Path

    config = TrainConfig.from_file(Path(__file__).resolve().parents[2] / "configs" / name)
    assert config.learning_rate == 3e-5 and config.batch_size == 4 and config.max_steps == 50_000


def test_only_identities_with_training_consent_are_trained_on(tmp_path, identity_set, face_identity):
    from governance import Actor, GovernanceContext, Purpose, new_record
    from governance.demo import create_demo_governance

    from idadapter.train import consented_identities

    gov = create_demo_governance(tmp_path / "gov", ["obama"])  # evaluation and calibration only
    gov.record_consent(new_record("ardern", [Purpose.TRAINING], controller="studio", jurisdiction="EU",
                                  actor="registrar"), actor=Actor("registrar", "operator"))
    config = tmp_path / "gov" / "governance.toml"
    allowed = consented_identities(config, sorted(IDENTITIES), "trainer")
    assert allowed == {"ardern"}
    checks = [e for e in GovernanceContext.load(config).audit_log.entries() if e["action"] == "consent.check"]
    assert {(e["subject"], e["outcome"]) for e in checks} == {("ardern", "ok"), ("macron", "refused"), ("obama", "refused")}
    images = scan_identity_folders(identity_set, face_identity, allowed)
    assert {image.identity for image in images} == {"ardern"}
    with pytest.raises(ValueError, match="no identity in the training data has training consent"):
        consented_identities(config, ["obama"], "trainer")
