"""What a user types wrong on the command line ends in one clear line and exit 2, never a traceback;
and `convert` runs as a user types it (no --config needed)."""
import os
import subprocess
import sys

import pytest

from satracker_jax import cli, config_utils

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(argv, capsys):
  rc = cli.main(argv)
  captured = capsys.readouterr()
  return rc, captured.out, captured.err


def test_the_issue_train_command_is_one_line_and_exit_2(tmp_path):
  # Exactly what the training issue told users to type (the field lives under train.).
  workdir = tmp_path / "W"
  proc = subprocess.run(
      [sys.executable, "-c", "import sys; from satracker_jax.cli import main; sys.exit(main())",
       "train", "--config", "configs/synthetic.py",
       "--workdir", str(workdir), "--config.total_steps=10"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr  # no traceback
  assert lines[0].startswith("satracker train: ")
  assert "total_steps" in lines[0] and "did you mean train.total_steps" in lines[0]
  assert not workdir.exists()  # nothing was created for a command that cannot run


@pytest.mark.parametrize("override, expected", [
    ("--config.model.vitt.dim=5", "did you mean model.vit.dim"),
    ("--config.lr=1e-3", "did you mean optim.lr"),
    ("--config.tracker.hann=1", "did you mean tracker.hann_window"),
    ("--config.train.batch_size=abc", "expected int"),
    ("--config.train.batch_size=2.5", "expected int"),
    ("--config.model.use_sam=maybe", "expected bool"),
    ("--config.model.tem_layers=x", "expected a tuple"),
    ("--config.model.vit.heads=5", "invalid model config: vit: dim 192 is not divisible by 5 heads"),
    ("--config.model.tem_layers=(1,9)", "invalid model config: tem_layers=(1, 9) has stages outside 0..3"),
    ("--config.train", "needs a value"),
    ("--config.data.backend=torch", "data.backend='torch': expected one of tf, numpy"),
])
def test_config_mistakes_are_one_line_and_exit_2(override, expected, capsys):
  rc, out, err = run_cli(["smoke", "--config", "configs/tiny.py", override], capsys)
  assert rc == 2
  assert err.count("\n") == 1 and err.startswith("satracker smoke: "), err
  assert expected in err, err
  assert out == ""  # the verb never started


def test_several_model_problems_stay_on_one_line(capsys):
  rc, _, err = run_cli(["smoke", "--config", "configs/tiny.py", "--config.model.vit.heads=5",
                        "--config.model.search_size=100"], capsys)
  assert rc == 2 and err.count("\n") == 1
  assert "search_size=100 is not a multiple of patch_size=16" in err and "5 heads" in err


def test_config_errors_reach_the_cli_through_model_loading(tmp_path, capsys):
  # eval/track/export load configs inside the verb (cli/common.py): still one line and exit 2.
  rc, _, err = run_cli(["eval", "--config", "configs/tiny.py", "--dataset", "synthetic", "--root",
                        str(_synthetic_root(tmp_path / "data")), "--out", str(tmp_path / "out"),
                        "--config.tracker.hann=1"], capsys)
  assert rc == 2 and err.count("\n") == 1 and "did you mean tracker.hann_window" in err


def test_unknown_config_file_lists_the_shipped_ones(capsys):
  rc, _, err = run_cli(["smoke", "--config", "configs/tinyy.py"], capsys)
  assert rc == 2 and "config file not found" in err and "tiny.py" in err


def test_library_callers_get_config_error():
  config = config_utils.load_config("configs/tiny.py")
  with pytest.raises(config_utils.ConfigError, match="did you mean train.total_steps"):
    config_utils.apply_overrides(config, ["total_steps=10"])
  # Good overrides keep working, with the usual conversions.
  config_utils.apply_overrides(config, ["train.total_steps=10", "model.use_sam=false",
                                        "optim.lr=1", "model.tem_layers=1"])
  assert config.train.total_steps == 10 and config.model.use_sam is False
  assert config.optim.lr == 1.0 and isinstance(config.optim.lr, float)
  assert config.model.tem_layers == (1,)


def test_convert_defaults_to_the_base_config(tmp_path, monkeypatch, capsys):
  # `satracker convert --vit ... --bert ... --out W` as the README's users type it: no --config.
  from satracker_jax import convert
  seen = {}

  def fake_convert_to_folder(out, config, **kwargs):
    seen.update(out=out, config=config, **kwargs)
    return {"mapped": ["patch_embed/kernel"], "unused": {}, "unexpected": [], "missing": [],
            "pos_embed": {}, "vocab_file": None}

  monkeypatch.setattr(convert, "convert_to_folder", fake_convert_to_folder)
  monkeypatch.setattr(convert, "find_vocab", lambda vocab, bert: "vocab.txt")
  out = str(tmp_path / "W")
  rc, printed, err = run_cli(["convert", "--vit", "vit.safetensors", "--bert", "bert/", "--out", out],
                             capsys)
  assert rc == 0, err
  assert seen["out"] == out and seen["vit"] == "vit.safetensors" and seen["bert"] == "bert/"
  assert seen["config_name"] == "configs/base.py"
  assert seen["config"].model.vit.dim == 768 and seen["config"].model.bert.dim == 768
  assert "mapped: 1 parameters" in printed


def test_config_check_knows_the_same_input_backends_as_the_pipeline():
  # config_utils may not import data_pipelines (layers), so the names stand in two places.
  from data_pipelines import batches  # noqa: PLC0415
  assert set(config_utils.DATA_BACKENDS) == set(batches.BACKENDS)


def test_toolkit_option_knows_the_library_toolkits_and_refuses_others(tmp_path, capsys):
  # cli/analyze.py spells the names out (so `--help` imports nothing): the same as the library's.
  from satracker_jax.cli import analyze as analyze_verb
  from satracker_jax.evaluation import toolkits
  assert analyze_verb.TOOLKITS == toolkits.NAMES
  for verb in ("analyze", "eval"):
    extra = ["--results", "x=y"] if verb == "analyze" else []
    with pytest.raises(SystemExit) as info:
      cli.main([verb, "--dataset", "tnl2k", "--root", str(tmp_path), "--out", str(tmp_path / "o"),
                "--toolkit", "matlab", *extra])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--toolkit: invalid choice: 'matlab'" in err and "tnl2k-matlab" in err


def _synthetic_root(root, split="test"):
  """One 2-frame video in the synthetic (TNL2K) layout under ROOT/<split>/, plus a vocab.txt."""
  import numpy as np
  from PIL import Image
  seq = root / split / "seq_a"
  (seq / "imgs").mkdir(parents=True)
  for i in range(2):
    Image.fromarray(np.full((40, 48, 3), 90, np.uint8)).save(seq / "imgs" / f"{i + 1:05d}.png")
  (seq / "groundtruth.txt").write_text("10,10,12,12\n11,10,12,12\n")
  (seq / "language.txt").write_text("the grey box\n")
  (root / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the"]) + "\n")
  return root


def _one_line(verb, err):
  assert err.count("\n") == 1 and err.startswith(f"satracker {verb}: "), err
  return err


def test_eval_mistakes_are_one_line_and_exit_2(tmp_path, capsys):
  # The mistakes of issue 25, as a user types them; each fails before the model is loaded and
  # leaves no --out folder behind.
  data = _synthetic_root(tmp_path / "data")
  pack = tmp_path / "pack"
  (pack / "annos" / "gt_rect").mkdir(parents=True)
  (pack / "annos" / "gt_rect" / "seq_a.txt").write_text("1,2,3,4\n")
  out = tmp_path / "out"
  cases = [
      (["--dataset", "synthetic", "--root", str(tmp_path / "nope")], "synthetic root folder missing"),
      (["--dataset", "synthetic", "--root", str(data), "--split", "val"], "no val/; choose --split test"),
      (["--dataset", "lasot", "--root", str(data)], "no lasot sequences found"),
      (["--dataset", "tnl2k", "--root", str(pack)], "annotation pack holds no frames"),
      (["--dataset", "synthetic", "--root", "ram://satracker-no-such-bucket/synthetic"],  # a bucket
       "ram://satracker-no-such-bucket/synthetic': synthetic root folder missing"),
      (["--dataset", "synthetic", "--root", str(data), "--checkpoint", str(tmp_path / "nope")],
       "nope"),
  ]
  for args, expected in cases:
    rc, printed, err = run_cli(["eval", *args, "--out", str(out), "--no-progress"], capsys)
    assert rc == 2 and expected in _one_line("eval", err), (args, err)
    assert printed == ""
  assert not out.exists() or not os.listdir(out)
  with pytest.raises(SystemExit) as missing:  # argparse's own: usage + the missing option, exit 2
    cli.main(["eval", "--dataset", "synthetic", "--out", str(out)])
  assert missing.value.code == 2 and "--root" in capsys.readouterr().err


def test_train_mistakes_are_one_line_and_exit_2(tmp_path, capsys):
  data = _synthetic_root(tmp_path / "data")
  numpy_input = "--config.data.backend=numpy"  # no TensorFlow import: the test stays quick
  cases = [
      # configs/base.py as shipped: no data roots.
      (["--config", "configs/base.py"], "data.datasets.lasot.root, data.datasets.otb99_lang.root, "
                                        "data.datasets.tnl2k.root are empty"),
      (["--config", "configs/synthetic.py", f"--config.data.datasets.synthetic.root={tmp_path}/nope"],
       "no such folder"),
      # A root without the split asked for: found at the first batch, still one line.
      (["--config", "configs/synthetic.py", f"--config.data.datasets.synthetic.root={data}",
        "--config.data.datasets.synthetic.split=val", numpy_input],
       "data.datasets.synthetic: " + f"{data}: holds the split folder(s) test/ but no val/"),
      (["--config", "configs/synthetic.py:langauge"], "defines: language, language_large, runlocal"),
  ]
  for i, (args, expected) in enumerate(cases):
    rc, _, err = run_cli(["train", *args, "--workdir", str(tmp_path / f"w{i}")], capsys)
    assert rc == 2 and expected in _one_line("train", err), (args, err)


def test_a_config_argument_the_config_does_not_define_is_refused_naming_those_it_does():
  with pytest.raises(config_utils.ConfigError) as typo:
    config_utils.load_config("configs/synthetic.py:langauge")
  assert str(typo.value) == ("--config configs/synthetic.py:langauge: synthetic.py has no argument "
                             "'langauge'; it defines: language, language_large, runlocal; did you "
                             "mean configs/synthetic.py:language?")
  with pytest.raises(config_utils.ConfigError, match="large.py takes no argument"):
    config_utils.load_config("configs/large.py:base")
  # Every argument a shipped config defines loads (and means something: not the default variant).
  for name in ("base", "tiny", "synthetic", "large"):
    module = __import__(f"configs.{name}", fromlist=["ARGS"])
    default = config_utils.config_to_json(config_utils.load_config(f"configs/{name}.py"))
    for arg in module.ARGS:
      variant = config_utils.config_to_json(config_utils.load_config(f"configs/{name}.py:{arg}"))
      assert variant != default or (name, arg) == ("base", "base"), (name, arg)


TINY = os.path.join(REPO, "configs", "tiny.py")


@pytest.mark.parametrize("argv,expected", [
    (["track", "--video", "/nope.mp4", "--box", "1,1,5,5", "--out", "o.gif"], "--video /nope.mp4: no such file"),
    (["track", "--video", "/nope.mp4", "--box", "1,1,5,5", "--out", "o.xyz"], "must end in .gif or .mp4"),
    (["export", "--checkpoint", "/nope", "--out", "m"], "/nope: no such file or folder"),
    (["export", "--config", TINY, "--batch", "0", "--out", "m"], "--batch '0': expected a whole number >= 1"),
    (["convert", "--vit", "/nope.pth", "--out", "x.npz"], "checkpoint not found: '/nope.pth'"),
    (["convert", "--out", "x.npz"], "give --vit and/or --bert"),
    (["bench", "track", "--config", "configs/nope.py"], "config file not found: 'configs/nope.py'"),
    (["bench", "track", "--frame-size", "100,100"], "--frame-size '100,100': expected WxH"),
    (["bench", "track", "--frames", "0"], "--frames '0': expected a whole number >= 1"),
    (["demo", "--seeds", "0", "--workdir", "w"], "--seeds 0: need at least 1"),
    (["demo", "--config", "configs/synthetic.py:langauge", "--workdir", "w"], "langauge"),
    (["smoke", "--config", TINY, "--batch", "0"], "--batch '0': expected a whole number >= 1"),
    (["analyze", "--results", "/nope", "--dataset", "otb", "--root", "/nope", "--out", "rep"],
     "'/nope': otb root folder missing"),
    (["synth", "--out", "d", "--size", "160,120"], "--size '160,120': expected WxH"),
    (["train", "--config", os.path.join(REPO, "configs", "base.py"), "--workdir", "w"],
     "data.datasets.lasot.root, data.datasets.otb99_lang.root, data.datasets.tnl2k.root are empty"),
    # The tf backend reads a bucket root (tests/test_bucket_data.py); the numpy one says so.
    (["train", "--config", os.path.join(REPO, "configs", "synthetic.py"), "--workdir", "w",
      "--config.data.datasets.synthetic.root=gs://bucket/synthetic", "--config.data.backend=numpy"],
     "root=gs://bucket/synthetic: data.backend=numpy reads a local or mounted folder only; "
     "data.backend=tf reads a bucket directly"),
], ids=lambda v: v[0] if isinstance(v, list) else None)
def test_every_verb_turns_a_mistake_into_one_line_exit_2_and_leaves_nothing(argv, expected, tmp_path,
                                                                              monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  assert cli.main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and err.startswith(f"satracker {argv[0]}: ") and expected in err, err
  assert os.listdir(tmp_path) == []  # no workdir, output folder or data left by a refused command


def test_a_synthetic_config_without_a_checkpoint_takes_the_vocabulary_of_the_data_set_it_reads(
    tmp_path, monkeypatch, capsys):
  """eval --config configs/synthetic.py (random weights) on a synthetic root tokenizes with that
  root's vocab.txt; track, which reads no data set, says in one line how to name one."""
  from satracker_jax.cli import common
  args = type("Args", (), {"checkpoint": "", "config": os.path.join(REPO, "configs", "synthetic.py")})()
  root = tmp_path / "synth"
  with pytest.raises(SystemExit, match=f"text.vocab_file {root}/vocab.txt: no such file"):
    common.load_model(args, [], needs_vocab=True, synthetic_root=str(root))
  root.mkdir()
  (root / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nred\n")
  config, _ = common.load_model(args, [], needs_vocab=True, synthetic_root=str(root))
  assert config.text.vocab_file == f"{root}/vocab.txt"
  with pytest.raises(SystemExit, match="a synthetic config's vocabulary is the one its data set"):
    common.load_model(args, [], needs_vocab=True)
  config, _ = common.load_model(args, [])  # export needs no vocabulary
  assert "{synthetic_root}" in config.text.vocab_file


def test_tensorflow_start_up_notices_stay_off_a_verbs_console():
  # Every verb sets the environment before TensorFlow can load; the oneDNN notice ("oneDNN custom
  # operations are on ...", behind absl's "All log messages before absl::InitializeLog()") ignores
  # TF_CPP_MIN_LOG_LEVEL and printed twice at the start of train, eval and bench data.
  code = ("from satracker_jax import cli\n"
          "try:\n  cli.main(['synth', '--help'])\nexcept SystemExit:\n  pass\n"
          "import tensorflow as tf\nprint(float(tf.constant(1.0) + 1.0))")
  env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip().endswith("2.0")
  for noise in ("oneDNN", "absl::InitializeLog", "I0000"):
    assert noise not in proc.stdout + proc.stderr, proc.stderr
