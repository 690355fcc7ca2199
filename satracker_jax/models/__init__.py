"""SATracker model: ViT + BERT synchronous backbone (slb), TEM/SAM fusion, OSTrack centre head."""
from satracker_jax.models.config import BertConfig, ModelConfig, ViTConfig, model_config_from_dict
from satracker_jax.models.head import decode_box
from satracker_jax.models.satracker import SATracker, build_model, count_params, normalize_image

__all__ = [
    "BertConfig", "ModelConfig", "SATracker", "ViTConfig", "build_model", "count_params", "decode_box",
    "model_config_from_dict", "normalize_image",
]
