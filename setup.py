"""satracker-jax: a JAX/Flax reconstruction of the SATracker vision-language tracker."""
from setuptools import find_packages, setup

# Why each dependency is here is explained in README.md ("Dependencies").
INSTALL_REQUIRES = [
    "jax>=0.7.0,<0.11",
    "flax>=0.11.0,<0.13",
    "optax>=0.2.4,<0.3",
    "orbax-checkpoint>=0.11.0,<0.13",
    "ml_collections>=1.0.0,<1.2",
    "numpy>=1.26,<3",
    "pillow>=10.0,<14",
    "sentencepiece>=0.2.0,<0.3",
    "matplotlib>=3.8,<4",
    "tqdm>=4.66,<5",
    "safetensors>=0.4,<0.9",
    # The input pipeline (data_pipelines/ only); the model, train step, tracker and metrics
    # import without TensorFlow.
    "tensorflow-cpu>=2.18,<2.22",
    "tensorflow-datasets>=4.9.6,<4.10",
    # Training curves (tf.summary writes event files when TensorFlow is present; the JSONL log
    # is always written, so training on a machine without TensorFlow loses nothing but the UI).
    "tensorboard>=2.18,<2.22",
    # `satracker track --out clip.mp4` and --video input: imageio's ffmpeg plugin, with the
    # ffmpeg binary shipped inside the imageio-ffmpeg wheel (no system ffmpeg needed).
    "imageio>=2.31,<3",
    "imageio-ffmpeg>=0.4.9,<0.9",
]

EXTRAS = {
    "test": [
        "pytest>=8.0,<10",
        "pytest-timeout>=2.3,<3",
        # Reference BERT WordPiece tokenizer (HF's Rust implementation) for parity tests.
        "tokenizers>=0.19,<0.24",
    ],
    # PyTorch reference models for the weight-conversion parity tests (`pytest -m torch`) and
    # for reading .pth/.bin checkpoints with torch.load(weights_only=True).
    # transformers provides the reference BertModel; timm is not needed (the tests carry a small
    # MAE-layout ViT) and would pull a CUDA torch build.
    "torch": ["torch>=2.4,<2.14", "transformers>=4.44,<6"],
}

setup(
    name="satracker-jax",
    version="0.1.0",
    description="SATracker (vision-language single-object tracking) in JAX/Flax: a reconstruction, not a port.",
    packages=find_packages(include=["satracker_jax", "satracker_jax.*", "data_pipelines", "data_pipelines.*", "configs"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["satracker=satracker_jax.cli:main"]},
)
