"""The rule of the layers (docs/INTERFACES.md, top), enforced by reading every import.

Imports are read with `ast`, including lazy imports inside functions: a lazy import is still a
dependency (it runs the first time the function does).
"""
import ast
import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("satracker_jax", "data_pipelines")
TENSORFLOW = ("tensorflow", "tensorflow_datasets")


def _module_name(path: str) -> str:
  rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
  return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def _imports_of(path: str, module: str) -> set[str]:
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package.split(".")
        base = base[:len(base) - node.level + 1]
        prefix = ".".join(base + ([node.module] if node.module else []))
      else:
        prefix = node.module or ""
      found.add(prefix)
      # `from pkg import mod` imports pkg.mod when mod is a module: count both spellings.
      found.update(f"{prefix}.{alias.name}" for alias in node.names)
  return found


def _graph() -> dict[str, set[str]]:
  graph = {}
  for package in PACKAGES:
    for root, _, files in os.walk(os.path.join(REPO, package)):
      for name in files:
        if name.endswith(".py"):
          path = os.path.join(root, name)
          module = _module_name(path)
          graph[module] = _imports_of(path, module)
  return graph


GRAPH = _graph()


def _violations(sources, forbidden, exact=False) -> list[str]:
  """'A imports B' for every module A in (or under) `sources` and B in (or under) `forbidden`."""
  out = []
  for module, imports in sorted(GRAPH.items()):
    if not any(module == s or (not exact and module.startswith(s + ".")) for s in sources):
      continue
    for imported in sorted(imports):
      if any(imported == f or imported.startswith(f + ".") for f in forbidden):
        out.append(f"{module} imports {imported}")
  return out


def test_the_graph_reads_the_tree():
  # Guards the test itself: an empty graph would pass every rule below.
  assert "satracker_jax.tracker" in GRAPH and "satracker_jax.models" in GRAPH["satracker_jax.tracker"]
  assert "tensorflow" in GRAPH["data_pipelines.sampler"]
  assert any(i.startswith("data_pipelines") for i in GRAPH["satracker_jax.train.loop"])  # lazy one


def test_the_model_never_imports_training_data_pipelines_or_tensorflow():
  forbidden = ("satracker_jax.train", "satracker_jax.cli", "satracker_jax.evaluation",
               "satracker_jax.tracker", "data_pipelines") + TENSORFLOW
  assert _violations(["satracker_jax.models"], forbidden) == []


# The one module of data_pipelines/ that inference and the tokenizer may use: reading a file that
# may be a bucket URL (a frame, a sentence, a vocabulary). `import data_pipelines` runs a docstring.
FILE_ACCESS = ("data_pipelines", "data_pipelines.files")


def test_inference_never_imports_training_or_data_pipelines():
  inference = ["satracker_jax.model_io", "satracker_jax.tracker", "satracker_jax.evaluation",
               "satracker_jax.export", "satracker_jax.track_video"]
  forbidden = ("satracker_jax.train", "satracker_jax.cli", "data_pipelines") + TENSORFLOW
  found = [v for v in _violations(inference, forbidden) if v.split(" imports ")[1] not in FILE_ACCESS]
  assert found == []


def test_the_file_access_module_imports_tensorflow_only_inside_functions():
  """What FILE_ACCESS lets inference import pulls in nothing else of data_pipelines/ and no
  TensorFlow at import time (only a URL's first read imports it)."""
  assert GRAPH["data_pipelines"] == set()
  path = os.path.join(REPO, "data_pipelines", "files.py")
  with open(path, encoding="utf-8") as f:
    top = ast.parse(f.read(), path).body
  at_import = set()
  for node in top:
    if isinstance(node, ast.Import):
      at_import.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      at_import.add(node.module or "")
  assert not any(m.startswith(("data_pipelines", *TENSORFLOW)) for m in at_import), at_import
  assert any(m.startswith("tensorflow") for m in GRAPH["data_pipelines.files"])  # the lazy one


def test_the_numpy_input_imports_neither_jax_nor_tensorflow():
  """Each worker process of `data.workers=processes` imports the numpy sampler: JAX alone cost each
  1.4 s of CPU at start (2026-12-07), and none of them runs a JAX computation."""
  import subprocess
  import sys
  code = ("import sys, data_pipelines.numpy_sampler; "
          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax', 'tensorflow')))")
  p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert p.returncode == 0, p.stderr[-2000:]
  assert p.stdout.strip() == "[]", p.stdout[-2000:]


def test_only_data_pipelines_import_tensorflow():
  assert _violations(["satracker_jax"], TENSORFLOW) == []


def test_only_the_cli_imports_the_cli():
  library = [m for m in GRAPH if not m.startswith("satracker_jax.cli")]
  assert _violations(library, ("satracker_jax.cli",), exact=True) == []


def test_no_two_modules_import_each_other():
  modules = set(GRAPH)
  edges = {m: {i for i in GRAPH[m] if i in modules and i != m} for m in modules}
  # A package's __init__ importing its own submodules is how packages re-export; not a circle.
  pairs = sorted({tuple(sorted((a, b))) for a in edges for b in edges[a]
                  if a in edges.get(b, ()) and not (a.startswith(b + ".") or b.startswith(a + "."))})
  assert pairs == []


def test_without_tensorflow_inference_imports_and_tracks(tmp_path):
  """With `import tensorflow` failing, the model, loading, tracker, metrics / analyze / eval
  runner and export import, and a tiny tracker runs a step (an accelerator machine may lack TF)."""
  code = textwrap.dedent(r"""
      import sys
      for name in ("tensorflow", "tensorflow_datasets"):
        sys.modules[name] = None  # `import tensorflow` now raises ImportError
      import numpy as np
      from satracker_jax import config_utils, export, model_io, models, tracker
      from satracker_jax.evaluation import analyze, metrics, runner
      config = config_utils.load_config("configs/tiny.py", [
          "model.vit.depth=2", "model.vit.dim=32", "model.vit.heads=2", "model.bert.dim=32",
          "model.bert.heads=2", "model.bert.intermediate=64", "model.text_layer_map=(0,1)",
          "model.tem_layers=(0,)", "model.sam_layers=(1,)", "model.dm_layers=(1,)",
          "model.fusion_heads=2", "model.head_channels=16", "model.search_size=32",
          "model.template_size=16", "model.max_text_len=8", "model.dm_dim=16"])
      variables = model_io.random_variables(config)

      class Tok:
        def encode(self, s):
          return np.array([101, 7, 102, 0, 0, 0, 0, 0], np.int32), np.array([1, 1, 1, 0, 0, 0, 0, 0], np.int32)
      t = tracker.Tracker(config, variables, tokenizer=Tok())
      frame = np.zeros((48, 64, 3), np.uint8)
      t.init(frame, [20, 10, 12, 9], "a target")
      box, score = t.track(frame)
      assert np.isfinite(box).all() and t.trace_count == 1
      assert not any(m.startswith("tensorflow") for m in sys.modules if sys.modules[m] is not None)
      print("OK")
  """)
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]
