"""`satracker bench data --config C --json FILE [--batches N] [--data-root DIR] [--frame-size WxH]`.

Times the input pipeline's `make_dataset` alone (no model; `data.backend`: "tf", the tf.data
sampler, or "numpy", `--config.data.backend=numpy`, the TensorFlow-free one): host-local batches of
`train.batch_size` at the config's crop sizes, after a few warm-up batches, first with all cores
(the training setting), then with 1, 2, 4, ... workers of the config's `data.workers` kind up to
the core count (threads: tf.data's private pool of that size, one intra-op thread, or the numpy
backend's thread pool; processes: the numpy backend's worker processes) to show how it scales.
Without configured data roots (or with `data_root` pointing at `satracker synth` output) it reads
synthetic videos, generated into a temporary folder when needed: 1280x720 JPEG frames by default,
the size of most LaSOT / TNL2K frames, since decoding is most of the cost. Per-core numbers divide
by `os.cpu_count()`; CPU ms per sample (this process's user + system time) and its inverse,
samples per CPU-second, say what one free core would give when other jobs share the machine
(contention inflates them somewhat too). Note the load average (printed) when comparing runs.
"""
from __future__ import annotations

import os
import tempfile
import time

from satracker_jax import config_utils, utils


def _use_synthetic(config, root: str) -> None:
  config.data.datasets = {"synthetic": {"root": root, "weight": 1.0, "split": "train"}}
  # The generated vocab covers every generated word; a BERT vocab would do as well, but may be absent.
  config.text.tokenizer = "wordpiece"
  config.text.vocab_file = os.path.join(root, "vocab.txt")


def _time(sampler, config, maker, batch_size: int, batches: int, warmup: int) -> dict:
  start = time.perf_counter()
  it = sampler.make_dataset(config, batch_size=batch_size, sample_maker=maker, debug=True)
  batch = next(it)
  first_batch_s = time.perf_counter() - start
  ratios = [batch["debug_dct_ratio"]]
  for _ in range(max(warmup - 1, 0)):
    next(it)
  cpu0, start = os.times(), time.perf_counter()
  for _ in range(batches):
    ratios.append(next(it)["debug_dct_ratio"])
  elapsed = time.perf_counter() - start
  cpu1 = os.times()
  stats = it.stats()
  it.close()
  cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
  return {"samples_per_s": batches * batch_size / elapsed, "seconds": elapsed,
          "first_batch_s": first_batch_s, "cpu_utilisation": cpu / elapsed,
          "cpu_ms_per_sample": 1e3 * cpu / (batches * batch_size),
          "samples_per_cpu_second": batches * batch_size / max(cpu, 1e-9),
          "replaced": stats["replaced"], "samples": stats["samples"], "ratios": ratios}


def run(config_spec: str = "configs/base.py", overrides=(), *, batches: int = 20, warmup: int = 3,
        data_root: str = "", sequences: int = 24, frame_size: str = "1280x720",
        workers=None) -> dict:
  """Samples/s of the input pipeline; `workers`: the scaling points (default 1, 2, 4.. cores)."""
  import numpy as np  # noqa: PLC0415
  from data_pipelines import batches as batches_lib, synthetic  # noqa: PLC0415
  config = config_utils.load_config(config_spec, overrides)
  sampler = batches_lib.backend_module(config)  # the tf backend imports TensorFlow
  configured = [n for n, d in config.data.datasets.items()
                if float(d.get("weight", 1.0)) > 0 and d.get("root", "")]
  tmp = None
  if data_root:
    _use_synthetic(config, data_root)
    source = f"synthetic ({data_root})"
  elif configured:
    source = ", ".join(configured)
  else:
    tmp = tempfile.TemporaryDirectory(prefix="satracker_bench_data_")
    synthetic.generate(tmp.name, sequences=sequences, seed=0, size=frame_size, progress=False)
    _use_synthetic(config, tmp.name)
    source = f"synthetic JPEG, generated ({sequences} videos, {frame_size})"

  cores = os.cpu_count() or 1
  if workers is None:
    workers = sorted({min(2 ** i, cores) for i in range(cores.bit_length() + 1)})
  kind, _ = config_utils.parse_workers(config.data.workers)
  batch_size = int(config.train.batch_size)
  maker = batches_lib.build_sample_maker(config)
  load = os.getloadavg()[0]
  main_workers = config.data.workers
  main = _time(sampler, config, maker, batch_size, batches, warmup)
  scaling = []
  for n in workers:
    config.data.workers = f"{kind}:{int(n)}"
    r = _time(sampler, config, maker, batch_size, batches, warmup)
    scaling.append({"workers": f"{kind}:{int(n)}", "samples_per_s": r["samples_per_s"],
                    "per_worker": r["samples_per_s"] / n, "cpu_utilisation": r["cpu_utilisation"],
                    "cpu_ms_per_sample": r["cpu_ms_per_sample"]})
  load_after = os.getloadavg()[0]
  if tmp is not None:
    tmp.cleanup()

  ratios = np.concatenate([np.ravel(r) for r in main.pop("ratios")])
  dct = {f"1/{r}": float(np.mean(ratios == r)) for r in (1, 2, 4, 8)}
  result = {
      "config": config_spec, "backend": str(config.data.get("backend", "tf")), "data": source,
      "workers": str(main_workers),
      "batch_size": batch_size,
      "template_size": int(config.model.template_size), "search_size": int(config.model.search_size),
      "batches": batches, **main,
      "samples_per_s_per_core": main["samples_per_s"] / cores,
      "batches_per_s": main["samples_per_s"] / batch_size,
      "jpeg_dct_oversample": float(maker.dct_oversample),
      "decode_scale_fraction": dct, "scaling": scaling,
      "cpu_count": cores, "load_average_1min": [load, load_after],
      "machine": utils.machine_info(),
  }
  rows = [[k, result[k]] for k in ("config", "backend", "workers", "data", "batch_size", "template_size", "search_size",
                                   "samples_per_s", "samples_per_s_per_core", "cpu_utilisation",
                                   "cpu_ms_per_sample", "samples_per_cpu_second", "first_batch_s", "replaced", "jpeg_dct_oversample", "cpu_count")]
  rows.append(["decode scale (frames)", ", ".join(f"{k}: {v:.0%}" for k, v in dct.items())])
  rows.append(["load average (1 min)", f"{load:.2f} before, {load_after:.2f} after"])
  print(utils.format_table(["data pipeline", "value"], rows))
  print(utils.format_table(
      [f"{result['backend']} workers", "samples/s", "per worker", "CPU busy (cores)", "CPU ms/sample"],
      [[s["workers"], s["samples_per_s"], s["per_worker"], s["cpu_utilisation"], s["cpu_ms_per_sample"]]
       for s in scaling]))
  return result
