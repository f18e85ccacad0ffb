"""The patch: integer LoRA adapters for one die, the contents of the chip's adapter SRAM.

A patch is one safetensors file (`NAME.patch`) whose header metadata holds a JSON manifest: the id of
the die it was trained against, the rank, the targets, the number formats, the SRAM footprint, how
it was trained, the sha256 of the tensor bytes and the patch's own id (the sha256 of the canonical
manifest without its id), so a patch is content-addressed like a die. One file because a patch is
what an operator copies onto a running chip; safetensors because it holds only arrays (nothing is
unpickled) and any reader can check it.

Each adapter changes one weight matrix W (rows x cols) of one layer by a low-rank product, in
integers only (docs/arithmetic.md §11):

    t_j  = sum_k A_jk x_k                        A: int8 [rank, cols], x the matvec's input codes
    t'_j = sat16(round(t_j * a_mult_j * 2^-a_shift))
    u_i  = sum_j B_ij t'_j                       B: int8 [rows, rank]
    T_i  = round(b_mult_i * u_i * 2^-b_shift)    added to W's accumulator A_i before requantizing

`open_patch` verifies everything and refuses, naming the field, a patch that is corrupt, truncated,
for another die, over the chip's adapter SRAM or aimed at matrices the die does not have.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hardwire.atomic import atomic_path
from hardwire.die import canonical_json
from hardwire.errors import HardwireError

PATCH_FORMAT = "hardwire-patch"
PATCH_FORMAT_VERSION = 1
MANIFEST_KEY = "hardwire_patch"

# The adapter's number formats (docs/arithmetic.md §11).
ADAPTER_CODE_BITS = 8          # A and B codes, symmetric: [-127, 127]
ADAPTER_INNER_BITS = 16        # t', the rank-sized intermediate vector
ADAPTER_A_MULT_BITS = 16       # a_mult_j, unsigned
ADAPTER_B_MULT_BITS = 23       # b_mult_i, unsigned, like the base matrices' multipliers
ADAPTER_SHIFT_BITS = 6         # a_shift, b_shift in [0, 63]
MAX_RANK = 256                 # keeps |u_i| < 2^30 and |b_mult * u| < 2^53 (§11 bounds)
CODE_LIMIT = (1 << (ADAPTER_CODE_BITS - 1)) - 1

# The matrices an adapter may target, in a layer (the same short names as the die's tensors).
TARGETS = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")
SUFFIXES = ("a", "a_mult", "a_shift", "b", "b_mult", "b_shift")


class BadPatch(HardwireError):
    """A patch file is corrupt, truncated, for another die, or does not fit the chip."""


@dataclass(frozen=True)
class Adapter:
    """One matrix's low-rank integer path (docs/arithmetic.md §11)."""

    target: str              # e.g. "layers.3.wq"
    a: np.ndarray            # int8 [rank, cols]
    a_mult: np.ndarray       # int64 [rank], < 2^16
    a_shift: int
    b: np.ndarray            # int8 [rows, rank]
    b_mult: np.ndarray       # int64 [rows], < 2^23
    b_shift: int

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])

    @property
    def rows(self) -> int:
        return int(self.b.shape[0])

    @property
    def cols(self) -> int:
        return int(self.a.shape[1])

    def sram_bits(self) -> int:
        """Bits the adapter SRAM holds for this adapter: codes, multipliers and the two shifts."""
        return (self.a.size * ADAPTER_CODE_BITS + self.b.size * ADAPTER_CODE_BITS + self.rank * ADAPTER_A_MULT_BITS
                + self.rows * ADAPTER_B_MULT_BITS + 2 * ADAPTER_SHIFT_BITS)

    def check(self, field: str) -> None:
        """Refuse values outside the §11 formats (a hand-edited or foreign file)."""
        def bad(message: str):
            raise BadPatch(message, field=field)
        if self.a.ndim != 2 or self.b.ndim != 2 or self.b.shape[1] != self.rank:
            bad(f"A must be [rank, cols] and B [rows, rank]; got {list(self.a.shape)} and {list(self.b.shape)}")
        if not 1 <= self.rank <= MAX_RANK:
            bad(f"rank must be in [1, {MAX_RANK}], got {self.rank}")
        if self.a_mult.shape != (self.rank,) or self.b_mult.shape != (self.rows,):
            bad("a_mult must have one entry per rank and b_mult one per row")
        for name, codes in (("A", self.a), ("B", self.b)):
            if codes.size and int(np.abs(codes.astype(np.int64)).max()) > CODE_LIMIT:
                bad(f"{name} codes must lie in [-{CODE_LIMIT}, {CODE_LIMIT}]")
        for name, values, bits in (("a_mult", self.a_mult, ADAPTER_A_MULT_BITS),
                                   ("b_mult", self.b_mult, ADAPTER_B_MULT_BITS)):
            if values.size and (int(values.min()) < 0 or int(values.max()) >= 1 << bits):
                bad(f"{name} must lie in [0, 2^{bits})")
        for name, shift in (("a_shift", self.a_shift), ("b_shift", self.b_shift)):
            if not 0 <= shift < 1 << ADAPTER_SHIFT_BITS:
                bad(f"{name} must lie in [0, {(1 << ADAPTER_SHIFT_BITS) - 1}], got {shift}")


def split_target(target: str) -> tuple[int, str]:
    """"layers.3.wq" -> (3, "wq")."""
    parts = target.split(".")
    if len(parts) != 3 or parts[0] != "layers" or not parts[1].isdigit() or parts[2] not in TARGETS:
        raise BadPatch(f"expected layers.<i>.<one of {', '.join(TARGETS)}>, got {target!r}", field="targets")
    return int(parts[1]), parts[2]


def parse_targets(text: str) -> tuple[str, ...]:
    """`--targets wq,wv` -> ("wq", "wv"), in datapath order, refusing unknown names."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in TARGETS]
    if not names or unknown:
        raise BadPatch(f"expected a comma-separated list of {', '.join(TARGETS)}; got {text!r}", field="--targets")
    return tuple(n for n in TARGETS if n in names)


@dataclass(frozen=True)
class Patch:
    """An opened, verified patch: its manifest and adapters by target name."""

    manifest: dict
    adapters: dict[str, Adapter]
    path: Path | None = None

    @property
    def id(self) -> str:
        return self.manifest["id"]

    @property
    def die_id(self) -> str:
        return self.manifest["die_id"]

    @property
    def name(self) -> str:
        return self.manifest.get("name") or self.id[:12]

    def sram_bits(self) -> int:
        return sum(a.sram_bits() for a in self.adapters.values())

    def sram_mib(self) -> float:
        return self.sram_bits() / 8 / 2 ** 20

    def check_die(self, die) -> None:
        """Refuse this patch on a die it was not trained for, or whose matrices differ in shape."""
        if self.die_id != die.id:
            raise BadPatch(f"this patch belongs to die {self.die_id[:16]}…, not to {die.id[:16]}… "
                           "(a patch is trained against one die's exact weights; train one for this die)",
                           path=self.path, field="die_id")
        spec = die.spec
        for target, adapter in self.adapters.items():
            layer, short = split_target(target)
            if layer >= spec.layers:
                raise BadPatch(f"the die has {spec.layers} layers; there is no {target}", path=self.path,
                               field="targets")
            shape = die.quantized(target).shape
            if (adapter.rows, adapter.cols) != tuple(shape):
                raise BadPatch(f"{target} is {list(shape)} on the die, the adapter is "
                               f"[{adapter.rows}, {adapter.cols}]", path=self.path, field="targets")

    def check_sram(self, chip_name: str, sram_mib: float) -> None:
        if self.sram_mib() > sram_mib:
            raise BadPatch(f"needs {self.sram_mib():.3f} MiB of adapter SRAM; chip {chip_name} has "
                           f"{sram_mib:g} MiB (train a lower rank or fewer targets)", path=self.path,
                           field="sram")


def patch_id(manifest: dict) -> str:
    return hashlib.sha256(canonical_json({k: v for k, v in manifest.items() if k != "id"})).hexdigest()


def _arrays(adapters: dict[str, Adapter]) -> dict[str, np.ndarray]:
    arrays = {}
    for target, a in adapters.items():
        arrays[f"{target}.a"] = np.ascontiguousarray(a.a, dtype=np.int8)
        arrays[f"{target}.a_mult"] = np.ascontiguousarray(a.a_mult, dtype=np.int64)
        arrays[f"{target}.a_shift"] = np.array([a.a_shift], dtype=np.int64)
        arrays[f"{target}.b"] = np.ascontiguousarray(a.b, dtype=np.int8)
        arrays[f"{target}.b_mult"] = np.ascontiguousarray(a.b_mult, dtype=np.int64)
        arrays[f"{target}.b_shift"] = np.array([a.b_shift], dtype=np.int64)
    return arrays


def _tensor_bytes(blob: bytes) -> bytes:
    """The data section of a serialized safetensors file (everything after its JSON header)."""
    header = int.from_bytes(blob[:8], "little")
    return blob[8 + header:]


def save_patch(path: str | os.PathLike, die_id: str, adapters: dict[str, Adapter], fields: dict) -> Patch:
    """Write the patch atomically; `fields` (name, training record, ...) go into the manifest."""
    import safetensors.numpy

    for target, adapter in adapters.items():
        adapter.check(target)
    arrays = _arrays(adapters)
    data = _tensor_bytes(safetensors.numpy.save(arrays))
    ranks = sorted({a.rank for a in adapters.values()})
    manifest = {"format": PATCH_FORMAT, "format_version": PATCH_FORMAT_VERSION, "die_id": die_id,
                "rank": ranks[0] if len(ranks) == 1 else ranks,
                "targets": list(adapters),
                "formats": {"codes_bits": ADAPTER_CODE_BITS, "inner_bits": ADAPTER_INNER_BITS,
                            "a_mult_bits": ADAPTER_A_MULT_BITS, "b_mult_bits": ADAPTER_B_MULT_BITS,
                            "shift_bits": ADAPTER_SHIFT_BITS},
                "sram_bits": sum(a.sram_bits() for a in adapters.values()),
                "tensors_sha256": hashlib.sha256(data).hexdigest(), **fields}
    manifest["id"] = patch_id(manifest)
    blob = safetensors.numpy.save(arrays, metadata={MANIFEST_KEY: canonical_json(manifest).decode()})
    assert _tensor_bytes(blob) == data   # the metadata sits in the header only
    with atomic_path(path) as temporary:
        temporary.write_bytes(blob)
    return Patch(manifest, adapters, Path(path))


def _manifest(path: Path, blob: bytes) -> dict:
    """The manifest from the safetensors header, refusing anything that is not a patch."""
    if len(blob) < 8:
        raise BadPatch("too short to be a patch (truncated?)", path=path)
    size = int.from_bytes(blob[:8], "little")
    if size > len(blob) - 8:
        raise BadPatch(f"header says {size} bytes but the file has {len(blob) - 8} (truncated?)", path=path)
    try:
        header = json.loads(blob[8:8 + size])
        manifest = json.loads(header["__metadata__"][MANIFEST_KEY])
    except (ValueError, KeyError, TypeError):
        raise BadPatch("not a hardwire patch (no manifest in the safetensors header)", path=path) from None
    if not isinstance(manifest, dict) or manifest.get("format") != PATCH_FORMAT:
        raise BadPatch(f"manifest format must be {PATCH_FORMAT!r}", path=path, field="format")
    if manifest.get("format_version") != PATCH_FORMAT_VERSION:
        raise BadPatch(f"format_version {manifest.get('format_version')!r} is not supported "
                       f"(this hardwire reads {PATCH_FORMAT_VERSION})", path=path, field="format_version")
    for key, kind in (("die_id", str), ("targets", list), ("tensors_sha256", str), ("id", str)):
        if not isinstance(manifest.get(key), kind):
            raise BadPatch(f"expected a {kind.__name__}", path=path, field=key)
    if patch_id(manifest) != manifest["id"]:
        raise BadPatch("the manifest does not hash to its id; it was modified after training", path=path, field="id")
    return manifest


def open_patch(path: str | os.PathLike) -> Patch:
    """Read and verify a patch: manifest, id, tensor hash and every adapter's formats."""
    import safetensors.numpy

    path = Path(path)
    if not path.is_file():
        raise BadPatch("no such patch file", path=path)
    blob = path.read_bytes()
    manifest = _manifest(path, blob)
    if hashlib.sha256(_tensor_bytes(blob)).hexdigest() != manifest["tensors_sha256"]:
        raise BadPatch("tensor data does not match the manifest's sha256 (corrupt or truncated)", path=path,
                       field="tensors_sha256")
    try:
        arrays = safetensors.numpy.load(blob)
    except Exception as error:          # safetensors raises its own SafetensorError
        raise BadPatch(f"unreadable tensors: {error}", path=path) from None
    adapters = {}
    for target in manifest["targets"]:
        if not isinstance(target, str):
            raise BadPatch("targets must be strings", path=path, field="targets")
        split_target(target)
        missing = [s for s in SUFFIXES if f"{target}.{s}" not in arrays]
        if missing:
            raise BadPatch(f"{target} lacks {', '.join(missing)}", path=path, field="targets")
        get = lambda s: arrays[f"{target}.{s}"]   # noqa: E731
        adapter = Adapter(target, get("a").astype(np.int8), get("a_mult").astype(np.int64), int(get("a_shift")[0]),
                          get("b").astype(np.int8), get("b_mult").astype(np.int64), int(get("b_shift")[0]))
        adapter.check(target)
        adapters[target] = adapter
    if sum(a.sram_bits() for a in adapters.values()) != manifest.get("sram_bits"):
        raise BadPatch("sram_bits does not match the adapters", path=path, field="sram_bits")
    return Patch(manifest, adapters, path)


def open_patch_for(path, die) -> Patch:
    """A patch verified against `die` (its id and its matrices' shapes)."""
    patch = open_patch(path)
    patch.check_die(die)
    return patch
