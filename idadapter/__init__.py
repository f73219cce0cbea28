"""IDAdapter (Cui et al., CVPR 2024) on diffusers: personalised images from one photo, no test-time tuning.

    from idadapter import IDAdapterPipeline
    pipeline = IDAdapterPipeline.from_pretrained("path/to/sd-2-1", "path/to/adapter", image_encoder="path/to/clip-vit-h")
    images = pipeline(photo, "a photo of a woman on a beach", class_noun="woman", num_images_per_prompt=4).images
"""

__version__ = "0.1.0"

from idadapter.config import IDAdapterConfig  # noqa: E402
from idadapter.injection import attach_identity_layers, set_adapter_scale  # noqa: E402
from idadapter.model import IDAdapter  # noqa: E402
from idadapter.pipeline import IDAdapterPipeline  # noqa: E402
from idadapter.weights import AdapterMismatch, load_adapter, save_adapter  # noqa: E402

__all__ = [
    "AdapterMismatch", "IDAdapter", "IDAdapterConfig", "IDAdapterPipeline", "attach_identity_layers",
    "load_adapter", "save_adapter", "set_adapter_scale",
]
