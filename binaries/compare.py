"""Compares compression methods side by side from their results.

  acompress-compare --results=runs/digits,runs/digits_random,runs/digits_hyperband --output_dir=runs/compare

--results takes run directories (compressed/report.json of acompress-pipeline / -compress,
result.json of acompress-tune-baseline) or result files, any number of seeds per method.
Writes <output_dir>/comparison.md (the table), comparison.json (rows and per-method summary)
and comparison.png (test accuracy vs. parameters of every chosen network, the teacher).
"""

import os

from acompress.binaries import _cli  # noqa: F401  (quiet TensorFlow before it loads)
from absl import flags

from acompress import comparison
from acompress import rundir

FLAGS = flags.FLAGS


def define_flags() -> None:
    if "results" in FLAGS:
        return
    flags.DEFINE_list("results", None, "Run directories or result files to compare.")
    flags.DEFINE_string("output_dir", None, "Where the table, JSON and plot go.")
    flags.DEFINE_float("max_test_drop", 0.01, "A run counts as within the drop when its chosen network's test "
                       "accuracy is at most this far below the teacher's (fraction).", lower_bound=0.0)
    flags.DEFINE_bool("overwrite", False, "Replace an output directory that already holds a comparison.")
    flags.mark_flag_as_required("results")
    flags.mark_flag_as_required("output_dir")


def main(argv) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
    rows = comparison.collect(FLAGS.results, FLAGS.max_test_drop)
    output_dir = rundir.normalize(FLAGS.output_dir)
    rundir.prepare(output_dir, {"binary": "compare", "results": [r["source"] for r in rows],
                                "max_test_drop": FLAGS.max_test_drop}, overwrite=FLAGS.overwrite)
    summary = comparison.summarise(rows)
    table = comparison.markdown(summary, FLAGS.max_test_drop) + "\n" + comparison.runs_markdown(rows)
    with open(os.path.join(output_dir, "comparison.md"), "w", encoding="utf-8") as handle:
        handle.write(table)
    rundir.write_json(os.path.join(output_dir, "comparison.json"), {"rows": rows, "summary": summary})
    comparison.plot(os.path.join(output_dir, "comparison.png"), rows)
    print(table, end="")


def run() -> None:
    define_flags()
    _cli.run(main)


if __name__ == "__main__":
    run()
