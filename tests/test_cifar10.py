"""The CPU CIFAR-10 recipe (flags/cifar10_cpu.flags) end to end on a small subset of the real images.

Slow, and skipped where ../shared/datasets/cifar10 is absent. The recipe's own settings (teacher, data
splits, augmentation, inherited children and finalists, the target) are kept; only the budget shrinks.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from acompress import data
from tests import test_binaries

CIFAR10 = os.path.join(os.path.dirname(test_binaries.REPO_ROOT), "shared", "datasets", "cifar10")
SUBSET = ["--max_examples=600", "--validation_fraction=0.01"]
TINY_BUDGET = ["--teacher_epochs=1", "--num_children=12", "--replicate_fraction=0.25", "--proxy_epochs=1",
               "--proxy_fraction=0.5", "--pack=4", "--groups_per_worker=0", "--embedding_epochs=3",
               "--embedding_min_steps_per_epoch=4", "--unlabeled_architectures=40", "--embedding_patience=3",
               "--search_steps=20", "--snapshot_every=5", "--rounds=1", "--num_finalists=2", "--finalist_epochs=1",
               "--target_ratio=4", "--max_accuracy_drop=0.5"]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.isdir(CIFAR10), reason=f"the CIFAR-10 images are not at {CIFAR10}")]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar10")
    output_dir, cache_dir = str(root / "run"), str(root / "cache")
    result = test_binaries.run_binary("pipeline", "--flagfile=flags/cifar10_cpu.flags", f"--dataset={CIFAR10}",
                                      f"--data_cache_dir={cache_dir}", *SUBSET, *TINY_BUDGET,
                                      f"--output_dir={output_dir}", timeout=1800)
    assert result.returncode == 0, test_binaries.describe(result)
    return {"output_dir": output_dir, "cache_dir": cache_dir, "result": result}


def test_the_recipe_compresses_the_cifar_teacher(run):
    out = run["output_dir"]
    report = test_binaries.read_json(os.path.join(out, "compressed", "report.json"))
    teacher, chosen = report["teacher"], report["chosen"]
    assert teacher["params"] == 1_178_666  # zoo cifar_cnn with the 10-class head
    assert chosen["ratio"] == pytest.approx(teacher["params"] / chosen["params"]) and chosen["ratio"] >= 4
    assert len(report["finalists"]) == 2
    assert report["recipes"] == {"labels": "inherit", "finalists": "inherit"}
    info = test_binaries.read_json(os.path.join(out, "corpus", "metadata.json"))["dataset"]["info"]
    assert info["sizes"] == {"train": 600, "validation": 500, "test": 10000}
    assert info["input_shape"] == [32, 32, 3] and info["augment"] == data.AUGMENT_CROP_FLIP
    assert json.loads(run["result"].stdout)["chosen_params"] == chosen["params"]


def test_the_saved_model_takes_raw_pixels_and_gives_the_reported_accuracy(run):
    config = data.DataConfig(name=CIFAR10, validation_fraction=0.01, max_examples=600,
                             cache_dir=run["cache_dir"])
    splits = data.load(config)
    norm = splits.info.normalisation
    raw = splits.x_test * np.asarray(norm.std, np.float32) + np.asarray(norm.mean, np.float32)
    loaded = tf.saved_model.load(os.path.join(run["output_dir"], "compressed", "saved_model"))
    serve = loaded.signatures["serving_default"]
    outputs = [serve(tf.constant(raw[i:i + 1000])) for i in range(0, len(raw), 1000)]
    probabilities = np.concatenate([next(iter(output.values())).numpy() for output in outputs])
    accuracy = float(np.mean(np.argmax(probabilities, axis=-1) == splits.y_test))
    report = test_binaries.read_json(os.path.join(run["output_dir"], "compressed", "report.json"))
    assert accuracy == pytest.approx(report["chosen"]["test_accuracy"], abs=1e-6)
