"""Test order: the longest modules first, so two xdist workers finish together.

With `--dist loadfile` each module is one unit of work, handed to whichever worker is free, in collection
order (`--no-loadscope-reorder` in pytest.ini; xdist's default puts the modules with the most tests first,
which started the pipeline run, the longest module, last). A long module that starts last leaves the other
worker idle until it ends. Order only: every test still runs, and a module's tests keep their order.
"""

# The longest modules on two CPU cores (durations of the default run, their shared fixtures included), longest
# first. A module not named here keeps its place after them.
LONGEST_FIRST = ("test_pipeline.py", "test_binaries.py", "test_baselines.py", "test_faults.py",
                 "test_child_workers.py", "test_inheritance.py", "test_corpus_generation.py", "test_child_training.py",
                 "test_pruning.py", "test_finalists.py", "test_teacher.py")


def pytest_collection_modifyitems(session, config, items):
    def rank(item):
        name = item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within a module, and among the others, is kept
