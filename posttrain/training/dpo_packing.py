"""Padding-free DPO forwards: a right-padded batch of sequences run as packed rows, outputs read back padded.

TRL's DPO loss code works on a padded batch [chosen..., rejected...] and reads per-token outputs
(`log_probs`, ...) in that layout. `PackedForward` wraps the model so that the forward itself runs on
the batch's real tokens only, optionally with each pair's common prefix (the prompt) run once:

    padded: chosen, rejected (width 6)        packed: one row (width 9), prefix shared
    P P P C C .                               P P P C C p r r r
    P P P r r r              ------>          the rejected suffix "p r r r" starts at its last prompt
                                              token, attends to itself and to "P P", not to "C C"

A row is a list of segments: a whole sequence, or a rejected sequence's suffix after the prefix it shares
with its chosen one (which it reads from the chosen segment in the same row, through the attention mask).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from posttrain.stages.sft import MASKED_ATTENTION

# Attention implementations that take a dense 4D mask as it is, which a shared prefix needs (a suffix
# attends to tokens of another segment: position ids alone cannot say so)
DENSE_MASK_ATTENTION = ("sdpa", "eager")


@dataclass(frozen=True)
class Segment:
    """Tokens [start, start + length) of sequence `seq` of the padded batch, at column `offset` of its row.
    With `start` > 0 the segment is a suffix: its first `start` tokens are those of the segment `host`."""

    seq: int
    start: int
    length: int
    offset: int = 0
    host: Segment | None = None


class PackedForward:
    """Calls `model` on a right-padded batch with its sequences packed into rows, and returns the per-token
    outputs in the padded layout.

    Under masked attention (sdpa, eager, flex) rows are as wide as the batch's longest sequence, so no
    attention block is larger than in the padded batch; units go first-fit by decreasing length. Flash
    attention finds packed sequences in a single row only, so there they all share one row (its varlen
    kernel skips the masked blocks). Position ids restart at every sequence and, without shared prefixes, no
    attention mask is passed: that is how transformers keeps packed sequences apart (as in SFT's
    `PackedRowsCollator`); a row's unused tail is one more sequence of its own, with no labels. Each
    segment's first label is dropped, as it would follow the previous segment's last token (in the padded
    layout, too, the first token is never predicted). `one_row` forces the single-row layout.

    `share_prefix` (the batch is [chosen..., rejected...], TRL's layout): a pair's chosen and rejected
    sequences run as one unit, the chosen whole, then the rejected from its last token in common with the
    chosen (token ids and labels equal up to there), attending to that prefix in the chosen segment through a
    dense 4D mask. The rejected outputs over the prefix are the chosen's (the same tokens see the same
    context), so log-probs, loss and gradients equal the padded batch's, with the prompt computed once.
    Units are longer than sequences, so rows widen to the longest unit, and attention under a dense mask
    costs width^2 per row: a batch runs shared only where `forward_cost` estimates that cheaper (long
    prompts, short replies), else as sequences.
    """

    def __init__(self, model, one_row: bool | None = None, share_prefix: bool = False):
        self.model = model
        self.attention = _attention(model)
        self.one_row = self.attention not in MASKED_ATTENTION if one_row is None else one_row
        self.share_prefix = share_prefix
        if share_prefix and (self.one_row or self.attention not in DENSE_MASK_ATTENTION):
            raise ValueError(f"a shared prefix needs one of {DENSE_MASK_ATTENTION} attention in rows, "
                             f"not {self.attention}")

    def __call__(self, input_ids, attention_mask=None, labels=None, **kwargs):
        if attention_mask is None or labels is None or not kwargs.get("fused_lm_head"):  # not a loss forward
            return self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
        rows, width = self._layout(input_ids, attention_mask, labels)
        device = input_ids.device
        packed, padded = (t.to(device) for t in token_maps(rows, width, input_ids.shape[1]))
        ids = input_ids.new_zeros(len(rows) * width)
        ids[packed] = input_ids.reshape(-1)[padded]
        row_labels = labels.new_full((len(rows) * width,), -100)
        row_labels[packed] = labels.reshape(-1)[padded]
        row_labels[segment_starts(rows, width).to(device)] = -100
        positions = position_ids(rows, width).to(device)
        mask = None
        # a suffix's positions go on from its prefix's: position ids alone would merge it with its host
        if any(seg.host is not None for row in rows for seg in row):
            mask = attention_rows(rows, width, device)
            if self.attention == "eager":  # eager adds the mask to the scores
                mask = torch.zeros(mask.shape, device=device).masked_fill_(~mask, torch.finfo(torch.float32).min)
        outputs = self.model(input_ids=ids.view(len(rows), width), position_ids=positions, attention_mask=mask,
                             labels=row_labels.view(len(rows), width), **kwargs)
        return unpack(outputs, rows, width, input_ids.shape)

    def _layout(self, input_ids, attention_mask, labels) -> tuple[list[list[Segment]], int]:
        """Rows of whole sequences, or of pairs sharing their prefix where that is estimated cheaper."""
        lengths = attention_mask.sum(dim=1).tolist()
        rows, width = plan_rows(lengths, input_ids.shape[1], one_row=self.one_row)
        if not self.share_prefix:
            return rows, width
        prefixes = shared_prefixes(input_ids, attention_mask, labels)
        shared = plan_rows(lengths, max(input_ids.shape[1], *unit_lengths(lengths, prefixes)), prefixes)
        weights = flop_weights(self.model)
        return shared if forward_cost(*shared, *weights) < forward_cost(rows, width, *weights) else (rows, width)


def _config(model):
    """A model's config, also when wrapped (DDP, DeepSpeed, PEFT); None for an object without one."""
    return getattr(getattr(model, "module", model), "config", None)


def _attention(model) -> str:
    """The attention implementation of a model, also when wrapped."""
    return getattr(_config(model), "_attn_implementation", None) or "sdpa"


def shared_prefixes(input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> list[int]:
    """Per pair of [chosen..., rejected...]: how many leading tokens its rejected suffix can leave to the
    chosen segment. Token ids and labels agree on the first s tokens; the suffix starts at token s - 1, so
    the output that scores token s (the first that differs) comes from the suffix's own first token."""
    half = input_ids.shape[0] // 2
    same = (input_ids[:half] == input_ids[half:]) & (labels[:half] == labels[half:])
    same &= attention_mask[:half].bool() & attention_mask[half:].bool()
    common = same.long().cumprod(dim=1).sum(dim=1)
    return (common - 1).clamp(min=0).tolist()


def unit_lengths(lengths: list[int], prefixes: list[int]) -> list[int]:
    """Tokens of each pair of [chosen..., rejected...] run as one unit: the chosen, then the rejected suffix."""
    half = len(lengths) // 2
    return [lengths[j] + lengths[j + half] - k for j, k in enumerate(prefixes)]


def flop_weights(model) -> tuple[float, float]:
    """Forward FLOPs per layer, for `forward_cost`: per token through the projections (2 x their parameters),
    and per squared row width through attention (4 x the attention width: scores and values, every key
    computed, as a dense mask does). Without a decoder config (unknown model): attention counted as free."""
    config = _config(model)
    h, i = getattr(config, "hidden_size", None), getattr(config, "intermediate_size", None)
    heads = getattr(config, "num_attention_heads", None)
    if not (isinstance(h, int) and isinstance(i, int) and isinstance(heads, int)):
        return 1.0, 0.0
    head_dim = getattr(config, "head_dim", None) or h // heads
    kv = head_dim * (getattr(config, "num_key_value_heads", None) or heads)
    q = head_dim * heads
    return 2.0 * (2 * h * q + 2 * h * kv + 3 * h * i), 4.0 * q


def forward_cost(rows: list[list[Segment]], width: int, per_token: float, per_row_square: float) -> float:
    """Estimated forward FLOPs of a layout: every carried token through the projections, every row's
    width x width attention block (rows are all `width` wide, their unused tails included)."""
    tokens = sum(seg.length for row in rows for seg in row)
    return tokens * per_token + len(rows) * width * width * per_row_square


def plan_rows(lengths: list[int], width: int, prefixes: list[int] | None = None,
              one_row: bool = False) -> tuple[list[list[Segment]], int]:
    """The batch's segments in rows, and the rows' width.

    Units (a sequence, or a pair sharing its prefix) go into rows of `width` tokens first-fit by decreasing
    length; `one_row` puts them all in one row as wide as they need."""
    units: list[list[Segment]] = []
    half = len(lengths) // 2
    for i, n in enumerate(lengths):
        k = prefixes[i - half] if prefixes is not None and i >= half else 0
        if k > 0 and lengths[i - half] + n - k <= width:
            units[i - half].append(Segment(seq=i, start=k, length=n - k))  # after its chosen
        else:
            units.append([Segment(seq=i, start=0, length=n)])  # units[j] is chosen j's for every j < half
    sizes = [sum(s.length for s in unit) for unit in units]
    if one_row:
        width = sum(sizes)
        groups = [list(range(len(units)))]
    else:
        groups = first_fit_rows(sizes, width)
    rows = []
    for group in groups:
        row, offset = [], 0
        for u in group:
            host = None
            for seg in units[u]:
                placed = Segment(seg.seq, seg.start, seg.length, offset, host if seg.start else None)
                row.append(placed)
                host = host or placed
                offset += seg.length
        rows.append(row)
    return rows, width


def first_fit_rows(lengths: list[int], width: int) -> list[list[int]]:
    """Indices grouped into rows of at most `width` tokens, first-fit by decreasing length."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        r = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if r is None:
            rows.append([])
            room.append(width)
            r = len(rows) - 1
        rows[r].append(i)
        room[r] -= lengths[i]
    return rows


def token_maps(rows: list[list[Segment]], width: int, padded_width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat positions of every segment's tokens: in the packed rows, in the padded batch."""
    packed, padded = [], []
    for r, row in enumerate(rows):
        for seg in row:
            packed.append(torch.arange(seg.length) + r * width + seg.offset)
            padded.append(torch.arange(seg.length) + seg.seq * padded_width + seg.start)
    return torch.cat(packed), torch.cat(padded)


def segment_starts(rows: list[list[Segment]], width: int) -> torch.Tensor:
    """Flat packed positions of every segment's first token (their labels would follow another segment)."""
    return torch.tensor([r * width + seg.offset for r, row in enumerate(rows) for seg in row], dtype=torch.long)


def position_ids(rows: list[list[Segment]], width: int) -> torch.Tensor:
    """[rows, width]: a segment's tokens keep their positions in their sequence; a row's unused tail restarts at 0."""
    out = []
    for row in rows:
        parts = [torch.arange(seg.start, seg.start + seg.length) for seg in row]
        used = sum(seg.length for seg in row)
        if used < width:
            parts.append(torch.arange(width - used))
        out.append(torch.cat(parts))
    return torch.stack(out)


def attention_rows(rows: list[list[Segment]], width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[rows, 1, width, width] bool, True where query q may attend to key t: t <= q in the same unit, and
    either in the same segment or, for a suffix, among its host's first `start` tokens. A row's tail is a
    unit of its own. Built on `device` from per-token codes (at width 4096, 16M entries a row)."""
    unit = torch.full((len(rows), width), -1, dtype=torch.long)
    segment = torch.full((len(rows), width), -1, dtype=torch.long)
    shared = torch.zeros((len(rows), width), dtype=torch.long)  # a suffix token: its host's tokens it may see
    for r, row in enumerate(rows):
        for s, seg in enumerate(row):
            cols = slice(seg.offset, seg.offset + seg.length)
            unit[r, cols] = (seg.host or seg).offset
            segment[r, cols] = s
            shared[r, cols] = seg.start if seg.host is not None else 0
        used = sum(seg.length for seg in row)
        unit[r, used:], segment[r, used:] = width, len(row)
    unit, segment, shared = unit.to(device), segment.to(device), shared.to(device)
    index = torch.arange(width, device=device)
    causal = index[:, None] >= index[None, :]
    same_unit = unit[:, :, None] == unit[:, None, :]
    same_segment = segment[:, :, None] == segment[:, None, :]
    # key t in another segment of the unit (the host, as t <= q), among the first `shared` tokens of query q's
    in_prefix = ~same_segment & (index[None, None, :] - unit[:, None, :] < shared[:, :, None])
    return (causal & same_unit & (same_segment | in_prefix)).unsqueeze(1)


def unpack(outputs, rows: list[list[Segment]], width: int, padded_shape):
    """The outputs' per-token fields ([rows, width - 1]: column c scores the token at c + 1) in the padded
    layout ([batch, padded_width - 1]: position t scores token t + 1), zero where a sequence has no token.
    A suffix's outputs over its shared prefix are its host's."""
    batch, padded_width = padded_shape
    src, dst = [], []
    for r, row in enumerate(rows):
        for seg in row:
            seq_out = seg.seq * (padded_width - 1)
            row_out = r * (width - 1)
            n = seg.length - 1  # the segment scores its own tokens after the first
            src.append(torch.arange(n) + row_out + seg.offset)
            dst.append(torch.arange(n) + seq_out + seg.start)
            if seg.host is not None:  # tokens 1..start: scored by the host's first `start` outputs
                src.append(torch.arange(seg.start) + row_out + seg.host.offset)
                dst.append(torch.arange(seg.start) + seq_out)
    src, dst = torch.cat(src), torch.cat(dst)
    fields = {}
    for name, value in outputs.items():
        if torch.is_tensor(value) and value.dim() >= 2 and tuple(value.shape[:2]) == (len(rows), width - 1):
            flat = value.new_zeros((batch * (padded_width - 1), *value.shape[2:]))
            flat[dst.to(value.device)] = value.reshape(-1, *value.shape[2:])[src.to(value.device)]
            value = flat.view(batch, padded_width - 1, *value.shape[2:])
        fields[name] = value
    return type(outputs)(**fields)
