"""Token encoding of an `archspec.ArchSpec`: a fixed-size integer matrix.

Layout
------
A spec becomes an ``int32`` matrix of shape ``(max_layers, len(tokenizer.fields))``.
Row ``i`` is layer ``i`` of the spec (so "position" and "layer index" are the same
number); column ``j`` is the field ``tokenizer.fields[j]``: ``kind`` first, then the
layer fields of `archspec.FIELDS` in their order (kernel, stride, filters, padding,
activation, rate, use_bias, shortcut, expansion), except that an optional field
(`OPTIONAL_FIELDS`: ``expansion``, which only ``inverted`` uses) has its column only
when a kind of the `SearchSpace` uses it (``space.uses(field)``). A space of the
classic kinds (the default one included) therefore keeps the original nine columns,
`FIELDS`, and the very same token values, so stored corpora decode unchanged; a
space with ``inverted`` has ten, `ALL_FIELDS`. The per-tokenizer ``fields`` is the
authority; `FIELDS` is only the classic layout. Every column has its own
vocabulary, with one layout shared by all columns::

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
Decoding walks positions in order and, within a position, the columns in
``fields`` order. `Tokenizer.legal_mask` says which tokens may come next given
everything before; the column order is what makes this a one-pass rule: the
padding mask knows the kernel (a window must fit), the shortcut mask knows the
stride and the width (an identity shortcut needs stride 1 and matching channels).
The rules:

- kind: only the space's kinds; spatial-only kinds (conv, dwconv, sepconv, pools,
  the blocks basic/bottleneck/bottleneck_v1, inverted) before the one transition
  (gap, gmp, flatten), dense after it; PAD only once the spec is flat (so never at
  position 0); the last position of a still-spatial spec must be a transition;
  after a PAD kind everything is PAD;
- a field the kind does not use: NA only; a field it uses: any space value, except
  an identity shortcut (basic, bottleneck, bottleneck_v1) needs stride 1 and, where
  the input channels are known (from an earlier conv/sepconv/dense/block/inverted,
  or from ``input_shape``), ``out_filters == channels`` (4 x filters for the
  bottlenecks);
- with ``input_shape`` (H, W, C): the padding of a windowed kind (conv, dwconv,
  sepconv, maxpool, avgpool) must let the window fit the current size: 'same'
  always, 'valid' where ``kernel <= size``, an integer p (zero padding on every
  side) where ``kernel <= size + 2p``. Residual blocks and ``inverted`` pad 'same'
  inside, so they fit any size. Spaces without 'same' padding or without projection
  shortcuts get look-ahead masks (kernel, stride, width, and the kind itself) so
  decoding never reaches a dead end: a windowed kind only where some kernel and
  some padding of the space fit, a kernel only if some padding fits it, and a
  block without projection shortcuts only with stride 1 and a width whose output
  matches the channels. ``inverted`` needs no shortcut rule (its residual follows
  from the shapes), so any stride and width are legal for it.

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

from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from acompress import archspec
from acompress import search_space

FORMAT_VERSION = 1
# Layer fields whose column a token matrix has only when a kind of the space uses them.
OPTIONAL_FIELDS = ("expansion",)
# Every possible column, in order; a tokenizer's `fields` is this less the optional
# fields its space does not use.
ALL_FIELDS = ("kind",) + archspec.FIELDS
# The classic layout (the default space's, and any space without `inverted`). Code that
# handles tokens should use `Tokenizer.fields`, which is authoritative.
FIELDS = tuple(field for field in ALL_FIELDS if field not in OPTIONAL_FIELDS)
PAD = 0
NA = 1
FIRST_VALUE = 2

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
        self._fields = tuple(field for field in ALL_FIELDS
                             if field not in OPTIONAL_FIELDS or self._space.uses(field))
        self._field_index = {name: index for index, name in enumerate(self._fields)}
        self._values = {field: tuple(self._space.values(field)) for field in self._fields}
        self._token_of = {field: {value: FIRST_VALUE + index for index, value in enumerate(values)}
                          for field, values in self._values.items()}
        self._vocab_sizes = tuple(FIRST_VALUE + len(self._values[field]) for field in self._fields)
        self._all_values = {field: np.arange(FIRST_VALUE, size) for field, size in zip(self._fields, self._vocab_sizes)}
        self._only = {PAD: np.array([PAD]), NA: np.array([NA])}
        paddings = self._values["padding"]
        self._has_same = "same" in paddings
        # The most zero padding a padding of the space adds on each side ('valid' adds 0);
        # None when no padding but 'same' (or none at all) is allowed.
        amounts = [_pad_amount(p) for p in paddings if p != "same"]
        self._max_pad = max(amounts) if amounts else None
        self._has_projection = "projection" in self._values["shortcut"]
        self._min_kernel = min(self._values["kernel"]) if self._values["kernel"] else None
        self._blocks = tuple(kind for kind in archspec.BLOCKS if kind in self._values["kind"])
        self._cache: Dict[tuple, np.ndarray] = {}
        # Per kind, the row template (NA where unused) and the columns it fills.
        self._kind_rows = {}
        layer_fields = self._fields[1:]
        for kind in self._values["kind"]:
            used = archspec.KIND_FIELDS[kind]
            row = np.array([self._token_of["kind"][kind]] + [PAD if f in used else NA for f in layer_fields],
                           dtype=np.int32)
            self._kind_rows[kind] = (row, tuple((self._field_index[f], f) for f in layer_fields if f in used))

    # -- description -----------------------------------------------------------
    @property
    def space(self) -> search_space.SearchSpace:
        return self._space

    @property
    def fields(self) -> Tuple[str, ...]:
        """The columns of this tokenizer's matrices: `FIELDS`, plus ``expansion`` if the space uses it."""
        return self._fields

    @property
    def shape(self) -> Tuple[int, int]:
        """(max_layers, len(fields)): the shape of one token matrix."""
        return (self._space.max_layers, len(self._fields))

    @property
    def vocab_sizes(self) -> Tuple[int, ...]:
        """Vocabulary size of each column, in `fields` order (PAD and NA included)."""
        return self._vocab_sizes

    @property
    def max_vocab_size(self) -> int:
        """The last axis of a single padded logits array."""
        return max(self._vocab_sizes)

    def vocabulary(self, field: str) -> Tuple:
        """The labels of the tokens of `field`: ('<pad>', '<na>', value, value, ...)."""
        return ("<pad>", "<na>") + self._values[self._fields[self._column(field)]]

    def token(self, field: str, value) -> int:
        """The token of an allowed `value` of `field`."""
        self._column(field)
        try:
            return self._token_of[field][value]
        except (KeyError, TypeError):
            raise search_space.OutOfSearchSpaceError(f"{value!r} is not an allowed {field}", None, field) from None

    def value(self, field: str, token: int):
        """The value a value token stands for (PAD and NA have none)."""
        self._column(field)
        if not FIRST_VALUE <= token < FIRST_VALUE + len(self._values[field]):
            raise archspec.SpecError(f"token {token} is not a value token of this field", None, field)
        return self._values[field][token - FIRST_VALUE]

    def _column(self, field: Union[str, int]) -> int:
        """The column of a field name or index; ValueError if this layout has no such column."""
        if isinstance(field, str):
            column = self._field_index.get(field)
        elif isinstance(field, (int, np.integer)) and not isinstance(field, bool):
            column = int(field) if 0 <= field < len(self._fields) else None
        else:
            column = None
        if column is None:
            raise ValueError(f"unknown field {field!r}; this tokenizer's fields are {self._fields}")
        return column

    def to_dict(self) -> dict:
        return {"format_version": FORMAT_VERSION, "fields": list(self._fields),
                "search_space": self._space.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> "Tokenizer":
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"token format {data.get('format_version')!r} does not match this package's "
                             f"(format {FORMAT_VERSION})")
        tokenizer = cls(search_space.SearchSpace.from_dict(data["search_space"]))
        if tuple(data.get("fields", ())) != tokenizer.fields:
            raise ValueError(f"token layout {data.get('fields')!r} does not match the one this package gives "
                             f"the stored search space ({list(tokenizer.fields)})")
        return tokenizer

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
        """[batch, max_layers, len(fields)] tokens."""
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
        for column, field in enumerate(self._fields[1:], start=1):
            token = int(row[column])
            if field in used:
                values[field] = self._decode_value(token, position, field)
            elif token != NA:
                raise archspec.SpecError(f"kind {kind!r} does not use this field: expected NA ({NA}), "
                                         f"got token {token}", position, field)
        return archspec.Layer(kind, **values)

    def _decode_value(self, token: int, position: int, field: str):
        size = self._vocab_sizes[self._field_index[field]]
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
                                     bad_position, self._fields[column])

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
        column = self._column(field)
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
            stop = column if p == position else len(self._fields)
            for c in range(stop):
                token = int(tokens[p, c])
                if token not in self._legal_tokens(state, p, c, tokens[p]):
                    raise archspec.SpecError(f"token {token} is not legal after the tokens before it "
                                             f"(legal: {self._legal_tokens(state, p, c, tokens[p]).tolist()})",
                                             p, self._fields[c])
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
        fields = self._fields
        chosen = {fields[c]: self._values[fields[c]][int(row[c]) - FIRST_VALUE]
                  for c in range(1, column) if int(row[c]) >= FIRST_VALUE}
        return self._field_tokens(state, kind, chosen, fields[column])

    def _advance_row(self, state: _Prefix, row: np.ndarray) -> _Prefix:
        if int(row[0]) == PAD:
            return state._replace(ended=True)
        values = [self._values[f][int(t) - FIRST_VALUE] if t >= FIRST_VALUE else None
                  for f, t in zip(self._fields, row)]
        return self._advance(state, values[0], dict(zip(self._fields[1:], values[1:])))

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
                   tuple(self._block_possible(state, kind) for kind in self._blocks))
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
            window_ok, blocks_ok = key[2:]
            blocked = {kind for kind, ok in zip(self._blocks, blocks_ok) if not ok}
            if not window_ok:
                blocked.update(archspec.WINDOWED)
            allowed = tuple(k for k in archspec.SPATIAL_ONLY if k not in blocked)
            allowed += archspec.TRANSITIONS + archspec.ANYWHERE
        tokens = [self._token_of["kind"][kind] for kind in self._values["kind"] if kind in allowed]
        return np.array(([PAD] if key[1] == "flat" else []) + sorted(tokens), dtype=np.int64)

    def _field_tokens(self, state: _Prefix, kind: str, chosen: dict, field: str) -> np.ndarray:
        """Legal tokens of a layer field, given the layer's kind and its earlier fields."""
        if field not in archspec.KIND_FIELDS[kind]:
            return self._only[NA]
        if kind in archspec.WINDOWED and state.height is not None:
            smallest = min(state.height, state.width)
            if field == "kernel" and not self._has_same:  # some padding must fit the kernel
                reach = smallest + 2 * self._max_pad
                return self._value_tokens(("kernel", reach), lambda k: k <= reach)
            if field == "padding":
                kernel = chosen["kernel"]
                if kernel > smallest:  # 'valid' does not fit; 'same' and enough zero padding do
                    return self._value_tokens(("padding", kernel - smallest),
                                              lambda p: _window_fits(kernel, p, smallest))
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
        if self._has_same or state.height is None:
            return True
        if self._min_kernel is None or self._max_pad is None:
            return False  # no windowed kind can be in such a space anyway
        return self._min_kernel <= min(state.height, state.width) + 2 * self._max_pad

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
        if kind in archspec.WINDOWED:
            height, width = _window_out(state, values["kernel"], values["stride"], values["padding"])
            channels = values["filters"] if kind in ("conv", "sepconv") else state.channels  # dwconv, pools keep
            return _Prefix(False, False, channels, height, width)
        if kind in archspec.BLOCKS or kind == "inverted":  # 'same' inside: only the stride shrinks
            height, width = _window_out(state, 1, values["stride"], "same")
            return _Prefix(False, False, _block_out(kind, values["filters"]), height, width)
        return state  # bn, act, dropout, dense (flat: nothing left to track)

    # -- the teacher's skeleton -------------------------------------------------
    def skeleton_mask(self, template, shrink_kernels: bool = True) -> List[np.ndarray]:
        """Which tokens keep a decode a *child* of the spec `template` (a spec or its token matrix).

        A child of the template has its layers, kinds and every field, except that it
        may be narrower and use smaller kernels: ``filters`` and ``expansion`` take any
        space value up to the template's, ``kernel`` any space value up to the
        template's of the same parity where the window pads 'same' (or pads inside, as
        the blocks and ``inverted`` do; pools keep theirs). Such a child inherits every
        layer of the template by alignment (`inheritance`), as a pruned network does.
        The legality masks still apply on top: where a residual block's identity
        shortcut no longer matches its narrowed input, the decode takes a projection
        shortcut (fresh weights) instead.

        With ``shrink_kernels=False`` every kernel stays the template's: only the widths
        (``filters``, ``expansion``) shrink, the search space of filter pruning.

        Returns:
          per-field bool arrays [max_layers, vocab_sizes[f]], in `fields` order, to mask
          logits with (`apply_mask`) before `masked_greedy_decode_batch`, which still
          applies its own legality masks on top.
        """
        rows = self.encode(template) if isinstance(template, archspec.ArchSpec) else np.asarray(template, np.int32)
        if rows.shape != self.shape:
            raise archspec.SpecError(f"template has shape {rows.shape}, expected {self.shape}")
        masks = [np.zeros((self.shape[0], size), dtype=bool) for size in self._vocab_sizes]
        for position, row in enumerate(rows):
            kind = None if int(row[0]) == PAD else self._values["kind"][int(row[0]) - FIRST_VALUE]
            for column, field in enumerate(self._fields):
                token = int(row[column])
                masks[column][position, token] = True
                if token < FIRST_VALUE or not self._shrinkable(kind, field, row, shrink_kernels):
                    continue
                value = self._values[field][token - FIRST_VALUE]
                for other, candidate in enumerate(self._values[field]):
                    if candidate <= value and (field != "kernel" or (value - candidate) % 2 == 0):
                        masks[column][position, FIRST_VALUE + other] = True
        return masks

    def _shrinkable(self, kind: Optional[str], field: str, row: np.ndarray, shrink_kernels: bool) -> bool:
        if field in ("filters", "expansion"):
            return True
        if field != "kernel" or not shrink_kernels or kind in ("maxpool", "avgpool"):
            return False
        if "padding" not in archspec.KIND_FIELDS[kind]:
            return True  # the blocks and inverted pad 'same' inside
        return self._values["padding"][int(row[self._field_index["padding"]]) - FIRST_VALUE] == "same"

    @staticmethod
    def apply_mask(logits: List[np.ndarray], masks: List[np.ndarray]) -> List[np.ndarray]:
        """Per-field logits [batch, max_layers, V_f] with every token outside `masks` at -inf."""
        return [np.where(mask[None], scores, -np.inf).astype(scores.dtype) for scores, mask in zip(logits, masks)]

    # -- greedy decoding -------------------------------------------------------
    def masked_greedy_decode(self, logits: LogitsLike, input_shape: Optional[Sequence[int]] = None) -> np.ndarray:
        """The token matrix that takes the highest-scoring legal token at every step.

        Args:
          logits: per-field scores, either a list of len(fields) arrays, field f of shape
            [max_layers, vocab_sizes[f]], or one array [max_layers, len(fields), V] with
            V >= max_vocab_size (entries past a field's vocabulary are ignored).
          input_shape: optional (H, W, C); if given, the result builds for it.

        Returns:
          int32 tokens of `shape`; `decode` of them is a valid spec in the space.
        """
        return self._greedy(self._split_logits(logits, batched=False), _initial_prefix(input_shape))

    def masked_greedy_decode_batch(self, logits: LogitsLike,
                                   input_shape: Optional[Sequence[int]] = None) -> np.ndarray:
        """`masked_greedy_decode` over a leading batch axis: [batch, max_layers, len(fields)]."""
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
        width = len(self._fields)
        if isinstance(logits, (list, tuple)):
            if len(logits) != width:
                raise ValueError(f"expected {width} per-field logit arrays, got {len(logits)}")
            arrays = [np.asarray(scores) for scores in logits]
        else:
            padded = np.asarray(logits)
            if padded.ndim != lead + 2 or padded.shape[-2] != width or padded.shape[-1] < self.max_vocab_size:
                raise ValueError(f"padded logits must have shape [{'batch, ' if batched else ''}max_layers, "
                                 f"{width}, >={self.max_vocab_size}], got {padded.shape}")
            arrays = [padded[..., column, :size] for column, size in enumerate(self._vocab_sizes)]
        for field, scores, size in zip(self._fields, arrays, self._vocab_sizes):
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
    """Output channels of a block (or inverted) layer with `filters`."""
    return archspec.BOTTLENECK_EXPANSION * filters if kind in ("bottleneck", "bottleneck_v1") else filters


def _pad_amount(padding: Union[str, int]) -> int:
    """Zero padding added on each side by a non-'same' padding ('valid' adds none)."""
    return 0 if padding == "valid" else int(padding)


def _window_fits(kernel: int, padding: Union[str, int], size: int) -> bool:
    """Whether a `kernel` window with `padding` fits an input of `size` (along the smaller axis)."""
    return padding == "same" or kernel <= size + 2 * _pad_amount(padding)


def _window_out(state: _Prefix, kernel: int, stride: int,
                padding: Union[str, int]) -> Tuple[Optional[int], Optional[int]]:
    if state.height is None:
        return None, None
    return (archspec.spatial_out(state.height, kernel, stride, padding),
            archspec.spatial_out(state.width, kernel, stride, padding))


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
