"""`satracker analyze` and its Python API, end to end on tiny fixtures."""
import csv
import dataclasses
import json
import os
import re
import sys
import types

import numpy as np
import pytest

from satracker_jax.evaluation import analyze, results_io


@dataclasses.dataclass
class FakeSequence:  # the fields of data_pipelines.readers.Sequence that the metrics read
  name: str
  boxes: np.ndarray
  dataset: str = "tnl2k"
  full_occlusion: np.ndarray | None = None
  out_of_view: np.ndarray | None = None


def make_sequences():
  # seq_a: 10 frames of a 100x100 box; seq_b: 5 frames of a 40x20 box moving right.
  a = np.tile([50.0, 50.0, 100.0, 100.0], (10, 1))
  b = np.array([[10.0 + 3 * i, 20.0, 40.0, 20.0] for i in range(5)])
  return [FakeSequence("seq_a", a), FakeSequence("seq_b", b)]


def write_trackers(root, sequences):
  perfect, shifted = os.path.join(root, "perfect"), os.path.join(root, "shifted")
  for seq in sequences:
    results_io.write_results(perfect, seq.name, seq.boxes, np.full(len(seq.boxes), 0.01))
    results_io.write_results(shifted, seq.name, seq.boxes + [10.0, 0.0, 0.0, 0.0])
  return {"perfect": perfect, "shifted": shifted}


def test_analyze_writes_every_file(tmp_path):
  sequences = make_sequences()
  results = write_trackers(str(tmp_path), sequences)
  out = str(tmp_path / "report")
  summary = analyze.analyze(sequences, results, "tnl2k", out_dir=out)

  with open(os.path.join(out, "metrics.json")) as f:
    on_disk = json.load(f)
  assert on_disk == summary  # JSON keeps floats exactly
  assert set(on_disk) == {"perfect", "shifted"}
  for m in on_disk.values():
    assert set(m) == {"toolkit", "auc", "op50", "op75", "precision", "norm_precision",
                      "norm_precision_auc", "num_sequences", "repaired_rows", "padded_rows"}
    assert m["num_sequences"] == 2 and m["toolkit"] == "pytracking"
  # Perfect: AUC 20/21 (IoU > 1.0 never holds), P = NP = 1.
  assert on_disk["perfect"]["auc"] == pytest.approx(20 / 21, abs=1e-12)
  assert on_disk["perfect"]["precision"] == 1.0 and on_disk["perfect"]["norm_precision"] == 1.0
  # Shifted 10 px: seq_a AUC 17.3/21 (see test_metrics). seq_b (40x20 boxes, 5 frames): IoU of
  # frames 1..4 = 30*20 / (800 + 800 - 600) = 0.6 > t for t <= 0.55 (12 thresholds), frame 0
  # succeeds at 20 -> AUC = (12 + 8 * 0.2) / 21 = 13.6 / 21. Mean (17.3 + 13.6) / 42.
  assert on_disk["shifted"]["auc"] == pytest.approx((17.3 + 13.6) / 42, abs=1e-12)
  # Centre errors are 10 px <= 20 px: P = 1. Normalised: seq_a 0.1, seq_b 10/40 = 0.25 > 0.20,
  # so seq_b only hits with frame 0 (1/5): NP = (1 + 0.2) / 2.
  assert on_disk["shifted"]["precision"] == 1.0
  assert on_disk["shifted"]["norm_precision"] == pytest.approx(0.6, abs=1e-12)
  # OP50 / OP75: success at IoU > 0.5 / > 0.75. seq_a's IoU 9/11 passes both; seq_b's 0.6 only
  # passes 0.5, so its OP75 is frame 0 alone (1/5): OP75 = (1 + 0.2) / 2.
  assert on_disk["perfect"]["op50"] == on_disk["perfect"]["op75"] == 1.0
  assert on_disk["shifted"]["op50"] == 1.0
  assert on_disk["shifted"]["op75"] == pytest.approx(0.6, abs=1e-12)

  with open(os.path.join(out, "per_sequence.csv")) as f:
    rows = list(csv.DictReader(f))
  assert [(r["tracker"], r["sequence"]) for r in rows] == [
      ("perfect", "seq_a"), ("perfect", "seq_b"), ("shifted", "seq_a"), ("shifted", "seq_b")]
  assert float(rows[3]["auc"]) == pytest.approx(13.6 / 21, abs=1e-12)
  assert (float(rows[3]["op50"]), float(rows[3]["op75"])) == (1.0, pytest.approx(0.2, abs=1e-12))
  assert rows[1]["num_frames"] == "5" and rows[1]["num_valid_frames"] == "5"

  for stem in ("success", "precision", "norm_precision"):
    with open(os.path.join(out, f"{stem}.png"), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"

  table = open(os.path.join(out, "results.md")).read()
  header = [cell.strip() for cell in table.splitlines()[2].split("|")[1:-1]]
  # pytracking's order, then the TNL2K paper's NP-AUC; one row per tracker and toolkit.
  assert header == ["Tracker", "Toolkit", "AUC", "OP50", "OP75", "P", "NP", "NP-AUC", "Sequences"]
  assert "95.24" in table            # 100 * 20/21
  assert "73.57" in table            # 100 * 30.9/42
  assert "60.00" in table            # NP of the shifted tracker
  # On TNL2K the tnl2k-matlab rows stand beside pytracking's, in files of their own; these
  # sequences carry no absent flags, and the report says what that means.
  rows = [[c.strip() for c in line.split("|")[1:3]] for line in table.splitlines()[4:8]]
  assert rows == [["perfect", "pytracking"], ["perfect", "tnl2k-matlab"],
                  ["shifted", "pytracking"], ["shifted", "tnl2k-matlab"]]
  with open(os.path.join(out, "metrics.tnl2k-matlab.json")) as f:
    assert {m["toolkit"] for m in json.load(f).values()} == {"tnl2k-matlab"}
  assert os.path.isfile(os.path.join(out, "success.tnl2k-matlab.png"))
  assert "No absent flags for 2 of 2 sequences: tnl2k-matlab counted every frame" in table


def test_missing_result_file_is_a_clear_error(tmp_path):
  sequences = make_sequences()
  results = write_trackers(str(tmp_path), sequences)
  missing = os.path.join(results["shifted"], "seq_b.txt")
  os.remove(missing)
  with pytest.raises(FileNotFoundError, match="seq_b.txt"):
    analyze.analyze(sequences, results, "tnl2k")
  # --skip-missing drops the sequence for every tracker, so both compare on seq_a only.
  summary = analyze.analyze(sequences, results, "tnl2k", skip_missing=True)
  assert summary["perfect"]["num_sequences"] == summary["shifted"]["num_sequences"] == 1
  assert summary["shifted"]["auc"] == pytest.approx(17.3 / 21, abs=1e-12)


def test_missing_results_folder_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere"):
    analyze.analyze(make_sequences(), {"x": str(tmp_path / "nowhere")}, "tnl2k")


def test_nan_result_line_names_file_and_line(tmp_path):
  sequences = make_sequences()
  results = write_trackers(str(tmp_path), sequences)
  path = os.path.join(results["shifted"], "seq_a.txt")
  lines = open(path).read().splitlines()
  lines[3] = "nan\tnan\tnan\tnan"
  open(path, "w").write("\n".join(lines) + "\n")
  with pytest.raises(ValueError, match=f"{path}:4:"):
    analyze.analyze(sequences, results, "tnl2k")


def test_lasot_short_result_is_an_error(tmp_path):
  seq = FakeSequence("cat-1", np.tile([5.0, 5.0, 10.0, 10.0], (4, 1)), "lasot",
                     np.zeros(4, bool), np.zeros(4, bool))
  results_io.write_results(str(tmp_path / "t"), "cat-1", seq.boxes[:3])
  with pytest.raises(ValueError, match="cat-1.txt"):
    analyze.analyze([seq], {"t": str(tmp_path / "t")}, "lasot")
  # The same file is padded elsewhere.
  assert analyze.analyze([seq], {"t": str(tmp_path / "t")}, "tnl2k")["t"]["num_sequences"] == 1


def test_parse_results_arg():
  assert analyze.parse_results_arg(["a=/x/y", "/p/q/ostrack/"]) == {"a": "/x/y", "ostrack": "/p/q/ostrack/"}
  with pytest.raises(ValueError, match="twice"):
    analyze.parse_results_arg(["a=/x", "a=/y"])


def run_cli(argv):
  from satracker_jax import cli
  return cli.main(argv)


def test_cli_with_a_stub_reader(tmp_path, monkeypatch, capsys):
  # The verb end to end, with the dataset reader replaced by a stub returning fixed sequences.
  sequences = make_sequences()
  results = write_trackers(str(tmp_path), sequences)
  calls = []

  def load_dataset(name, root, split, **kwargs):
    calls.append((name, root, split, kwargs))
    return sequences

  stub = types.ModuleType("data_pipelines.readers")
  stub.load_dataset = load_dataset
  monkeypatch.setitem(sys.modules, "data_pipelines.readers", stub)
  out = tmp_path / "report"
  rc = run_cli(["analyze", "--dataset", "tnl2k", "--root", str(tmp_path), "--results",
                f"perfect={results['perfect']}", f"shifted={results['shifted']}", "--out", str(out)])
  # Scoring reads annotations only: the verb never asks the reader for frames.
  assert rc == 0 and calls == [("tnl2k", str(tmp_path), "test", {"annotations_only": True})]
  printed = capsys.readouterr().out
  assert "95.24" in printed and "shifted" in printed
  for name in ("metrics.json", "per_sequence.csv", "results.md", "success.png", "precision.png",
               "norm_precision.png"):
    assert (out / name).is_file(), name


def write_tnl2k_fixture(root, sequences):
  from PIL import Image
  for seq in sequences:
    seq_dir = os.path.join(root, seq.name)
    os.makedirs(os.path.join(seq_dir, "imgs"))
    for i in range(len(seq.boxes)):
      Image.new("RGB", (200, 200), (i * 20, 100, 50)).save(os.path.join(seq_dir, "imgs", f"{i + 1:05d}.jpg"))
    np.savetxt(os.path.join(seq_dir, "groundtruth.txt"), seq.boxes, fmt="%d", delimiter=",")
    with open(os.path.join(seq_dir, "language.txt"), "w") as f:
      f.write("the grey square\n")


def test_cli_on_a_tnl2k_fixture(tmp_path):
  readers = pytest.importorskip("data_pipelines.readers")
  sequences = make_sequences()
  data_root = str(tmp_path / "TNL2K")
  write_tnl2k_fixture(data_root, sequences)
  loaded = readers.load_dataset("tnl2k", data_root, "test")
  assert sorted(s.name for s in loaded) == ["seq_a", "seq_b"]
  results = write_trackers(str(tmp_path), sequences)
  out = tmp_path / "report"
  rc = run_cli(["analyze", "--dataset", "tnl2k", "--root", data_root, "--results",
                f"perfect={results['perfect']}", f"shifted={results['shifted']}", "--out", str(out)])
  assert rc == 0
  on_disk = json.loads((out / "metrics.json").read_text())
  assert on_disk["perfect"]["auc"] == pytest.approx(20 / 21, abs=1e-12)
  assert on_disk["shifted"]["auc"] == pytest.approx((17.3 + 13.6) / 42, abs=1e-12)
  assert on_disk["shifted"]["num_sequences"] == 2


def test_cli_on_a_root_without_image_folders(tmp_path):
  # Comparing published raw results needs the annotations only: a TNL2K root without imgs/.
  sequences = make_sequences()
  data_root = tmp_path / "TNL2K_annotations"
  for seq in sequences:
    (data_root / seq.name).mkdir(parents=True)
    np.savetxt(data_root / seq.name / "groundtruth.txt", seq.boxes, fmt="%d", delimiter=",")
    (data_root / seq.name / "language.txt").write_text("the grey square\n")
  results = write_trackers(str(tmp_path), sequences)
  out = tmp_path / "report"
  rc = run_cli(["analyze", "--dataset", "tnl2k", "--root", str(data_root), "--results",
                f"shifted={results['shifted']}", "--out", str(out)])
  assert rc == 0
  on_disk = json.loads((out / "metrics.json").read_text())
  assert on_disk["shifted"]["auc"] == pytest.approx((17.3 + 13.6) / 42, abs=1e-12)


def test_result_files_in_either_multi_target_spelling(tmp_path):
  # pytracking writes Jogging_1.txt, pysot and the OTB toolkit Jogging-1.txt.
  seq = FakeSequence("Jogging_1", np.tile([5.0, 5.0, 10.0, 10.0], (3, 1)), "otb")
  results_io.write_results(str(tmp_path / "pysot"), "Jogging-1", seq.boxes)
  assert analyze.analyze([seq], {"t": str(tmp_path / "pysot")}, "otb")["t"]["num_sequences"] == 1


def test_cli_errors_are_one_line(tmp_path, capsys):
  assert run_cli(["analyze", "--dataset", "tnl2k", "--root", str(tmp_path), "--results",
                  f"x={tmp_path}", "--out", str(tmp_path / "out")]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and re.match(r"satracker analyze: .*no tnl2k sequences found", err), err


def test_grounding_breakdown_by_mode_on_generated_videos(tmp_path):
  # `--grounding` on a `satracker synth` set: a tracker whose frame-0 box is the target's is all
  # hits; one that answers with the target's first twin misses exactly the videos with a twin,
  # each counted as "twin"; a box off in a corner is "other". Direction videos (not resolvable
  # from one frame) are left out.
  synthetic = pytest.importorskip("data_pipelines.synthetic")
  readers = pytest.importorskip("data_pipelines.readers")
  root = str(tmp_path / "synth")
  synthetic.generate(root, 10, seed=3, frames=2, size=(96, 72), test_sequences=10, progress=False,
                     modes={"absolute": 1, "attribute": 1, "direction": 1})
  sequences = readers.load_dataset("synthetic", root, "test")
  attributes = {s.name: json.loads(open(os.path.join(root, "test", s.name, "attributes.json")).read())
                for s in sequences}
  single = [s for s in sequences if attributes[s.name]["single_frame"]]
  with_twin = [s for s in single if attributes[s.name]["frame0_boxes"]["twins"]]
  assert 0 < len(with_twin) < len(single) < len(sequences)  # the seed gives all three kinds
  dirs = {n: str(tmp_path / n) for n in ("right", "twin", "corner")}
  for s in sequences:
    twins = attributes[s.name]["frame0_boxes"]["twins"]
    results_io.write_results(dirs["right"], s.name, s.boxes)
    results_io.write_results(dirs["twin"], s.name, np.array([twins[0]] if twins else s.boxes[:1], float))
    results_io.write_results(dirs["corner"], s.name, np.array([[0.0, 0.0, 2.0, 2.0]]))
  out = tmp_path / "report"
  rc = run_cli(["analyze", "--dataset", "synthetic", "--root", root, "--grounding", "--out",
                str(out), "--results"] + [f"{n}={d}" for n, d in dirs.items()])
  assert rc == 0
  table = json.loads((out / "grounding_by_mode.json").read_text())
  assert set(table["right"]) == {"absolute", "attribute", "all"}
  assert table["right"]["all"]["videos"] == table["right"]["all"]["hit"] == len(single)
  assert table["twin"]["all"]["twin"] == len(with_twin)
  assert table["twin"]["all"]["hit"] == len(single) - len(with_twin)
  assert table["corner"]["all"]["other"] == len(single)
  chance = np.mean([1 / (1 + len(attributes[s.name]["frame0_boxes"]["twins"])) for s in with_twin])
  assert table["right"]["all"]["twin_chance"] == pytest.approx(chance)
  assert table["right"]["attribute"]["twin_chance"] is None
  assert (out / "grounding_by_mode.png").stat().st_size > 0
  assert "| twin | absolute |" in (out / "grounding_by_mode.md").read_text()


def test_grounding_breakdown_needs_synthetic_data(tmp_path, capsys):
  assert run_cli(["analyze", "--dataset", "tnl2k", "--root", str(tmp_path), "--grounding",
                  "--results", f"x={tmp_path}", "--out", str(tmp_path / "out")]) == 2
  assert "--grounding needs --dataset synthetic" in capsys.readouterr().err


def _capture_figures(monkeypatch):
  """{file name: Figure} of every plot written, as drawn."""
  from satracker_jax.evaluation import plots
  figures, savefig = {}, plots.Figure.savefig

  def capture(fig, path, **kwargs):
    figures[os.path.basename(path)] = fig
    return savefig(fig, path, **kwargs)

  monkeypatch.setattr(plots.Figure, "savefig", capture)
  return figures


def test_a_tracker_keeps_its_colour_in_every_plot_and_titles_name_the_run(tmp_path, monkeypatch,
                                                                         capsys):
  """Ranks differ between plots (boxes of the right size 25 px off: good overlap, poor precision;
  centred boxes twice too big: the reverse), colours do not. Titles name the data set, split,
  protocol (as eval recorded it) and toolkit."""
  sequences = make_sequences()
  results = {"offset": str(tmp_path / "offset"), "big": str(tmp_path / "big")}
  for seq in sequences:
    b = seq.boxes
    results_io.write_results(results["offset"], seq.name, b + [25.0, 0.0, 0.0, 0.0])
    results_io.write_results(results["big"], seq.name, np.concatenate([b[:, :2] - b[:, 2:] / 2,
                                                                        2 * b[:, 2:]], axis=1))
  for d in results.values():
    with open(os.path.join(d, "provenance.json"), "w") as f:
      json.dump({"sequences": {s.name: {"protocol": "nl"} for s in sequences}}, f)
  stub = types.ModuleType("data_pipelines.readers")
  stub.load_dataset = lambda name, root, split, **kwargs: sequences
  monkeypatch.setitem(sys.modules, "data_pipelines.readers", stub)
  figures = _capture_figures(monkeypatch)
  rc = run_cli(["analyze", "--dataset", "tnl2k", "--root", str(tmp_path), "--results",
                f"offset={results['offset']}", f"big={results['big']}", "--out",
                str(tmp_path / "report")])
  assert rc == 0
  lines = {name: {line.get_label().split("] ")[1]: line.get_color()
                  for line in figures[f"{name}.png"].axes[0].get_lines()}
           for name in ("success", "precision", "norm_precision")}
  first = {name: figures[f"{name}.png"].axes[0].get_lines()[0].get_label() for name in lines}
  assert first["success"].endswith("offset") and first["precision"].endswith("big")  # ranks differ
  assert lines["success"] == lines["precision"] == lines["norm_precision"]
  assert lines["success"]["offset"] != lines["success"]["big"]
  # The TNL2K toolkit's plots (metrics.tnl2k-matlab.json's) use the same colours.
  matlab = {line.get_label().split("] ")[1]: line.get_color()
            for line in figures["success.tnl2k-matlab.png"].axes[0].get_lines()}
  assert matlab == lines["success"]
  title = figures["success.png"].axes[0].get_title()
  for words in ("TNL2K test split", "protocol nl (sentence only)", "toolkit pytracking"):
    assert words in title, title
  assert "toolkit tnl2k-matlab" in figures["success.tnl2k-matlab.png"].axes[0].get_title()


def test_report_titles():
  assert analyze.report_title("otb", "test", "nl_bb") == \
      "OTB-2015, all sequences, protocol nl_bb (first box + sentence)"  # no "test": one split
  assert analyze.report_title("lasot", "test", "nl+masked_text") == \
      "LaSOT test split, protocol nl (sentence only), sentence masked"
  assert analyze.report_title("got10k", "val") == "GOT-10k val split, protocol not recorded"


def test_attribute_and_grounding_bars_take_the_report_colours(tmp_path, monkeypatch):
  from satracker_jax.evaluation import plots
  figures = _capture_figures(monkeypatch)
  colors = plots.tracker_colors(["b", "a"])
  rows = [{"short": "OCC", "num_sequences": 1, "auc": 0.5}]
  plots.plot_attributes({"a": rows, "b": rows}, str(tmp_path / "att.png"), colors=colors)
  row = {"videos": 1, "hit": 1, "twin_chance": None}
  plots.plot_grounding_by_mode({"a": {"all": row}, "b": {"all": row}}, str(tmp_path / "g.png"),
                               colors=colors)
  for name in ("att.png", "g.png"):
    bars = {c.get_label(): c.patches[0].get_facecolor()[:3]
            for c in figures[name].axes[0].containers}
    assert bars == {"a": colors["a"][:3], "b": colors["b"][:3]}, name
  assert "(1 video)" in figures["g.png"].axes[0].get_xticklabels()[0].get_text()


def test_skipped_sequences_are_named(tmp_path, monkeypatch, capsys):
  sequences = make_sequences()
  results = write_trackers(str(tmp_path), sequences)
  os.remove(results_io.results_path(results["shifted"], "seq_b"))
  stub = types.ModuleType("data_pipelines.readers")
  stub.load_dataset = lambda name, root, split, **kwargs: sequences
  monkeypatch.setitem(sys.modules, "data_pipelines.readers", stub)
  rc = run_cli(["analyze", "--dataset", "tnl2k", "--root", str(tmp_path), "--skip-missing",
                "--results"] + [f"{n}={d}" for n, d in results.items()] +
               ["--out", str(tmp_path / "report")])
  assert rc == 0
  assert "skipped 1 sequence with missing results: seq_b\n" in capsys.readouterr().out


def test_an_empty_result_file_is_scored_with_a_warning_that_says_so(tmp_path, capsys):
  sequences = make_sequences()
  results = write_trackers(str(tmp_path), sequences)
  open(results_io.results_path(results["shifted"], "seq_b"), "w").close()
  report = analyze.evaluate(sequences, results, "tnl2k")
  assert "seq_b.txt: empty result file; scored as 5 zero rows" in capsys.readouterr().err
  assert any("empty result file" in w for w in report.warnings)
