"""The pipeline binary end to end on a tiny budget, then resumed, then compressing again with a target."""

import json
import os
import shutil
import time

import numpy as np
import pytest
import tensorflow as tf

from acompress import data
from tests import test_binaries

TINY = ["--flagfile=flags/smoke.flags", "--embedding_epochs=3", "--embedding_min_steps_per_epoch=4",
        "--unlabeled_architectures=40", "--embedding_patience=3", "--search_steps=20", "--snapshot_every=5",
        "--rounds=2", "--refine_children=2", "--refine_epochs=1", "--num_finalists=2", "--finalist_epochs=1",
        "--min_ratio=2", "--max_accuracy_drop=0.5"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    output_dir = str(tmp_path_factory.mktemp("pipeline") / "run")
    start = time.perf_counter()
    result = test_binaries.run_binary("pipeline", *TINY, f"--output_dir={output_dir}")
    assert result.returncode == 0, test_binaries.describe(result)
    return {"output_dir": output_dir, "result": result, "seconds": time.perf_counter() - start}


def test_pipeline_writes_every_stage(run):
    out = run["output_dir"]
    for path in ("pipeline_config.json", "timings.json", "teacher/metrics.json", "corpus/metadata.json",
                 "corpus_summary.json", "embedding/embedding.keras", "embedding/metrics.json",
                 "compressed/report.json", "compressed/model.keras", "compressed/saved_model/saved_model.pb",
                 "compressed/candidates.json", "compressed/finalists.jsonl"):
        assert os.path.exists(os.path.join(out, path)), path
    with open(os.path.join(out, "compressed", "report.png"), "rb") as handle:
        assert handle.read(8) == test_binaries.PNG_SIGNATURE
    timings = test_binaries.read_json(os.path.join(out, "timings.json"))
    assert set(timings) >= {"teacher", "corpus", "embedding", "compress"}


def test_long_stages_report_progress(run):
    # Refinement trains children for minutes on real data: it says how far it is, as the corpus does.
    log = run["result"].stderr
    assert "refinement 1 children done: 2 children in" in log, test_binaries.describe(run["result"])
    assert "children done:" in log and "embedding done:" in log and "finalist 1/2" in log


def test_report_is_consistent(run):
    out = run["output_dir"]
    report = test_binaries.read_json(os.path.join(out, "compressed", "report.json"))
    printed = json.loads(run["result"].stdout)
    teacher, chosen = report["teacher"], report["chosen"]
    assert chosen["ratio"] == pytest.approx(teacher["params"] / chosen["params"])
    assert chosen["ratio"] >= 2  # the ladder starts at --min_ratio
    assert printed["chosen_params"] == chosen["params"] and printed["ratio"] == round(chosen["ratio"], 2)
    assert len(report["finalists"]) == 2
    assert chosen["spec_hash"] in {f["spec_hash"] for f in report["finalists"]}
    for finalist in report["finalists"]:
        assert 0.0 <= finalist["test_accuracy"] <= 1.0 and "predicted_accuracy" in finalist
    assert len(report["searches"]) == 2 and report["budget"]["refinement_children"] >= 1
    assert report["budget"]["child_epochs"] == report["budget"]["corpus_child_epochs"] + \
        2 * report["budget"]["refinement_children"]
    assert report["export"]["max_abs_difference"] <= 1e-5
    embedding_metrics = test_binaries.read_json(os.path.join(out, "embedding", "metrics.json"))
    assert embedding_metrics["heldout"]["validity"]["0.3"]["valid_masked"] == 1.0


def test_saved_model_takes_raw_inputs_and_matches_the_report(run):
    out = run["output_dir"]
    splits = data.load(data.DataConfig(seed=0))
    loaded = tf.saved_model.load(os.path.join(out, "compressed", "saved_model"))
    norm = splits.info.normalisation  # splits hold normalised images; the exported network takes raw ones
    raw = splits.x_test * np.asarray(norm.std, np.float32) + np.asarray(norm.mean, np.float32)
    predictions = np.argmax(loaded.serve(tf.constant(raw)).numpy(), axis=-1)
    accuracy = float(np.mean(predictions == splits.y_test))
    report = test_binaries.read_json(os.path.join(out, "compressed", "report.json"))
    assert accuracy == pytest.approx(report["chosen"]["test_accuracy"], abs=1e-6)
    # What TF Serving and saved_model_cli call: the serving_default signature, float32 images of any batch size.
    serving = loaded.signatures["serving_default"]
    (spec,) = serving.structured_input_signature[1].values()
    assert spec.dtype == tf.float32 and spec.shape.as_list() == [None, *splits.info.input_shape]
    (output,) = serving(tf.constant(raw[:7])).values()
    np.testing.assert_allclose(output.numpy(), loaded.serve(tf.constant(raw[:7])).numpy(), rtol=1e-6, atol=1e-7)


def test_every_finalist_on_the_trained_front_is_exported_and_serves_its_reported_accuracy(run):
    out = run["output_dir"]
    report = test_binaries.read_json(os.path.join(out, "compressed", "report.json"))
    front, chosen = report["front"], report["chosen"]
    assert front and [e["params"] for e in front] == sorted(e["params"] for e in front)
    accuracies = [e["val_accuracy"] for e in front]
    assert all(a < b for a, b in zip(accuracies, accuracies[1:]))  # each larger one buys accuracy
    trained = {f["spec_hash"]: f for f in report["finalists"] if f["status"] == "ok"}
    assert {e["spec_hash"] for e in front} <= set(trained)
    for finalist in trained.values():  # off the front: a smaller or equal finalist is at least as accurate
        if finalist["spec_hash"] not in {e["spec_hash"] for e in front}:
            assert any(e["params"] <= finalist["params"] and e["val_accuracy"] >= finalist["val_accuracy"]
                       for e in front)
    (mine,) = [e for e in front if e["chosen"]]
    assert mine["spec_hash"] == chosen["spec_hash"] and mine["saved_model"] == report["export"]["saved_model"]
    splits = data.load(data.DataConfig(seed=0))
    norm = splits.info.normalisation
    raw = splits.x_test * np.asarray(norm.std, np.float32) + np.asarray(norm.mean, np.float32)
    for entry in front:
        assert entry["ratio"] == pytest.approx(report["teacher"]["params"] / entry["params"])
        assert entry["test_accuracy"] == trained[entry["spec_hash"]]["test_accuracy"]
        if not entry["chosen"]:
            assert os.path.basename(os.path.dirname(entry["saved_model"])) == \
                f"{entry['ratio']:.1f}x-{entry['spec_hash']}"
        loaded = tf.saved_model.load(entry["saved_model"])
        accuracy = float(np.mean(np.argmax(loaded.serve(tf.constant(raw)).numpy(), -1) == splits.y_test))
        assert accuracy == pytest.approx(entry["test_accuracy"], abs=1e-6)
        assert os.path.exists(entry["keras"])
    # Every trained finalist's model is kept, so an interrupted run never trains one again to export it.
    for spec_hash in trained:
        assert os.path.exists(os.path.join(out, "compressed", "finalists", f"{spec_hash}.keras"))


def test_rerun_reuses_every_stage(run):
    start = time.perf_counter()
    result = test_binaries.run_binary("pipeline", *TINY, f"--output_dir={run['output_dir']}")
    assert result.returncode == 0, test_binaries.describe(result)
    assert json.loads(result.stdout)["chosen_params"] == json.loads(run["result"].stdout)["chosen_params"]
    assert "reusing" in result.stderr
    assert time.perf_counter() - start < run["seconds"]


def compressed_listing(run):
    compressed = os.path.join(run["output_dir"], "compressed")
    return {name: os.stat(os.path.join(compressed, name)).st_mtime_ns for name in os.listdir(compressed)}


@pytest.fixture(scope="module")
def compress_refusals(run, tmp_path_factory):
    """The compress binary's refusals below, in one process (`run_binary_cases`): another target on the
    pipeline's run directory; an unreachable one with --overwrite on a copy of it; no embedding."""
    before = compressed_listing(run)
    copy = str(tmp_path_factory.mktemp("unreachable") / "run")
    shutil.copytree(run["output_dir"], copy)
    cases = [[*TINY, f"--output_dir={run['output_dir']}", "--max_accuracy_drop=0.4"],
             [*TINY, f"--output_dir={copy}", "--target_ratio=100000", "--overwrite"],
             [*TINY, f"--output_dir={tmp_path_factory.mktemp('no_embedding')}", "--corpus_dir=testdata/digits_corpus"]]
    replace, unreachable, no_embedding = test_binaries.run_binary_cases("compress", cases,
                                                                        tmp_path_factory.mktemp("refusals"))
    return {"replace": (replace, before), "unreachable": unreachable, "no_embedding": no_embedding}


def test_compress_refuses_to_replace_the_pipelines_results(run, compress_refusals):
    result, before = compress_refusals["replace"]
    test_binaries.assert_one_line_error(result, "made with other settings (differs in: compress)")
    assert "--overwrite" in result.stderr
    assert compressed_listing(run) == before


def test_unreachable_target_is_a_one_line_error(compress_refusals):
    # --overwrite: compressed/ holds the pipeline's results, made with another target.
    test_binaries.assert_one_line_error(compress_refusals["unreachable"], "no candidate reaches --target_ratio=100000")


@pytest.mark.slow  # two more compressions (80 s); .ci/run's slow step runs it
@pytest.mark.parametrize("ablation", ["no_embedding", "no_refinement"])
def test_ablations_write_beside_the_full_method_from_the_same_corpus(run, ablation):
    out = run["output_dir"]
    full = os.path.join(out, "compressed")

    def listing():
        return {name: os.stat(os.path.join(full, name)).st_mtime_ns for name in os.listdir(full)}

    before = listing()
    result = test_binaries.run_binary("compress", *TINY, f"--output_dir={out}", f"--ablation={ablation}")
    assert result.returncode == 0, test_binaries.describe(result)
    report = test_binaries.read_json(os.path.join(out, f"compressed_{ablation}", "report.json"))
    assert report["method"] == f"architecture_compression/{ablation}"
    assert listing() == before  # the full method's results are left as they were
    finalists = {f["spec_hash"] for f in report["finalists"]}
    assert len(finalists) == 2 and report["chosen"]["spec_hash"] in finalists
    if ablation == "no_embedding":  # no search: every finalist is a corpus child
        from acompress import corpus
        children = {r.spec_hash for r in corpus.read_corpus(os.path.join(out, "corpus")).ok()}
        assert finalists <= children and report["searches"] == []
        # Its budget is the corpus: no child was labelled for it.
        assert report["budget"]["refinement_children"] == 0
        assert report["budget"]["child_epochs"] == report["budget"]["corpus_child_epochs"]
    else:
        assert len(report["searches"]) == 1 and report["budget"]["refinement_children"] == 0


def test_compress_without_an_embedding_says_what_to_run(compress_refusals):
    test_binaries.assert_one_line_error(compress_refusals["no_embedding"], "acompress-train-embedding")


def assert_same_choice(first_dir: str, second_dir: str) -> None:
    """Both runs chose the same network with the same numbers, from the same finalists and teacher."""
    first = test_binaries.read_json(os.path.join(first_dir, "compressed", "report.json"))
    second = test_binaries.read_json(os.path.join(second_dir, "compressed", "report.json"))
    assert second["chosen"]["spec_hash"] == first["chosen"]["spec_hash"]
    for key in ("params", "val_accuracy", "test_accuracy"):
        assert second["chosen"][key] == first["chosen"][key], key
    assert [f["spec_hash"] for f in second["finalists"]] == [f["spec_hash"] for f in first["finalists"]]
    assert [f["val_accuracy"] for f in second["finalists"]] == [f["val_accuracy"] for f in first["finalists"]]
    assert second["teacher"]["test_accuracy"] == first["teacher"]["test_accuracy"]


@pytest.mark.slow
def test_the_same_command_in_a_fresh_directory_gives_the_same_network(run, tmp_path):
    """Reproducible on one machine: every stage again from nothing, the same chosen network and numbers.

    The second run trains its children in worker processes (replaced after every group), the first in
    its own process: that is not supposed to change anything either."""
    output_dir = str(tmp_path / "again")
    result = test_binaries.run_binary("pipeline", *TINY, "--groups_per_worker=1", f"--output_dir={output_dir}")
    assert result.returncode == 0, test_binaries.describe(result)
    assert_same_choice(run["output_dir"], output_dir)


# The main command's recipe (flags/digits.flags) on the tiny budget: supernet labels, the teacher's skeleton.
TINY_SUPERNET = [*TINY, "--proxy_init=supernet", "--proxy_epochs=2", "--proxy_learning_rate=0.001",
                 "--recalibrate_batches=4", "--p_remove=0", "--search_skeleton=teacher"]


@pytest.mark.slow
def test_the_supernet_recipe_twice_from_nothing_gives_the_same_network(tmp_path):
    """The default recipe's reproducibility: supernet training, masked labels, search and finalists twice."""
    dirs = [str(tmp_path / name) for name in ("first", "second")]
    for output_dir in dirs:
        result = test_binaries.run_binary("pipeline", *TINY_SUPERNET, f"--output_dir={output_dir}")
        assert result.returncode == 0, test_binaries.describe(result)
    first_corpus = test_binaries.read_json(os.path.join(dirs[0], "corpus", "metadata.json"))
    assert first_corpus["proxy"]["init"] == "supernet"
    assert_same_choice(*dirs)
