"""The binaries end to end, run as a user runs them: `python -m binaries.<name>` from the repo root."""

import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time

import pytest

from acompress import child_training
from acompress import corpus
from acompress import corpus_generation
from acompress import latent_search
from acompress import sampler

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = "--flagfile=flags/smoke.flags"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_flagfile(path):
    """{flag name: value string} of a flagfile."""
    values = {}
    with open(os.path.join(REPO_ROOT, path)) as handle:
        for line in handle:
            line = line.strip()
            if line.startswith("--"):
                name, _, value = line[2:].partition("=")
                values[name] = value
    return values


FLAGS = read_flagfile("flags/smoke.flags")
NUM_CHILDREN = int(FLAGS["num_children"])
NUM_REPLICATES = len(corpus_generation.replicated_indices(NUM_CHILDREN, float(FLAGS["replicate_fraction"]),
                                                          int(FLAGS["seed"])))
SMOKE_TRAININGS = NUM_CHILDREN + NUM_REPLICATES
PACK = int(FLAGS["pack"])


def run_binary(name, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", f"binaries.{name}", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout)


# Runs each case of one binary as `python -m binaries.<name> <args>` would, one after another in one process:
# its own argv, flags parsed from their defaults, stdout and stderr (file descriptors 1 and 2: Python's,
# absl's and TensorFlow's C++ output) captured apart, the exit status from SystemExit. One TensorFlow
# import for all of them, where a process each costs 10-25 s.
_RUN_CASES = """
import importlib, json, os, sys, traceback
name, cases, folder = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
from binaries import _cli
from absl import flags
module = importlib.import_module("binaries." + name)
module.define_flags()
statuses = []
for index, args in enumerate(cases):
    flags.FLAGS.unparse_flags()
    sys.argv = [module.__file__, *args]
    sys.stdout.flush(); sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(os.path.join(folder, f"{index}.out"), "w") as out, open(os.path.join(folder, f"{index}.err"), "w") as err:
        os.dup2(out.fileno(), 1); os.dup2(err.fileno(), 2)
        try:
            _cli.run(module.main)
            status = 0
        except SystemExit as stop:
            status = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
        except BaseException:
            traceback.print_exc()
            status = 1
        sys.stdout.flush(); sys.stderr.flush()
        os.dup2(saved[0], 1); os.dup2(saved[1], 2)
    statuses.append(status)
with open(os.path.join(folder, "statuses.json"), "w") as handle:
    json.dump(statuses, handle)
"""


def run_binary_cases(name, cases, folder, timeout=600):
    """[CompletedProcess] of `binaries.<name>` run with each argument list of `cases`, in one process.

    For the cases that fail fast (bad flags, files, teachers): the refusal is the binary's own code
    path (`_cli.run(main)`, absl's flag parsing), only the interpreter is shared. `folder` holds the
    captured output.
    """
    os.makedirs(folder, exist_ok=True)
    cases = [[str(arg) for arg in args] for args in cases]
    result = subprocess.run([sys.executable, "-c", _RUN_CASES, name, json.dumps(cases), str(folder)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0 and os.path.exists(os.path.join(folder, "statuses.json")), describe(result)
    statuses = read_json(os.path.join(folder, "statuses.json"))
    done = []
    for index, (args, status) in enumerate(zip(cases, statuses)):
        with open(os.path.join(folder, f"{index}.out")) as out, open(os.path.join(folder, f"{index}.err")) as err:
            done.append(subprocess.CompletedProcess(["binaries." + name, *args], status, out.read(), err.read()))
    return done


def batched_refusals(binary, cases, tmp_path_factory):
    """{case id: (result, output dir)}: `binary` on every {id: args with {run} for a fresh output dir} in one
    process (`run_binary_cases`)."""
    output_dirs = {name: str(tmp_path_factory.mktemp(name) / "run") for name in cases}
    results = run_binary_cases(binary, [[arg.format(run=output_dirs[name]) for arg in args]
                                        for name, args in cases.items()], tmp_path_factory.mktemp(binary))
    return {name: (result, output_dirs[name]) for name, result in zip(cases, results)}


def generate_corpus(output_dir, *args, timeout=600):
    return run_binary("generate_corpus", SMOKE, f"--output_dir={output_dir}", *args, timeout=timeout)


def describe(result):
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-5000:]}"


def assert_one_line_error(result, message):
    """Exit status 2, no traceback, and the last line of stderr is `error: ...` containing `message`."""
    assert result.returncode == 2, describe(result)
    assert "Traceback" not in result.stderr + result.stdout, describe(result)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], describe(result)
    assert message in errors[0], describe(result)
    assert result.stdout.strip() == ""


def part_files(directory):
    return sorted(name for name in os.listdir(directory) if name.endswith(".tfrecord"))


def read_json(path):
    with open(path) as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One run of flags/smoke.flags (teacher and corpus), shared by the tests below."""
    output_dir = str(tmp_path_factory.mktemp("smoke") / "run")
    result = generate_corpus(output_dir)
    assert result.returncode == 0, describe(result)
    return dict(output_dir=output_dir, result=result, corpus_dir=os.path.join(output_dir, "corpus"),
                teacher=os.path.join(output_dir, "teacher", "teacher.keras"),
                parts=part_files(os.path.join(output_dir, "corpus")))


def test_generate_corpus_end_to_end(smoke):
    out = smoke["output_dir"]
    for name in ("config.json", "teacher/teacher.keras", "teacher/teacher_spec.json", "teacher/metrics.json",
                 "corpus/metadata.json", "corpus_summary.json", "corpus.png"):
        assert os.path.isfile(os.path.join(out, name)), name
    config = read_json(os.path.join(out, "config.json"))
    assert config["binary"] == "generate_corpus" and config["runtime"]["seed"] == int(FLAGS["seed"])
    assert config["teacher"] == FLAGS["teacher"]
    assert config["teacher_train"]["epochs"] == int(FLAGS["teacher_epochs"])
    assert config["corpus"]["num_children"] == NUM_CHILDREN and config["corpus"]["proxy"]["pack"] == PACK
    assert config["corpus"]["proxy"]["epochs"] == int(FLAGS["proxy_epochs"])
    assert config["corpus_dir"] == os.path.join(out, "corpus")
    metrics = read_json(os.path.join(out, "teacher", "metrics.json"))
    assert metrics["val_accuracy"] > 0.5 and 0.0 <= metrics["test_accuracy"] <= 1.0
    if FLAGS["teacher"] == "digits_cnn":
        assert metrics["params"] == 559_306
    metadata = read_json(os.path.join(out, "corpus", "metadata.json"))
    assert metadata["num_children"] == NUM_CHILDREN and metadata["seed"] == int(FLAGS["seed"])
    # The metadata pins the proxy budget, not how children were packed (that changes no record).
    assert metadata["proxy"] == child_training.ProxyConfig(**config["corpus"]["proxy"]).recipe()
    assert "pack" not in metadata["proxy"] and "init" not in metadata["proxy"]  # a scratch corpus
    assert metadata["teacher"]["params"] == metrics["params"]

    printed = json.loads(smoke["result"].stdout)  # stdout holds the summary and nothing else
    assert printed == read_json(os.path.join(out, "corpus_summary.json"))
    assert printed["num_children_stored"] == NUM_CHILDREN and printed["num_children_missing"] == 0
    assert printed["num_records"] == SMOKE_TRAININGS and printed["num_replicates"] == NUM_REPLICATES
    assert sum(printed["counts"].values()) == SMOKE_TRAININGS
    assert printed["teacher"]["params"] == metrics["params"]
    assert printed["teacher"]["test_accuracy"] == metrics["test_accuracy"]
    stored = corpus.read_corpus(smoke["corpus_dir"])
    assert stored.duplicates == () and stored.corrupt_files == ()
    # One part file per packed group: first trainings, then replicates.
    assert len(smoke["parts"]) == math.ceil(NUM_CHILDREN / PACK) + math.ceil(NUM_REPLICATES / PACK)

    with open(os.path.join(out, "corpus.png"), "rb") as handle:
        png = handle.read()
    assert png[:8] == PNG_SIGNATURE and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 100 and height > 100


@pytest.mark.slow
def test_inherited_children_in_worker_processes_through_the_binary(smoke, tmp_path):
    """The binaries' default recipe (inherited children) in worker processes, with the smoke run's teacher."""
    output_dir = str(tmp_path / "inherited")
    result = generate_corpus(output_dir, "--proxy_init=inherit", "--proxy_learning_rate=0.001",
                             "--groups_per_worker=2", "--replicate_fraction=0")
    assert result.returncode == 0, describe(result)
    metadata = read_json(os.path.join(output_dir, "corpus", "metadata.json"))
    assert metadata["proxy"]["init"] == "inherit" and metadata["proxy"]["recalibrate_batches"] == 20
    stored = corpus.read_corpus(os.path.join(output_dir, "corpus"))
    assert len(stored.records) == NUM_CHILDREN and all(r.status == "ok" for r in stored.records)
    # The same teacher as the smoke run (same flags and seed), so the same children, now inherited.
    scratch = {r.spec_hash for r in corpus.read_corpus(smoke["corpus_dir"]).records}
    assert {r.spec_hash for r in stored.records} <= scratch
    # Resuming that corpus under the scratch recipe is refused, naming the field.
    refused = generate_corpus(str(tmp_path / "scratch"), "--proxy_init=scratch", "--replicate_fraction=0",
                              f"--corpus_dir={os.path.join(output_dir, 'corpus')}")
    assert refused.returncode == 2 and "proxy.init" in refused.stderr, describe(refused)


def test_rerun_resumes_without_training_again(smoke):
    corpus_dir = smoke["corpus_dir"]
    mtimes = {name: os.stat(os.path.join(corpus_dir, name)).st_mtime_ns for name in smoke["parts"]}
    result = generate_corpus(smoke["output_dir"])
    assert result.returncode == 0, describe(result)
    assert part_files(corpus_dir) == smoke["parts"]
    assert {name: os.stat(os.path.join(corpus_dir, name)).st_mtime_ns for name in smoke["parts"]} == mtimes
    assert json.loads(result.stdout) == json.loads(smoke["result"].stdout)
    assert "teacher: reusing" in result.stderr
    assert f"0 of {SMOKE_TRAININGS} trainings to do" in result.stderr


@pytest.mark.slow
def test_a_run_directory_from_before_inheritance_and_workers_still_resumes(smoke, tmp_path):
    """config.json without the settings added since (recipe fields, workers, decode cache) is the same run
    when the flags give their old values; settings that change no result (--groups_per_worker) may differ."""
    copy = str(tmp_path / "old_run")
    shutil.copytree(smoke["output_dir"], copy)
    config_path = os.path.join(copy, "config.json")
    with open(config_path) as handle:  # the copy's own paths
        config = json.loads(handle.read().replace(smoke["output_dir"], copy))
    for key in ("init", "importance", "recalibrate_batches"):
        config["corpus"]["proxy"].pop(key)
    config["corpus"].pop("groups_per_worker")
    for section in ("data", "proxy_data"):
        config[section].pop("cache_dir")
    with open(config_path, "w") as handle:
        json.dump(config, handle)
    result = generate_corpus(copy, "--groups_per_worker=3")
    assert result.returncode == 0, describe(result)
    assert f"0 of {SMOKE_TRAININGS} trainings to do" in result.stderr
    # Under the inherited recipe it is another run: refused, naming the section.
    refused = generate_corpus(copy, "--proxy_init=inherit")
    assert_one_line_error(refused, "differs in: corpus")


@pytest.mark.slow
def test_overwrite_replaces_the_output_dir(smoke, tmp_path):
    output_dir = str(tmp_path / "run")
    shutil.copytree(smoke["output_dir"], output_dir)
    # A trained .keras teacher (outside the replaced directory) saves training it again.
    result = generate_corpus(output_dir, "--overwrite", "--seed=1", "--num_children=2", "--replicate_fraction=0",
                             f"--teacher={smoke['teacher']}")
    assert result.returncode == 0, describe(result)
    config = read_json(os.path.join(output_dir, "config.json"))
    assert config["runtime"]["seed"] == 1 and config["corpus"]["num_children"] == 2
    assert config["teacher"] == smoke["teacher"]
    metadata = read_json(os.path.join(output_dir, "corpus", "metadata.json"))
    assert metadata["seed"] == 1 and metadata["num_children"] == 2
    assert part_files(os.path.join(output_dir, "corpus")) == [corpus.part_file_name(0, 1, 0)]
    stored = corpus.read_corpus(os.path.join(output_dir, "corpus"))
    assert [r.key for r in stored.records] == [(0, 0), (1, 0)]
    assert json.loads(result.stdout)["num_records"] == 2
    assert read_json(os.path.join(output_dir, "teacher", "metrics.json"))["summary"]["epochs"] == 0  # loaded


# -- user errors: a clear message, no traceback ------------------------------------------

@pytest.fixture(scope="module")
def bad_teachers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("teachers")
    (folder / "no_kernel.json").write_text(json.dumps({"layers": [{"kind": "conv", "filters": 8}]}))
    return folder


USER_ERRORS = {
    "unknown-zoo-name": (["--teacher=no_such_teacher"], "unknown teacher 'no_such_teacher'"),
    "malformed-spec": (["--teacher={bad}/no_kernel.json"], "layer 0, field 'kernel'"),
    "missing-keras-file": (["--teacher={bad}/missing.keras"], "no Keras model at"),
    "shard-index": (["--num_shards=2", "--shard_index=2"], "--shard_index=2 must be below --num_shards=2"),
    "supernet-with-removals": (["--proxy_init=supernet", "--p_remove=0.1"], "set --p_remove=0"),
}
FLAG_ERRORS = {
    "unknown-flag": (["--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
    "out-of-range": (["--proxy_epochs=-1"], "flag --proxy_epochs=-1: -1 is not a non-negative integer"),
}


@pytest.fixture(scope="module")
def refusals(smoke, bad_teachers, tmp_path_factory):
    """{case: (result, its output dir)} of generate_corpus on every user and flag error below, and on the smoke
    run's directory with another seed, all in one process (`run_binary_cases`)."""
    cases = {name: [SMOKE, "--output_dir={run}", *[arg.format(bad=bad_teachers) for arg in args]]
             for name, (args, _) in {**USER_ERRORS, **FLAG_ERRORS}.items()}
    before = read_json(os.path.join(smoke["output_dir"], "config.json"))
    cases["other-seed"] = [SMOKE, f"--output_dir={smoke['output_dir']}", "--seed=1"]
    refused = batched_refusals("generate_corpus", cases, tmp_path_factory)
    refused["other-seed"] = (refused["other-seed"][0], smoke["output_dir"], before)  # not a fresh dir: the smoke run's
    return refused


def test_other_seed_on_the_same_output_dir_fails_in_one_line(smoke, refusals):
    result, output_dir, config_before = refusals["other-seed"]
    assert_one_line_error(result, "was made with a different configuration")
    assert "--overwrite" in result.stderr
    assert read_json(os.path.join(output_dir, "config.json")) == config_before
    assert part_files(smoke["corpus_dir"]) == smoke["parts"]


@pytest.mark.parametrize("case", list(USER_ERRORS))
def test_user_errors_are_one_line(case, refusals):
    result, output_dir = refusals[case]
    assert_one_line_error(result, USER_ERRORS[case][1])
    assert not os.path.exists(os.path.join(output_dir, "corpus"))


@pytest.mark.slow
def test_corrected_command_runs_after_a_teacher_typo(smoke, tmp_path):
    output_dir = str(tmp_path / "run")
    typo = generate_corpus(output_dir, "--teacher=digits_cnnn", "--num_children=1", "--replicate_fraction=0")
    assert_one_line_error(typo, "unknown teacher 'digits_cnnn'")
    fixed = generate_corpus(output_dir, f"--teacher={smoke['teacher']}", "--num_children=1",
                            "--replicate_fraction=0")
    assert fixed.returncode == 0, describe(fixed)


@pytest.mark.parametrize("case", list(FLAG_ERRORS))
def test_flag_errors_exit_nonzero_without_traceback(case, refusals):
    result, output_dir = refusals[case]
    assert result.returncode != 0, describe(result)
    assert "Traceback" not in result.stderr + result.stdout, describe(result)
    assert FLAG_ERRORS[case][1] in result.stderr, describe(result)
    assert result.stdout.strip() == ""
    assert not os.path.exists(output_dir)


# -- the corpus inspector -----------------------------------------------------------------

@pytest.fixture(scope="module")
def inspected(smoke, tmp_path_factory):
    """The corpus binary on the smoke corpus (--metadata) and on a directory without metadata, in one process."""
    empty = tmp_path_factory.mktemp("no_metadata")
    return run_binary_cases("corpus", [[f"--corpus_dir={smoke['corpus_dir']}", "--metadata"], [f"--corpus_dir={empty}"]],
                            tmp_path_factory.mktemp("inspected"))


def test_corpus_binary_prints_the_summary_and_metadata(smoke, inspected):
    result = inspected[0]
    assert result.returncode == 0, describe(result)
    decoder = json.JSONDecoder()
    summary, end = decoder.raw_decode(result.stdout)
    metadata, _ = decoder.raw_decode(result.stdout[end:].lstrip())
    saved = read_json(os.path.join(smoke["output_dir"], "corpus_summary.json"))
    assert summary == {key: value for key, value in saved.items() if key != "teacher"}
    assert metadata == read_json(os.path.join(smoke["corpus_dir"], "metadata.json"))


def test_corpus_binary_on_a_directory_without_metadata(inspected):
    assert_one_line_error(inspected[1], "no metadata.json")


# -- kill -9 and resume --------------------------------------------------------------------

@pytest.mark.slow
def test_sigkill_then_rerun_stores_every_child_exactly_once(smoke, tmp_path):
    num_children, replicate_fraction = 12, 0.25
    replicated = corpus_generation.replicated_indices(num_children, replicate_fraction, 0)
    total = num_children + len(replicated)  # 15 trainings in 8 packs of 2
    output_dir = str(tmp_path / "run")
    corpus_dir = os.path.join(output_dir, "corpus")
    # The smoke run's trained teacher (a .keras file) spares training one again.
    args = [sys.executable, "-m", "binaries.generate_corpus", SMOKE, f"--output_dir={output_dir}", "--seed=0",
            f"--num_children={num_children}", f"--replicate_fraction={replicate_fraction}", "--pack=2",
            "--proxy_epochs=1", f"--teacher={smoke['teacher']}"]
    process = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (os.path.isdir(corpus_dir) and part_files(corpus_dir)):
            assert process.poll() is None, f"generate_corpus exited ({process.returncode}) before writing a part"
            assert time.monotonic() < deadline, "no part file after 300 s"
            time.sleep(0.02)
        process.kill()  # SIGKILL: no cleanup of any kind
        assert process.wait(timeout=60) == -9
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    killed = corpus.read_corpus(corpus_dir)
    assert 0 < len(killed) < total and killed.corrupt_files == ()

    result = run_binary("generate_corpus", *args[3:])
    assert result.returncode == 0, describe(result)
    assert f"{total - len(killed)} of {total} trainings to do" in result.stderr  # only the rest
    stored = corpus.read_corpus(corpus_dir)
    assert stored.duplicates == () and stored.corrupt_files == ()
    assert [r.key for r in stored.records] == sorted([(i, 0) for i in range(num_children)] +
                                                     [(i, 1) for i in replicated])
    summary = stored.summary()
    assert summary["num_children_missing"] == 0 and summary["num_records"] == total
    assert json.loads(result.stdout)["num_records"] == total
    # Records written before the kill are kept as they were.
    assert all(record in stored.records for record in killed.records)


FLAGFILES = sorted(name for name in os.listdir(os.path.join(REPO_ROOT, "flags")) if name.endswith(".flags"))
_PARSE_FLAGFILES = """
import importlib, sys
from absl import flags
binary = importlib.import_module("binaries." + sys.argv[1])
binary.define_flags()
for path in sys.argv[2:]:
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["binary", "--flagfile=" + path, "--output_dir=/unused"])
    print("parsed", path)
"""


@pytest.mark.parametrize("binary", [
    "generate_corpus",  # the smallest flag set (the stage binaries define supersets of it)
    pytest.param("tune_baseline", marks=pytest.mark.slow),
    pytest.param("train_embedding", marks=pytest.mark.slow), pytest.param("compress", marks=pytest.mark.slow),
    pytest.param("pipeline", marks=pytest.mark.slow)])
def test_every_flagfile_is_accepted_by_every_stage_binary(binary):
    # A flagfile names flags of every stage; absl refuses one a binary does not define.
    paths = [os.path.join("flags", name) for name in FLAGFILES]
    assert {"digits.flags", "smoke.flags", "cifar10.flags", "cifar10_cpu.flags"} <= set(FLAGFILES)
    result = subprocess.run([sys.executable, "-c", _PARSE_FLAGFILES, binary, *paths], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, describe(result)
    assert result.stdout.count("parsed") == len(paths)


@pytest.mark.slow  # three binaries started; run by hand
@pytest.mark.parametrize("binary, flag", [("pipeline", "--num_children"), ("tune_baseline", "--method"),
                                          ("compare", "--results")])
def test_help_shows_the_docstring_and_the_binarys_flags(binary, flag):
    import importlib
    result = run_binary(binary, "--help", timeout=120)
    assert result.returncode == 1, describe(result)  # absl's --help exits with status 1
    first_line = importlib.import_module(f"binaries.{binary}").__doc__.strip().splitlines()[0]
    assert first_line in result.stdout
    assert f"  {flag}:" in result.stdout, result.stdout[-2000:]
    assert "--verbosity" not in result.stdout  # absl's own flags stay in --helpfull


def test_only_the_packages_own_errors_lose_their_traceback():
    from acompress import archspec
    from acompress.binaries import _cli

    def foreign():
        raise ValueError("from somewhere else, e.g. inside Keras")

    for raiser, ours in ((foreign, False), (lambda: archspec.ArchSpec.from_dict({"layers": 3}), True)):
        with pytest.raises(ValueError) as caught:
            raiser()
        assert _cli._raised_by_the_package(caught.value) is ours


# The configs the compress binary's flags give (it defines every stage's flags but the baselines'), for each
# argument list: {"sampler": ..., "search": ...} as dicts, all cases in one process.
_CONFIG_FROM_FLAGS = """
import json, sys
from absl import flags
from acompress.binaries import compress
from acompress.flags import compress_flags, corpus_flags
compress.define_flags()
for args in json.loads(sys.argv[1]):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["binary", "--output_dir=/unused", *args])
    corpus_config = corpus_flags.corpus_config_from_flags(flags.FLAGS)
    print(json.dumps({"sampler": corpus_config.sampler.to_dict(), "proxy": corpus_config.proxy.to_dict(),
                      "search": compress_flags.config_from_flags(flags.FLAGS).search.to_dict()}))
"""
SAMPLER_CASES = [[], ["--p_remove=0", "--width_jitter=2", "--p_kernel=0.5", "--max_ratio=32"]]
SKELETON_CASES = [[], ["--search_skeleton=teacher"], ["--search_skeleton=widths"]]
RECIPE_CASES = [["--p_remove=0", "--proxy_init=supernet"],
                ["--p_remove=0", "--proxy_init=supernet", "--proxy_epochs=30", "--supernet_children=3",
                 "--recalibrate_batches=4"]]


@pytest.fixture(scope="module")
def configs_from_flags():
    cases = SAMPLER_CASES + SKELETON_CASES + RECIPE_CASES
    result = subprocess.run([sys.executable, "-c", _CONFIG_FROM_FLAGS, json.dumps(cases)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, describe(result)
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    skeletons = printed[len(SAMPLER_CASES):len(SAMPLER_CASES) + len(SKELETON_CASES)]
    return {"sampler": [entry["sampler"] for entry in printed[:len(SAMPLER_CASES)]],
            "search": [entry["search"] for entry in skeletons],
            "proxy": [entry["proxy"] for entry in printed[-len(RECIPE_CASES):]]}


def test_the_supernet_recipe_is_set_from_flags(configs_from_flags):
    default, changed = [child_training.ProxyConfig(**entry) for entry in configs_from_flags["proxy"]]
    assert (default.init, default.epochs, default.recalibrate_batches, default.supernet_children) == (
        "supernet", 5, 20, 2)
    assert (changed.epochs, changed.supernet_children, changed.recalibrate_batches) == (30, 3, 4)


def test_the_children_distribution_is_set_from_flags(configs_from_flags):
    default, changed = [sampler.SamplerConfig.from_dict(entry) for entry in configs_from_flags["sampler"]]
    assert default == sampler.SamplerConfig()  # no flag: the library's distribution, so corpora keep their keys
    assert changed == sampler.SamplerConfig(p_remove=0.0, width_jitter=2.0, p_kernel=0.5, max_ratio=32.0)


def test_the_search_skeleton_is_set_from_flags(configs_from_flags):
    default, teacher, widths = configs_from_flags["search"]
    assert default == json.loads(json.dumps(latent_search.SearchConfig().to_dict()))  # the library defaults
    assert "skeleton" not in default  # so runs made before the flag keep their keys
    assert teacher == dict(default, skeleton="teacher") and widths == dict(default, skeleton="widths")
