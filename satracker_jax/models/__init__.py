"""SATracker model: ViT + BERT synchronous backbone (slb), TEM/SAM fusion, OSTrack centre head."""
from satracker_jax.models.head import decode_box
from satracker_jax.models.satracker import (
    BertConfig, ModelConfig, SATracker, ViTConfig, build_model, count_params, model_config_from_dict,
    normalize_image)

__all__ = [
    "BertConfig", "ModelConfig", "SATracker", "ViTConfig", "build_model", "count_params", "decode_box",
    "model_config_from_dict", "normalize_image",
]
