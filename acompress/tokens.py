"""Token encoding of an `archspec.ArchSpec`: a fixed-size integer matrix.

Layout
------
A spec becomes an ``int32`` matrix of shape ``(max_layers, len(FIELDS))``. Row ``i``
is layer ``i`` of the spec (so "position" and "layer index" are the same number);
column ``j`` is the field ``FIELDS[j]``: ``kind`` first, then the layer fields of
`archspec.FIELDS` in their order (kernel, stride, filters, padding, activation,
rate, use_bias, shortcut). Every column has its own vocabulary, with one layout
shared by all columns::

    token 0      PAD  the row is past the end of the spec; a PAD row is PAD in every column
    token 1      NA   this row's kind does not use the field (never legal in the kind column)
    token 2 + i  the i-th allowed value of the field in the `SearchSpace` (``space.values(field)[i]``)

Why this shape: the embedding model reads the matrix as a sequence over positions,
with one embedding table per column whose vectors are combined per position, and
runs a Conv1D over the positions; its decoder emits one softmax per column per
position. A fixed length lets one tensor hold any spec, and the uniform
"0 = PAD, 1 = NA, 2 + i = value i" layout keeps value tokens at the same offset in
every column, so neither the model nor the masks need per-column special cases
(the kind column keeps its NA slot, which is simply never legal, for that reason).

Masking
-------
Decoding walks positions in order and, within a position, the columns in `FIELDS`
order. `Tokenizer.legal_mask` says which tokens may come next given everything
before; the column order is what makes this a one-pass rule: the padding mask knows
the kernel (a 'valid' window must fit), the shortcut mask knows the stride and the
width (an identity shortcut needs stride 1 and matching channels). The rules:

- kind: only the space's kinds; spatial-only kinds (conv, pools, blocks) before the
  one transition (gap, gmp, flatten), dense after it; PAD only once the spec is flat
  (so never at position 0); the last position of a still-spatial spec must be a
  transition; after a PAD kind everything is PAD;
- a field the kind does not use: NA only; a field it uses: any space value, except
  an identity shortcut needs stride 1 and, where the input channels are known (from
  an earlier conv/dense/block, or from ``input_shape``), ``out_filters == channels``;
- with ``input_shape`` (H, W, C): 'valid' padding only where the window fits the
  current size. Spaces without 'same' padding or without projection shortcuts get
  look-ahead masks (kernel, stride, width, and the kind itself) so decoding never
  reaches a dead end.

Every sequence that only takes legal tokens decodes to a valid, in-space spec; with
an input shape it also builds (`ArchSpec.count_params` does not raise). Conversely
every in-space spec that builds for the input shape is a legal sequence. `decode`
is looser on purpose: it checks the layout and `ArchSpec` validity only, so that
any in-space spec (even one no input can build) round-trips exactly.
`masked_greedy_decode` takes the best legal token at each step, keeping an
incremental prefix state so a call costs O(max_layers x fields).

The tokenizer is a pure function of its `SearchSpace`; store ``to_dict()`` beside
anything that holds tokens and rebuild it with `Tokenizer.from_dict`.
"""

import math
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from acompress import archspec
from acompress import search_space

FORMAT_VERSION = 1
FIELDS = ("kind",) + archspec.FIELDS
PAD = 0
NA = 1
FIRST_VALUE = 2

_WINDOWED = ("conv", "maxpool", "avgpool")  # kinds with a user-chosen padding
_FIELD_INDEX = {name: index for index, name in enumerate(FIELDS)}

LogitsLike = Union[np.ndarray, Sequence[np.ndarray]]


class _Prefix(NamedTuple):
    """What the layers so far imply for the next one (the incremental decode state).

    ``channels``, ``height`` and ``width`` are None while unknown: without an input
    shape, the channels become known at the first conv/dense/block and the spatial
    size never does.
    """

    ended: bool = False
    flat: bool = False
    channels: Optional[int] = None
    height: Optional[int] = None
    width: Optional[int] = None


class Tokenizer:
    """Encodes specs of one `SearchSpace` as token matrices, decodes them, and masks decoding."""

    def __init__(self, space: Optional[search_space.SearchSpace] = None):
        self._space = search_space.SearchSpace() if space is None else space
        self._values = {field: tuple(self._space.values(field)) for field in FIELDS}
        self._token_of = {field: {value: FIRST_VALUE + index for index, value in enumerate(values)}
                          for field, values in self._values.items()}
        self._vocab_sizes = tuple(FIRST_VALUE + len(self._values[field]) for field in FIELDS)
        self._all_values = {field: np.arange(FIRST_VALUE, size) for field, size in zip(FIELDS, self._vocab_sizes)}
        self._only = {PAD: np.array([PAD]), NA: np.array([NA])}
        self._has_same = "same" in self._values["padding"]
        self._has_projection = "projection" in self._values["shortcut"]
        self._min_kernel = min(self._values["kernel"]) if self._values["kernel"] else None
        self._cache: Dict[tuple, np.ndarray] = {}
        # Per kind, the row template (NA where unused) and the columns it fills.
        self._kind_rows = {}
        for kind in self._values["kind"]:
            used = archspec.KIND_FIELDS[kind]
            row = np.array([self._token_of["kind"][kind]] + [PAD if f in used else NA for f in archspec.FIELDS],
                           dtype=np.int32)
            self._kind_rows[kind] = (row, tuple((_FIELD_INDEX[f], f) for f in archspec.FIELDS if f in used))

    # -- description -----------------------------------------------------------
    @property
    def space(self) -> search_space.SearchSpace:
        return self._space

    @property
    def fields(self) -> Tuple[str, ...]:
        return FIELDS

    @property
    def shape(self) -> Tuple[int, int]:
        """(max_layers, len(FIELDS)): the shape of one token matrix."""
        return (self._space.max_layers, len(FIELDS))

    @property
    def vocab_sizes(self) -> Tuple[int, ...]:
        """Vocabulary size of each column, in `FIELDS` order (PAD and NA included)."""
        return self._vocab_sizes

    @property
    def max_vocab_size(self) -> int:
        """The last axis of a single padded logits array."""
        return max(self._vocab_sizes)

    def vocabulary(self, field: str) -> Tuple:
        """The labels of the tokens of `field`: ('<pad>', '<na>', value, value, ...)."""
        return ("<pad>", "<na>") + self._values[field]

    def token(self, field: str, value) -> int:
        """The token of an allowed `value` of `field`."""
        try:
            return self._token_of[field][value]
        except KeyError:
            raise search_space.OutOfSearchSpaceError(f"{value!r} is not an allowed {field}", None, field) from None

    def value(self, field: str, token: int):
        """The value a value token stands for (PAD and NA have none)."""
        if not FIRST_VALUE <= token < FIRST_VALUE + len(self._values[field]):
            raise archspec.SpecError(f"token {token} is not a value token of this field", None, field)
        return self._values[field][token - FIRST_VALUE]

    def to_dict(self) -> dict:
        return {"format_version": FORMAT_VERSION, "fields": list(FIELDS), "search_space": self._space.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> "Tokenizer":
        if data.get("format_version") != FORMAT_VERSION or tuple(data.get("fields", ())) != FIELDS:
            raise ValueError(f"token layout {data.get('format_version')!r} / {data.get('fields')!r} does not "
                             f"match this package's (format {FORMAT_VERSION}, fields {list(FIELDS)})")
        return cls(search_space.SearchSpace.from_dict(data["search_space"]))

    def __eq__(self, other) -> bool:
        return isinstance(other, Tokenizer) and other._space == self._space

    def __hash__(self) -> int:
        return hash(self._space)

    def __repr__(self) -> str:
        return f"Tokenizer(shape={self.shape}, vocab_sizes={self._vocab_sizes}, space={self._space.hash})"

    # -- encode / decode -------------------------------------------------------
    def encode(self, spec: archspec.ArchSpec) -> np.ndarray:
        """The token matrix of `spec`; raises OutOfSearchSpaceError if the space cannot hold it."""
        self._space.check(spec)
        tokens = np.zeros(self.shape, dtype=np.int32)
        for position, layer in enumerate(spec):
            row, used = self._kind_rows[layer.kind]
            tokens[position] = row
            for column, field in used:
                tokens[position, column] = self._token_of[field][getattr(layer, field)]
        return tokens

    def encode_batch(self, specs: Iterable[archspec.ArchSpec]) -> np.ndarray:
        """[batch, max_layers, len(FIELDS)] tokens."""
        encoded = [self.encode(spec) for spec in specs]
        return np.stack(encoded) if encoded else np.zeros((0,) + self.shape, dtype=np.int32)

    def decode(self, tokens) -> archspec.ArchSpec:
        """The spec of a token matrix: the exact inverse of `encode`.

        Raises archspec.SpecError naming the position (= layer index) and field of the
        first malformed token: out of range, PAD or NA where a value belongs, a value
        where NA belongs, anything but PAD after the end, or a spec `ArchSpec` rejects.
        """
        tokens = self._check_matrix(tokens)
        layers = []
        for position in range(self.shape[0]):
            kind_token = int(tokens[position, 0])
            if kind_token == PAD:
                self._check_all_pad(tokens, position)
                break
            layers.append(self._decode_layer(tokens[position], position))
        if not layers:
            raise archspec.SpecError("empty spec: PAD at the first position", 0, "kind")
        return archspec.ArchSpec(layers)

    def decode_batch(self, tokens) -> List[archspec.ArchSpec]:
        return [self.decode(matrix) for matrix in np.asarray(tokens)]

    def _decode_layer(self, row: np.ndarray, position: int) -> archspec.Layer:
        kind = self._decode_value(int(row[0]), position, "kind")
        used = archspec.KIND_FIELDS[kind]
        values = {}
        for column, field in enumerate(archspec.FIELDS, start=1):
            token = int(row[column])
            if field in used:
                values[field] = self._decode_value(token, position, field)
            elif token != NA:
                raise archspec.SpecError(f"kind {kind!r} does not use this field: expected NA ({NA}), "
                                         f"got token {token}", position, field)
        return archspec.Layer(kind, **values)

    def _decode_value(self, token: int, position: int, field: str):
        size = self._vocab_sizes[_FIELD_INDEX[field]]
        if not 0 <= token < size:
            raise archspec.SpecError(f"token {token} is out of range [0, {size})", position, field)
        if token == PAD:
            raise archspec.SpecError("PAD inside a layer (a PAD row must be PAD in every column)", position, field)
        if token == NA:
            what = "NA is never a kind" if field == "kind" else "NA, but this layer's kind uses the field"
            raise archspec.SpecError(what, position, field)
        return self._values[field][token - FIRST_VALUE]

    def _check_all_pad(self, tokens: np.ndarray, position: int) -> None:
        rows, columns = np.nonzero(tokens[position:])
        if rows.size:
            bad_position, column = position + int(rows[0]), int(columns[0])
            raise archspec.SpecError(f"token {int(tokens[bad_position, column])} after the end of the spec "
                                     f"(PAD kind at position {position}); expected PAD ({PAD})",
                                     bad_position, FIELDS[column])

    def _check_matrix(self, tokens) -> np.ndarray:
        tokens = np.asarray(tokens)
        if tokens.shape != self.shape:
            raise archspec.SpecError(f"token matrix has shape {tokens.shape}, expected {self.shape}")
        if not np.issubdtype(tokens.dtype, np.integer):
            raise archspec.SpecError(f"tokens must be integers, got dtype {tokens.dtype}")
        return tokens

    # -- masking ---------------------------------------------------------------
    def legal_mask(self, tokens, position: int, field: Union[str, int],
                   input_shape: Optional[Sequence[int]] = None) -> np.ndarray:
        """Which tokens of `field` may stand at (`position`, `field`) after the prefix in `tokens`.

        The prefix is every earlier position and the earlier fields of `position`;
        later entries of `tokens` are ignored. The prefix must itself be legal (else
        archspec.SpecError naming the first illegal token). With `input_shape`
        (H, W, C) the mask also keeps every window fitting and identity shortcuts
        matching the input's channels.

        Returns:
          bool array of length ``vocab_sizes[field]``.
        """
        column = _FIELD_INDEX[field] if isinstance(field, str) else int(field)
        if not 0 <= column < len(FIELDS):
            raise ValueError(f"unknown field {field!r}; expected one of {FIELDS}")
        tokens = np.asarray(tokens)
        if tokens.shape != self.shape:
            raise archspec.SpecError(f"token matrix has shape {tokens.shape}, expected {self.shape}")
        if not 0 <= position < self.shape[0]:
            raise ValueError(f"position {position} outside [0, {self.shape[0]})")
        state = self._walk(tokens, position, column, input_shape)
        legal = self._legal_tokens(state, position, column, tokens[position])
        mask = np.zeros(self._vocab_sizes[column], dtype=bool)
        mask[legal] = True
        return mask

    def _walk(self, tokens: np.ndarray, position: int, column: int, input_shape) -> _Prefix:
        """The prefix state before `position`, checking every prefix token up to (position, column)."""
        state = _initial_prefix(input_shape)
        for p in range(position + 1):
            stop = column if p == position else len(FIELDS)
            for c in range(stop):
                token = int(tokens[p, c])
                if token not in self._legal_tokens(state, p, c, tokens[p]):
                    raise archspec.SpecError(f"token {token} is not legal after the tokens before it "
                                             f"(legal: {self._legal_tokens(state, p, c, tokens[p]).tolist()})",
                                             p, FIELDS[c])
            if p < position:
                state = self._advance_row(state, tokens[p])
        return state

    def _legal_tokens(self, state: _Prefix, position: int, column: int, row: np.ndarray) -> np.ndarray:
        """Legal tokens at `column` of a row whose earlier columns are already in `row` (and legal)."""
        if column == 0:
            return self._kind_tokens(state, position)
        kind_token = int(row[0])
        if kind_token == PAD:
            return self._only[PAD]
        kind = self._values["kind"][kind_token - FIRST_VALUE]
        chosen = {FIELDS[c]: self._values[FIELDS[c]][int(row[c]) - FIRST_VALUE]
                  for c in range(1, column) if int(row[c]) >= FIRST_VALUE}
        return self._field_tokens(state, kind, chosen, FIELDS[column])

    def _advance_row(self, state: _Prefix, row: np.ndarray) -> _Prefix:
        if int(row[0]) == PAD:
            return state._replace(ended=True)
        values = [self._values[f][int(t) - FIRST_VALUE] if t >= FIRST_VALUE else None for f, t in zip(FIELDS, row)]
        return self._advance(state, values[0], dict(zip(FIELDS[1:], values[1:])))

    def _kind_tokens(self, state: _Prefix, position: int) -> np.ndarray:
        """Legal kind tokens: phase rules, the forced transition at the end, and feasibility."""
        if state.ended:
            return self._only[PAD]
        if state.flat:
            key = ("kind", "flat")
        elif position == self.shape[0] - 1:
            key = ("kind", "last")
        else:
            key = ("kind", "spatial", self._window_possible(state),
                   self._block_possible(state, "basic"), self._block_possible(state, "bottleneck"))
        cached = self._cache.get(key)
        if cached is None:
            cached = self._cache[key] = self._kind_tokens_for(key)
        return cached

    def _kind_tokens_for(self, key: tuple) -> np.ndarray:
        if key[1] == "flat":
            allowed = archspec.FLAT_ONLY + archspec.ANYWHERE
        elif key[1] == "last":
            allowed = archspec.TRANSITIONS
        else:
            window_ok, basic_ok, bottleneck_ok = key[2:]
            blocked = {kind for kind, ok in (("basic", basic_ok), ("bottleneck", bottleneck_ok)) if not ok}
            if not window_ok:
                blocked.update(_WINDOWED)
            allowed = tuple(k for k in archspec.SPATIAL_ONLY if k not in blocked)
            allowed += archspec.TRANSITIONS + archspec.ANYWHERE
        tokens = [self._token_of["kind"][kind] for kind in self._values["kind"] if kind in allowed]
        return np.array(([PAD] if key[1] == "flat" else []) + sorted(tokens), dtype=np.int64)

    def _field_tokens(self, state: _Prefix, kind: str, chosen: dict, field: str) -> np.ndarray:
        """Legal tokens of a layer field, given the layer's kind and its earlier fields."""
        if field not in archspec.KIND_FIELDS[kind]:
            return self._only[NA]
        known_size = state.height is not None
        if field == "kernel" and kind in _WINDOWED and known_size and not self._has_same:
            smallest = min(state.height, state.width)
            return self._value_tokens(("kernel", smallest), lambda k: k <= smallest)
        if field == "padding" and known_size and chosen["kernel"] > min(state.height, state.width):
            return self._value_tokens(("padding", "same"), lambda p: p == "same")
        if kind in archspec.BLOCKS and not self._has_projection:
            if field == "stride":
                return self._value_tokens(("stride", 1), lambda s: s == 1)
            if field == "filters" and state.channels is not None:
                return self._value_tokens(("filters", kind, state.channels),
                                          lambda f: _block_out(kind, f) == state.channels)
        if field == "shortcut" and not self._identity_fits(state, kind, chosen["stride"], chosen["filters"]):
            return self._value_tokens(("shortcut", "projection"), lambda s: s == "projection")
        return self._all_values[field]

    def _value_tokens(self, key: tuple, keep) -> np.ndarray:
        """The tokens of field ``key[0]`` whose values pass `keep`, cached under `key`."""
        cached = self._cache.get(key)
        if cached is None:
            field = key[0]
            cached = np.array([self._token_of[field][v] for v in self._values[field] if keep(v)], dtype=np.int64)
            self._cache[key] = cached
        return cached

    def _window_possible(self, state: _Prefix) -> bool:
        """Whether some (kernel, padding) of the space fits the current spatial size."""
        return self._has_same or state.height is None or self._min_kernel <= min(state.height, state.width)

    def _block_possible(self, state: _Prefix, kind: str) -> bool:
        """Whether a residual block can be completed (matters only without projection shortcuts)."""
        if self._has_projection:
            return True
        if 1 not in self._values["stride"]:
            return False
        return state.channels is None or any(_block_out(kind, f) == state.channels for f in self._values["filters"])

    @staticmethod
    def _identity_fits(state: _Prefix, kind: str, stride: int, filters: int) -> bool:
        return stride == 1 and (state.channels is None or _block_out(kind, filters) == state.channels)

    @staticmethod
    def _advance(state: _Prefix, kind: str, values: dict) -> _Prefix:
        """The prefix state after one more (legal) layer."""
        if kind in archspec.TRANSITIONS:
            return _Prefix(flat=True)
        if kind in ("conv", "maxpool", "avgpool"):
            height, width = _window_out(state, values["kernel"], values["stride"], values["padding"])
            channels = values["filters"] if kind == "conv" else state.channels
            return _Prefix(False, False, channels, height, width)
        if kind in archspec.BLOCKS:
            height, width = _window_out(state, 1, values["stride"], "same")
            return _Prefix(False, False, _block_out(kind, values["filters"]), height, width)
        return state  # bn, act, dropout, dense (flat: nothing left to track)

    # -- greedy decoding -------------------------------------------------------
    def masked_greedy_decode(self, logits: LogitsLike, input_shape: Optional[Sequence[int]] = None) -> np.ndarray:
        """The token matrix that takes the highest-scoring legal token at every step.

        Args:
          logits: per-field scores, either a list of len(FIELDS) arrays, field f of shape
            [max_layers, vocab_sizes[f]], or one array [max_layers, len(FIELDS), V] with
            V >= max_vocab_size (entries past a field's vocabulary are ignored).
          input_shape: optional (H, W, C); if given, the result builds for it.

        Returns:
          int32 tokens of `shape`; `decode` of them is a valid spec in the space.
        """
        return self._greedy(self._split_logits(logits, batched=False), _initial_prefix(input_shape))

    def masked_greedy_decode_batch(self, logits: LogitsLike,
                                   input_shape: Optional[Sequence[int]] = None) -> np.ndarray:
        """`masked_greedy_decode` over a leading batch axis: [batch, max_layers, len(FIELDS)]."""
        per_field = self._split_logits(logits, batched=True)
        start = _initial_prefix(input_shape)
        batch = per_field[0].shape[0]
        out = np.zeros((batch,) + self.shape, dtype=np.int32)
        for index in range(batch):
            out[index] = self._greedy([scores[index] for scores in per_field], start)
        return out

    def _greedy(self, per_field: List[np.ndarray], state: _Prefix) -> np.ndarray:
        tokens = np.zeros(self.shape, dtype=np.int32)
        kinds = self._values["kind"]
        for position in range(self.shape[0]):
            kind_token = _best(per_field[0][position], self._kind_tokens(state, position))
            if kind_token == PAD:
                break  # the rest of the matrix stays PAD
            kind = kinds[kind_token - FIRST_VALUE]
            row, used = self._kind_rows[kind]
            tokens[position] = row
            chosen = {}
            for column, field in used:
                token = _best(per_field[column][position], self._field_tokens(state, kind, chosen, field))
                tokens[position, column] = token
                chosen[field] = self._values[field][token - FIRST_VALUE]
            state = self._advance(state, kind, chosen)
        return tokens

    def _split_logits(self, logits: LogitsLike, batched: bool) -> List[np.ndarray]:
        """Per-field score arrays ([batch,] max_layers, vocab_sizes[f]) from either accepted form."""
        lead = 2 if batched else 1
        if isinstance(logits, (list, tuple)):
            if len(logits) != len(FIELDS):
                raise ValueError(f"expected {len(FIELDS)} per-field logit arrays, got {len(logits)}")
            arrays = [np.asarray(scores) for scores in logits]
        else:
            padded = np.asarray(logits)
            if padded.ndim != lead + 2 or padded.shape[-2] != len(FIELDS) or padded.shape[-1] < self.max_vocab_size:
                raise ValueError(f"padded logits must have shape [{'batch, ' if batched else ''}max_layers, "
                                 f"{len(FIELDS)}, >={self.max_vocab_size}], got {padded.shape}")
            arrays = [padded[..., column, :size] for column, size in enumerate(self._vocab_sizes)]
        for field, scores, size in zip(FIELDS, arrays, self._vocab_sizes):
            if scores.ndim != lead + 1 or scores.shape[-2:] != (self.shape[0], size):
                raise ValueError(f"logits of field {field!r} have shape {scores.shape}, expected "
                                 f"[{'batch, ' if batched else ''}{self.shape[0]}, {size}]")
        if batched and len({scores.shape[0] for scores in arrays}) != 1:
            raise ValueError("per-field logits disagree on the batch size")
        return arrays


def _best(scores: np.ndarray, legal: np.ndarray) -> int:
    """The legal token with the highest score (ties and NaNs resolve to a legal token)."""
    if legal.size == 1:
        return int(legal[0])
    return int(legal[np.argmax(scores[legal])])


def _block_out(kind: str, filters: int) -> int:
    return archspec.BOTTLENECK_EXPANSION * filters if kind == "bottleneck" else filters


def _window_out(state: _Prefix, kernel: int, stride: int, padding: str) -> Tuple[Optional[int], Optional[int]]:
    if state.height is None:
        return None, None

    def out(size: int) -> int:
        return math.ceil(size / stride) if padding == "same" else (size - kernel) // stride + 1

    return out(state.height), out(state.width)


def _initial_prefix(input_shape: Optional[Sequence[int]]) -> _Prefix:
    if input_shape is None:
        return _Prefix()
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0
                                  for d in shape):
        raise archspec.ShapeError(f"input shape must be (height, width, channels) of positive integers, "
                                  f"got {input_shape!r}")
    height, width, channels = (int(d) for d in shape)
    return _Prefix(False, False, channels, height, width)
