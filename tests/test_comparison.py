"""The comparison of methods: reading results, the table, the figure, and the compare binary."""

import json
import os
import subprocess
import sys

import pytest

from acompress import comparison
from tests import test_binaries

TEACHER = {"params": 100000, "test_accuracy": 0.99, "val_accuracy": 0.98, "flops": 1}


def write_result(directory, method, seed, params, test_accuracy, epochs=100, seconds=60.0, name="result.json"):
    os.makedirs(os.path.dirname(os.path.join(directory, name)), exist_ok=True)
    result = {"method": method, "seed": seed, "teacher": TEACHER, "budget": {"child_epochs": epochs,
                                                                              "wall_seconds": seconds},
              "chosen": {"params": params, "flops": params, "test_accuracy": test_accuracy, "val_accuracy": 0.97}}
    with open(os.path.join(directory, name), "w") as handle:
        json.dump(result, handle)
    return directory


def test_rows_summary_and_markdown(tmp_path):
    paths = [write_result(str(tmp_path / "ac0"), "architecture_compression", 0, 2000, 0.985,
                          name=os.path.join("compressed", "report.json")),
             write_result(str(tmp_path / "ac1"), "architecture_compression", 1, 2500, 0.97,
                          name=os.path.join("compressed", "report.json")),
             write_result(str(tmp_path / "rs0"), "random", 0, 5000, 0.99)]
    rows = comparison.collect(paths, max_drop=0.01)
    assert [r["ratio"] for r in rows] == [50.0, 40.0, 20.0]
    assert [r["within_drop"] for r in rows] == [True, False, True]
    summary = comparison.summarise(rows)
    assert summary[0]["method"] == "architecture_compression"
    assert summary[0]["ratio_within_drop"]["mean"] == pytest.approx(50.0)
    assert summary[0]["ratio"]["mean"] == pytest.approx(45.0) and summary[0]["within_drop"] == 1
    table = comparison.markdown(summary, 0.01)
    # Ratios 50x and 40x: the sample standard deviation is 7.07 (the population one, 5.0, understates it).
    assert summary[0]["ratio"]["std"] == pytest.approx(50 ** 0.5)
    assert "| architecture_compression | 2 | 1/2 | 50.0x | 45.0x ± 7.1 |" in table
    assert "| random | 1 | 1/1 | 20.0x |" in table and "sample standard deviation" in table
    assert summary[-1]["ratio"]["std"] is None  # one run has no spread
    runs = comparison.runs_markdown(rows)
    assert runs.count("| architecture_compression |") == 2 and runs.count("| random |") == 1


def test_mismatched_teachers_and_missing_results_are_errors(tmp_path):
    good = write_result(str(tmp_path / "a"), "random", 0, 5000, 0.99)
    other = str(tmp_path / "b")
    write_result(other, "random", 1, 5000, 0.99)
    with open(os.path.join(other, "result.json")) as handle:
        data = json.load(handle)
    data["teacher"] = dict(TEACHER, params=7)
    with open(os.path.join(other, "result.json"), "w") as handle:
        json.dump(data, handle)
    with pytest.raises(ValueError, match="different teachers"):
        comparison.collect([good, other])
    with pytest.raises(FileNotFoundError, match="has the run finished"):
        comparison.collect([str(tmp_path)])


@pytest.mark.slow
def test_compare_binary_writes_table_json_and_plot(tmp_path):
    a = write_result(str(tmp_path / "ac"), "architecture_compression", 0, 2000, 0.985)
    b = write_result(str(tmp_path / "hb"), "hyperband", 0, 8000, 0.99)
    out = str(tmp_path / "cmp")
    result = test_binaries.run_binary("compare", f"--results={a},{b}", f"--output_dir={out}")
    assert result.returncode == 0, test_binaries.describe(result)
    assert "| architecture_compression |" in result.stdout
    with open(os.path.join(out, "comparison.png"), "rb") as handle:
        assert handle.read(8) == test_binaries.PNG_SIGNATURE
    stored = test_binaries.read_json(os.path.join(out, "comparison.json"))
    assert len(stored["rows"]) == 2 and stored["summary"][0]["method"] == "architecture_compression"
    again = test_binaries.run_binary("compare", f"--results={a},{b}", f"--output_dir={out}")
    test_binaries.assert_one_line_error(again, "already holds results")


@pytest.mark.slow  # a fresh interpreter importing TensorFlow
def test_importing_the_package_leaves_the_matplotlib_backend_alone():
    # A notebook's backend must survive `import acompress...`: the plots draw on Figure objects, not pyplot.
    code = ("import sys, matplotlib; matplotlib.use('svg'); "
            "from acompress import plots; assert 'matplotlib.pyplot' not in sys.modules; "
            "from acompress import comparison, pipeline; "
            "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()")
    result = subprocess.run([sys.executable, "-c", code], cwd=test_binaries.REPO_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
