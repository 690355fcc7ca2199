"""TFDS builder over the synthetic generator (same videos as `satracker synth`, as a TFDS data set).

    builder = SyntheticTracking(config=SyntheticTracking.make_config(sequences=20, frames=24),
                                data_dir="/tmp/tfds")
    builder.download_and_prepare()
    ds = builder.as_dataset(split="train")
    # {"frames", "boxes", "sentence", "name", "mode", "attributes" (attributes.json's JSON text)}

Nothing is downloaded: examples are rendered by `synthetic.render_sequence(seed, index, modes=)`,
so sequence i is the same video in both forms. The builder config name encodes the parameters
(the mode probabilities as a short hash when they are not the generator's default), so different
settings never share a prepared folder; the version's last number is the generator's version.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils

from data_pipelines import synthetic


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
  sequences: int = 100
  test_sequences: int = 10
  frames: int = 48
  width: int = 160
  height: int = 120
  seed: int = 0
  modes: str = ""  # mode probabilities as "relation=0.5,absolute=0.5"; "" = synthetic.MODES


class SyntheticTracking(tfds.core.GeneratorBasedBuilder):
  """Procedural vision-language tracking videos (TNL2K-like records)."""

  VERSION = tfds.core.Version(f"1.0.{synthetic.GENERATOR_VERSION}")
  BUILDER_CONFIGS = [SyntheticConfig(name="default")]

  @tfds_utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS' own lookup goes through the optional `importlib_resources` backport, which is not a
    # dependency of ours; this file's path is what it would find.
    return epath.Path(__file__)

  @staticmethod
  def make_config(sequences=100, test_sequences=10, frames=48, width=160, height=120, seed=0,
                  modes=""):
    name = f"n{sequences}_t{test_sequences}_f{frames}_{width}x{height}_s{seed}"
    if modes:
      probs = synthetic.mode_probabilities(synthetic.parse_modes(modes))
      if probs != synthetic.mode_probabilities():
        name += "_m" + hashlib.sha1(json.dumps(probs, sort_keys=True).encode()).hexdigest()[:10]
    return SyntheticConfig(name=name, sequences=sequences, test_sequences=test_sequences,
                           frames=frames, width=width, height=height, seed=seed, modes=modes)

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "name": tfds.features.Text(),
            "sentence": tfds.features.Text(),
            "mode": tfds.features.Text(),
            "attributes": tfds.features.Text(),
            "frames": tfds.features.Video((None, c.height, c.width, 3), encoding_format="jpeg"),
            "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
        }),
        supervised_keys=None,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # everything is rendered locally
    c = self.builder_config
    indices = {"train": [], "test": []}
    for i in range(c.sequences):
      indices[synthetic.split_of(i, c.sequences, c.test_sequences)].append(i)
    return {split: self._generate_examples(idx) for split, idx in indices.items() if idx}

  def _generate_examples(self, indices):
    c = self.builder_config
    modes = synthetic.parse_modes(c.modes) if c.modes else None
    for i in indices:
      data = synthetic.render_sequence(c.seed, i, c.frames, c.width, c.height, modes=modes)
      yield synthetic.sequence_name(i), {
          "name": synthetic.sequence_name(i), "sentence": data["sentence"],
          "mode": data["attributes"]["mode"],
          "attributes": json.dumps(data["attributes"], sort_keys=True),
          "frames": data["frames"], "boxes": data["boxes"].astype("float32"),
      }
