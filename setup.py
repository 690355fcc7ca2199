"""satracker-jax: a JAX/Flax reconstruction of the SATracker vision-language tracker."""
from setuptools import find_packages, setup

# Why each dependency is here is listed in README.md ("Dependencies and tests").
INSTALL_REQUIRES = [
    # 0.11.2: the build on the GPU machines docs/BENCHMARKS.md's GPU figures come from. A plain install
    # brings the CPU jaxlib; `.[cuda]` / `.[cuda13]` / `.[tpu]` add the accelerator build.
    "jax>=0.7.0,<0.12",
    "flax>=0.11.0,<0.13",
    "optax>=0.2.4,<0.3",
    "orbax-checkpoint>=0.12.0,<0.13",  # 0.12: the array writer options model_io sets
    "ml_collections>=1.0.0,<1.2",
    "numpy>=1.26,<3",
    "pillow>=10.0,<14",
    "sentencepiece>=0.2.0,<0.3",
    "matplotlib>=3.8,<4",
    "tqdm>=4.66,<5",
    "safetensors>=0.4,<0.9",
    # Training curves (tf.summary writes event files when TensorFlow is present; the JSONL log
    # is always written, so training on a machine without TensorFlow loses nothing but the UI).
    "tensorboard>=2.18,<2.22",
    # `satracker track --out clip.mp4` and --video input: imageio's ffmpeg plugin, with the
    # ffmpeg binary shipped inside the imageio-ffmpeg wheel (no system ffmpeg needed).
    "imageio>=2.31,<3",
    "imageio-ffmpeg>=0.4.9,<0.9",
]

EXTRAS = {
    # The tf.data input pipeline (data_pipelines/ only; `make env` always installs it). The model,
    # train step, tracker and metrics import without TensorFlow: a host where it cannot be
    # installed installs without this extra and trains with `--config.data.backend=numpy`.
    "tf": ["tensorflow-cpu>=2.18,<2.22", "tensorflow-datasets>=4.9.6,<4.10"],
    # The JAX build for an accelerator (`make env ACCEL=cuda|cuda13|tpu`): JAX's own extras, which
    # pin jaxlib and the plugin to the jax version chosen above. cuda = CUDA 12 wheels (driver >=
    # 525); cuda13 = CUDA 13 wheels (driver >= 580); tpu = libtpu (TPU VMs).
    "cuda": ["jax[cuda12]"],
    "cuda13": ["jax[cuda13]"],
    "tpu": ["jax[tpu]"],
    # gs:// paths without TensorFlow: etils.epath then goes through fsspec, which needs gcsfs
    # (with TensorFlow installed, tf.io.gfile serves them). Orbax's arrays use TensorStore's driver.
    "gcs": ["gcsfs>=2024.2"],
    "test": [
        "pytest>=8.0,<10",
        "pytest-timeout>=2.3,<3",
        # `make test` runs the suite's files on 2 worker processes (--dist loadfile: a file's
        # shared fixtures stay in one process): 1.7x faster on the 2-core machine.
        "pytest-xdist>=3.5,<4",
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
