"""Session fixtures for the harness tests: one real analyzer, and the demo run scored once."""
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import huggingface_hub.constants
import pytest

from eval.demo.build import build_demo_run
from eval.faces import FaceAnalyzer
from eval.score import score_manifest
from eval.scoring.face_diversity import alexnet_weights_path


def count_model_calls(analyzer: FaceAnalyzer) -> FaceAnalyzer:
    """Wrap the real analyzer so tests can count images sent to each model: `analyzer.calls`."""
    analyzer.calls = Counter()
    analyze = analyzer.analyze

    def counted_analyze(images, progress=False):
        images = list(images)
        analyzer.calls["analyze"] += len(images)
        return analyze(images, progress=progress)

    analyzer.analyze = counted_analyze
    for name, recognizer in analyzer.recognizers.items():
        def counted_embed(inputs, _embed=recognizer.embed, _name=name):
            analyzer.calls[f"embed:{_name}"] += len(inputs)
            return _embed(inputs)

        recognizer.embed = counted_embed
    return analyzer


@pytest.fixture(scope="session")
def eval_analyzer() -> FaceAnalyzer:
    return count_model_calls(FaceAnalyzer(recognizers=("sface", "dlib")))


@pytest.fixture(scope="session")
def real_crops(faces_dir) -> list:
    """The aligned 112x112 face crops of the ten bundled photos, as the face core cuts them."""
    from PIL import Image

    analyzer = FaceAnalyzer(recognizers=(), with_pose=False, with_expression=False)
    photos = [Image.open(path).convert("RGB") for path in sorted(faces_dir.glob("*.jpg"))]
    return [result.main_face.aligned for result in analyzer.analyze(photos)]


@pytest.fixture(scope="session")
def hide_optional_weights(tmp_path_factory):
    """`with hide_optional_weights():` no LPIPS backbone and no CLIP model are reachable, whatever this
    machine holds (only inside the block: other tests keep the real environment)."""
    empty = tmp_path_factory.mktemp("no-weights")

    @contextmanager
    def hidden():
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("TORCH_HOME", str(empty / "torch"))
            patch.delenv("IDAVATAR_CLIP", raising=False)
            patch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(empty / "hf"))
            yield

    hidden.folder = empty
    return hidden


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache") / "scores-cache.sqlite"


@pytest.fixture(scope="session")
def demo_manifest(tmp_path_factory) -> Path:
    return build_demo_run(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def demo_scores(demo_manifest, eval_analyzer, demo_cache, hide_optional_weights):
    """The demo run scored once, cold, into the session cache; `cold_calls` records the model calls."""
    before = Counter(eval_analyzer.calls)
    with hide_optional_weights():
        result = score_manifest(demo_manifest, demo_manifest.parent / "scores", analyzer=eval_analyzer,
                                cache=demo_cache, progress=False)
    result.cold_calls = Counter(eval_analyzer.calls) - before
    return result


@pytest.fixture(scope="session")
def score_cache(demo_scores, demo_cache) -> Path:
    """The session cache, after the demo run was scored into it cold: later tests reuse its analyses."""
    return demo_cache


@pytest.fixture
def torch_home_with_alexnet(tmp_path, monkeypatch) -> Path:
    """Stand-in AlexNet weights (seeded random) where FaceLpips looks: mechanics only, never a reported number."""
    import torch
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = alexnet_weights_path()
    weights.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), weights)
    return weights


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    """A CLIP of a few thousand parameters with a byte-level tokenizer, built offline."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder = tmp_path_factory.mktemp("tiny-clip")
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    chars = [chr(c) for c in printable] + [chr(256 + i) for i in range(len(extra))]  # GPT-2's byte alphabet
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"],
                         eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                 crop_size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    processor.save_pretrained(folder)
    return folder
