"""Gradient descent in the embedding: from the teacher's code towards smaller, still accurate codes.

The loop (`optimise`) is one `tf.function`: a `tf.GradientTape` over the predictor
only, a hand-written Adam update, and a projection, repeated `steps` times inside the
graph (`tf.range` becomes a `tf.while_loop`). It moves a batch of codes at once: every
start (the teacher and its best corpus neighbours) paired with every trade-off
weight ``lambda`` of the objective

    J(z) = -a(z) + lambda * p(z),

where a and p are the predicted validation accuracy and log parameters, each
normalised by the corpus statistics the embedding was trained with (so lambda = 1
trades one standard deviation of accuracy for one of log size).

Staying where the embedding is trustworthy: after every step each code is projected
back into a ball around its start (root-mean-square distance per latent number at
most ``trust_radius``) and into the tanh box (-1, 1) the encoder produces. Snapshots
of every code are kept every ``snapshot_every`` steps, so a trajectory yields every
architecture it passes through -- the step size does not have to be tuned to the
point where the decoded architecture changes: each change along the way becomes a
candidate.

`search` then decodes the snapshots (masked: valid by construction; with
``skeleton="teacher"`` or ``"widths"`` also held to children of the teacher), simplifies each
(`archspec.simplified`: no batch norm or activation repeated between two computing
layers), drops repeats and architectures already in the corpus (their proxy accuracy
is known, they are not new), scores every candidate by re-encoding its decoded tokens (the prediction for
the architecture itself, not for the off-manifold point that produced it), and
counts its exact parameters and FLOPs from the spec.
"""

import dataclasses
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from acompress import archspec
from acompress import embedding as embedding_lib

SKELETONS = ("free", "teacher", "widths")


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """The latent search.

    Attributes:
      steps: gradient steps per code.
      learning_rate: Adam step size (in latent units; the box is (-1, 1)).
      lambdas: trade-off weights of predicted log parameters against predicted accuracy.
      num_starts: codes started from: the teacher and up to num_starts - 1 corpus children
        (the corpus' accuracy/size Pareto front, spread over sizes).
      trust_radius: largest root-mean-square distance of a code from its start.
      snapshot_every: a decoded snapshot of every code every this many steps.
      skeleton: "free" decodes any architecture of the space; "teacher" decodes only children
        of the teacher (its layers, each at most as wide and with at most its kernel:
        `tokens.Tokenizer.skeleton_mask`), which inherit all of its layers by alignment;
        "widths" the same children with the teacher's kernels (only widths shrink: the
        search space of filter pruning).
    """

    steps: int = 400
    learning_rate: float = 0.02
    lambdas: Sequence[float] = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5)
    num_starts: int = 8
    trust_radius: float = 0.6
    snapshot_every: int = 10
    skeleton: str = "free"

    def __post_init__(self):
        if self.skeleton not in SKELETONS:
            raise ValueError(f"skeleton must be one of {', '.join(SKELETONS)}, got {self.skeleton!r}")
        object.__setattr__(self, "lambdas", tuple(float(v) for v in self.lambdas))
        if self.steps < 1 or self.snapshot_every < 1 or self.num_starts < 1:
            raise ValueError("steps, snapshot_every and num_starts must be >= 1")
        if not self.learning_rate > 0 or not self.trust_radius > 0:
            raise ValueError("learning_rate and trust_radius must be > 0")
        if not self.lambdas or any(v < 0 for v in self.lambdas):
            raise ValueError(f"lambdas must be a non-empty list of numbers >= 0, got {self.lambdas}")

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        if self.skeleton == "free":  # the keys of runs made before the option existed
            del out["skeleton"]
        return out


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A decoded architecture found by the search.

    Attributes:
      spec: the architecture.
      params, flops: exact, from the spec.
      predicted_accuracy: the accuracy head on the re-encoded architecture (proxy-training scale).
      predicted_log_params: the size head on the same code.
      start, lam, step: which start and trade-off weight found it first, and at which step.
    """

    spec: archspec.ArchSpec
    params: int
    flops: int
    predicted_accuracy: float
    predicted_log_params: float
    start: int
    lam: float
    step: int

    def to_dict(self) -> dict:
        return {"spec": self.spec.to_dict(), "spec_hash": self.spec.hash, "params": self.params, "flops": self.flops,
                "predicted_accuracy": self.predicted_accuracy, "predicted_log_params": self.predicted_log_params,
                "start": self.start, "lambda": self.lam, "step": self.step}


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """What one latent search found, and how it went.

    Attributes:
      candidates: new architectures only (not the teacher, not in the corpus), sorted by params.
      teacher_prediction: {"accuracy", "log_params"} the heads give the teacher.
      starts: codes started from; codes: starts x lambdas.
      objective_first, objective_last: the objective at the first and last step (mean over codes).
      max_radius: the largest RMS distance any final code reached from its start.
      seconds: the loop; decode_seconds: decoding, simplifying, scoring and counting.
      decoded: snapshots decoded; distinct: distinct (simplified) decodes; in_corpus: those already in
        the corpus (or the teacher), dropped.
    """

    candidates: List[Candidate]
    teacher_prediction: Dict[str, float]
    starts: int
    codes: int
    objective_first: float
    objective_last: float
    max_radius: float
    seconds: float
    decode_seconds: float
    decoded: int
    distinct: int
    in_corpus: int

    def diagnostics(self) -> dict:
        """Everything but the candidates, which are counted: the report's per-round entry."""
        out = {field.name: getattr(self, field.name) for field in dataclasses.fields(self) if field.name != "candidates"}
        out["candidates"] = len(self.candidates)
        return out


def make_optimiser(embedding: embedding_lib.Embedding, jit_compile: bool = False):
    """The compiled loop for `embedding`: fn(z0, lambdas, steps, learning_rate, radius, snapshot_every)
    -> (final codes, snapshots [S, N, L, C], objective per step [steps, N]).

    `jit_compile` compiles the whole loop with XLA (see benchmarks/latent_benchmark.py for
    what it buys on this machine)."""
    predictor = embedding.predictor
    stats = embedding.targets

    def objective(z, lambdas):
        out = predictor(z, training=False)
        accuracy = (out["accuracy"][:, 0] - stats.accuracy_mean) / stats.accuracy_std
        size = (out["log_params"][:, 0] - stats.log_params_mean) / stats.log_params_std
        return -accuracy + lambdas * size

    @tf.function(reduce_retracing=True, jit_compile=jit_compile)
    def optimise(z0, lambdas, steps, learning_rate, radius, snapshot_every):
        z0 = tf.convert_to_tensor(z0, tf.float32)
        lambdas = tf.convert_to_tensor(lambdas, tf.float32)
        dims = tf.cast(tf.reduce_prod(tf.shape(z0)[1:]), tf.float32)
        max_norm = radius * tf.sqrt(dims)
        z = z0
        m = tf.zeros_like(z0)
        v = tf.zeros_like(z0)
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        snapshots = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        history = tf.TensorArray(tf.float32, size=steps)
        snapshots = snapshots.write(0, z0)
        count = 1
        for step in tf.range(steps):
            with tf.GradientTape() as tape:
                tape.watch(z)
                values = objective(z, lambdas)
                total = tf.reduce_sum(values)
            grad = tape.gradient(total, z)
            t = tf.cast(step + 1, tf.float32)
            m = beta1 * m + (1 - beta1) * grad
            v = beta2 * v + (1 - beta2) * tf.square(grad)
            update = learning_rate * (m / (1 - beta1 ** t)) / (tf.sqrt(v / (1 - beta2 ** t)) + eps)
            z = z - update
            # Trust region: a ball around the start, then the encoder's box.
            delta = z - z0
            norms = tf.sqrt(tf.reduce_sum(tf.square(delta), axis=[1, 2], keepdims=True))
            z = z0 + delta * tf.minimum(1.0, max_norm / tf.maximum(norms, 1e-12))
            z = tf.clip_by_value(z, -1.0, 1.0)
            history = history.write(step, values)
            if (step + 1) % snapshot_every == 0:
                snapshots = snapshots.write(count, z)
                count += 1
        return z, snapshots.stack(), history.stack()

    return optimise


def run_loop(embedding: embedding_lib.Embedding, z0: np.ndarray, lambdas: Sequence[float],
             config: SearchConfig, optimiser=None) -> Dict[str, np.ndarray]:
    """Runs the compiled loop once; numpy results: "final", "snapshots" [S, N, L, C], "objective" [steps, N]."""
    optimiser = optimiser or make_optimiser(embedding)
    final, snapshots, history = optimiser(
        tf.constant(z0, tf.float32), tf.constant(lambdas, tf.float32), tf.constant(config.steps, tf.int32),
        tf.constant(config.learning_rate, tf.float32), tf.constant(config.trust_radius, tf.float32),
        tf.constant(config.snapshot_every, tf.int32))
    return {"final": final.numpy(), "snapshots": snapshots.numpy(), "objective": history.numpy()}


def pareto_front(params: Sequence[float], accuracy: Sequence[float]) -> np.ndarray:
    """Indices of the points no other point beats (fewer or equal params and higher or equal accuracy,
    one strictly), sorted by params."""
    params = np.asarray(params, np.float64)
    accuracy = np.asarray(accuracy, np.float64)
    order = np.lexsort((-accuracy, params))
    front, best = [], -np.inf
    for index in order:
        if accuracy[index] > best:
            front.append(index)
            best = accuracy[index]
    return np.asarray(front, dtype=np.int64)


def choose_starts(teacher_tokens: np.ndarray, corpus_tokens: np.ndarray, corpus_params: np.ndarray,
                  corpus_accuracy: np.ndarray, num_starts: int) -> np.ndarray:
    """Token matrices to start from: the teacher, then corpus children of its accuracy/size Pareto front,
    evenly spread over the front's sizes (the best children at each size)."""
    starts = [np.asarray(teacher_tokens, np.int32)]
    if num_starts > 1 and len(corpus_tokens):
        front = pareto_front(corpus_params, corpus_accuracy)
        picks = np.unique(np.round(np.linspace(0, len(front) - 1, min(num_starts - 1, len(front)))).astype(int))
        starts.extend(np.asarray(corpus_tokens[front[picks]], np.int32))
    return np.stack(starts)


def search(embedding: embedding_lib.Embedding, teacher: archspec.ArchSpec, config: SearchConfig, *,
           corpus_tokens: Optional[np.ndarray] = None, corpus_params: Optional[np.ndarray] = None,
           corpus_accuracy: Optional[np.ndarray] = None, optimiser=None) -> SearchResult:
    """Runs the latent search from the teacher (and corpus starts): its candidates and diagnostics."""
    tokenizer = embedding.tokenizer
    teacher_tokens = tokenizer.encode(teacher)
    empty = np.zeros((0,) + tokenizer.shape, np.int32)
    corpus_tokens = empty if corpus_tokens is None else np.asarray(corpus_tokens, np.int32)
    starts_tokens = choose_starts(teacher_tokens, corpus_tokens,
                                  np.zeros(len(corpus_tokens)) if corpus_params is None else corpus_params,
                                  np.zeros(len(corpus_tokens)) if corpus_accuracy is None else corpus_accuracy,
                                  config.num_starts)
    starts_z = embedding.encode(starts_tokens)
    lambdas = np.asarray(config.lambdas, np.float32)
    z0 = np.repeat(starts_z, len(lambdas), axis=0)
    code_starts = np.repeat(np.arange(len(starts_z)), len(lambdas))

    begin = time.perf_counter()
    result = run_loop(embedding, z0, np.tile(lambdas, len(starts_z)), config, optimiser)
    loop_seconds = time.perf_counter() - begin

    begin = time.perf_counter()
    snapshots = result["snapshots"]  # [S, N, L, C]
    known = {t.tobytes() for t in corpus_tokens} | {teacher_tokens.tobytes()}
    masks = None if config.skeleton == "free" else tokenizer.skeleton_mask(
        teacher_tokens, shrink_kernels=config.skeleton == "teacher")
    new, decoded, distinct, in_corpus = _new_architectures(embedding, snapshots, known, masks)
    candidates = _candidates(embedding, new, snapshots.shape[1], code_starts, config)
    decode_seconds = time.perf_counter() - begin

    teacher_prediction = embedding.predict(embedding.encode(teacher_tokens[None]))
    distance = np.sqrt(np.mean(np.square(result["final"] - z0), axis=(1, 2)))
    return SearchResult(
        candidates=candidates, teacher_prediction={k: float(v[0]) for k, v in teacher_prediction.items()},
        starts=int(len(starts_z)), codes=int(len(z0)), objective_first=float(np.mean(result["objective"][0])),
        objective_last=float(np.mean(result["objective"][-1])), max_radius=float(distance.max()),
        seconds=loop_seconds, decode_seconds=decode_seconds, decoded=decoded, distinct=distinct,
        in_corpus=in_corpus)


def _new_architectures(embedding: embedding_lib.Embedding, snapshots: np.ndarray, known: set,
                       masks: Optional[List[np.ndarray]]):
    """Decodes every snapshot [S, N, L, C]; returns (new, decoded, distinct, in_corpus), where new lists
    (first snapshot index, simplified spec, its tokens) for each distinct architecture not in `known`.

    Every distinct decode is simplified (the decoder repeats batch norms and activations) and
    re-encoded: two decodes that differ only in such repeats are one candidate, scored as it will be
    built."""
    tokenizer = embedding.tokenizer
    flat = snapshots.reshape((-1,) + snapshots.shape[2:])
    decoded = embedding.decode(flat, masks)
    first: Dict[bytes, int] = {}
    for index, tokens in enumerate(decoded):
        first.setdefault(tokens.tobytes(), index)
    seen: Dict[bytes, Optional[Tuple[int, archspec.ArchSpec, np.ndarray]]] = {}
    in_corpus = 0
    for index, spec in zip(first.values(), tokenizer.decode_batch(decoded[list(first.values())])):
        spec = archspec.simplified(spec)
        tokens = tokenizer.encode(spec)
        key = tokens.tobytes()
        if key not in seen:
            in_corpus += key in known
            seen[key] = None if key in known else (index, spec, tokens)
    new = [entry for entry in seen.values() if entry is not None]
    return new, int(len(flat)), int(len(seen)), int(in_corpus)


def _candidates(embedding: embedding_lib.Embedding, new, n_codes: int, code_starts: np.ndarray,
                config: SearchConfig) -> List[Candidate]:
    """`Candidate`s of the new architectures, scored on their re-encoded tokens, sorted by params."""
    if not new:
        return []
    input_shape, num_classes = embedding.input_shape, embedding.num_classes
    new_indices, specs, new_tokens = zip(*new)
    predicted = embedding.predict(embedding.encode(np.stack(new_tokens)))
    candidates = []
    for j, (index, spec) in enumerate(zip(new_indices, specs)):
        snapshot, code = divmod(index, n_codes)
        candidates.append(Candidate(
            spec=spec, params=spec.count_params(input_shape, num_classes),
            flops=spec.count_flops(input_shape, num_classes),
            predicted_accuracy=float(predicted["accuracy"][j]),
            predicted_log_params=float(predicted["log_params"][j]), start=int(code_starts[code]),
            lam=config.lambdas[code % len(config.lambdas)], step=int(snapshot * config.snapshot_every)))
    candidates.sort(key=lambda c: (c.params, -c.predicted_accuracy))
    return candidates
