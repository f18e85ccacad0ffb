"""The Die: a frozen model, the artifact every later stage reads.

A die is a directory (layout and field meanings in docs/die-format.md):

    NAME.die/
      manifest.json              spec, tokenizer, plan, formats, per-file sha256, die id
      weights/embed.safetensors  one file per pipeline stage: embed, layers.{i}, head
      weights/layers.0.safetensors ...
      activations.safetensors    calibrated per-matmul input scales
      tokenizer/<file>           the tokenizer source file(s), copied

It is immutable and content-addressed: `id` is the sha256 of the canonical manifest without its
`id` field, and the manifest holds the sha256 of every other file, so the id covers every byte.
`open_die` re-hashes everything and refuses a die that differs anywhere, naming the file.
`DieWriter` builds a die in a hidden sibling directory and renames it into place only when
complete, so a killed freeze never leaves a die under the final name.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import secrets
import shutil
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from hardwire.arithmetic import HADAMARD_MAX_BLOCK, hadamard_orthonormal
from hardwire.errors import BadDie, HardwireError
from hardwire.formats import ACTIVATION_FORMATS, QuantizedTensor, WeightFormat, pack_codes, unpack_codes
from hardwire.jsonfile import parse_json
from hardwire.model.spec import ModelSpec, Weights

DIE_FORMAT = "hardwire-die"
DIE_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
HASH_CHUNK_BYTES = 1 << 24
# The datapath's integer constants (docs/arithmetic.md §10): built by the freezer
# (hardwire.freeze.tables), read by the golden model and the RTL generator (hardwire.golden.tables).
GOLDEN_TABLES_KEY = "golden_tables"        # manifest field: {"file", "version", "kv_bits"}
GOLDEN_TABLES_FILE = "golden_tables.safetensors"
TABLES_VERSION = 1
# Online transforms the datapath applies (docs/arithmetic.md §12), recorded by the freezer under
# manifest["transforms"]; a die without the entry (every die frozen before it existed) has none,
# and its manifest, hence its id, is unchanged.
ONLINE_HADAMARD_KEY = "online_hadamard"    # {"inputs": ["w_down"], "block": n, "width": ffn_dim}
ONLINE_HADAMARD_INPUTS = ("w_down",)       # the matrices whose input is transformed


def online_hadamard_block(manifest: dict) -> int:
    """§12 The block n of the die's online Walsh–Hadamard transform of the w_down input (1: none).
    The record's `inputs` and `width` are checked too: the datapath transforms only w_down's input,
    over the FFN width, and a die that says otherwise would be run wrongly without a word."""
    record = (manifest.get("transforms") or {}).get(ONLINE_HADAMARD_KEY)
    if not record:
        return 1
    field = f"transforms.{ONLINE_HADAMARD_KEY}"
    if not isinstance(record, dict):
        raise BadDie(f"expected an object with inputs, block and width, got {record!r}", field=field)
    block, width = record.get("block"), manifest.get("spec", {}).get("ffn_dim")
    if (type(block) is not int or block < 2 or block & (block - 1) or block > HADAMARD_MAX_BLOCK
            or (type(width) is int and width % block)):
        raise BadDie(f"expected a power of two in [2, {HADAMARD_MAX_BLOCK}] dividing the FFN width {width}, "
                     f"got {block!r}", field=f"{field}.block")
    if record.get("inputs") != list(ONLINE_HADAMARD_INPUTS):
        raise BadDie(f"expected {list(ONLINE_HADAMARD_INPUTS)} (the only input the datapath transforms), "
                     f"got {record.get('inputs')!r}", field=f"{field}.inputs")
    if record.get("width") != width:
        raise BadDie(f"expected the FFN width {width}, got {record.get('width')!r}", field=f"{field}.width")
    return block


def float_input_transforms(source) -> dict:
    """{matrix name: function of its float input} for the float reference of `source` (a die or a
    model): the die's online transforms (§12) as the orthonormal Q, so a die's dequantized W Q
    reads Q x and the float product is W x. Empty for a model or a die without them."""
    manifest = getattr(source, "manifest", None)
    block = online_hadamard_block(manifest) if isinstance(manifest, dict) else 1
    return {} if block == 1 else online_input_transforms(source.spec.layers, block)


def online_input_transforms(layers: int, block: int) -> dict:
    """{matrix name: Q} for the inputs of every layer the transform of block `block` reads (§12)."""
    transform = functools.partial(hadamard_orthonormal, block=block)
    return {f"layers.{i}.{short}": transform for i in range(layers) for short in ONLINE_HADAMARD_INPUTS}


def canonical_json(data: dict) -> bytes:
    """The one byte form a manifest may have: sorted keys, indent 1, ASCII, trailing newline."""
    return (json.dumps(data, sort_keys=True, indent=1, ensure_ascii=True, allow_nan=False) + "\n").encode()


def die_id(manifest: dict) -> str:
    return hashlib.sha256(canonical_json({k: v for k, v in manifest.items() if k != "id"})).hexdigest()


@runtime_checkable
class FrozenWeights(Weights, Protocol):
    """What the golden model and the RTL generator read from a die: on top of a model's spec and
    (dequantized) tensors, each matrix's integer codes and scales, the calibrated activation
    scales, and the manifest. `Die` is one; the tests also build them in memory. `isinstance(x,
    FrozenWeights)` is how code tells a die from a checkpoint's `Model`."""

    id: str
    manifest: dict

    def quantized(self, name: str) -> QuantizedTensor: ...

    def activation_scales(self) -> dict[str, float]: ...


def is_die(path: str | os.PathLike | None) -> bool:
    """Whether `path` names a die (a directory holding manifest.json) rather than a checkpoint."""
    return path is not None and Path(path).is_dir() and (Path(path) / MANIFEST).exists()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def tensor_file_stage(name: str) -> str:
    """Which weights file holds a tensor: the embedding, its layer, or the head."""
    if name.startswith("layers."):
        return "layers." + name.split(".")[1]
    return "embed" if name == "embed" else "head"


# -- writing -------------------------------------------------------------------------------------

class DieWriter:
    """Builds a die in `.NAME.partial-<random>` beside the target; `commit` renames it into place.

    Use as a context manager: leaving the block by an exception deletes the partial directory.
    A process killed mid-write leaves only the hidden partial directory, never `NAME`.
    """

    def __init__(self, path: str | os.PathLike, overwrite: bool = False):
        self.path = Path(path)
        self.overwrite = overwrite
        if self.path.exists() and not overwrite:
            raise BadDie("already exists; choose another name or pass --force to replace it", path=self.path)
        if not self.path.parent.is_dir():
            raise BadDie("the parent directory does not exist", path=self.path)
        self.partial = self.path.parent / f".{self.path.name}.partial-{secrets.token_hex(4)}"
        self.tensors: dict[str, dict] = {}
        self.files: list[str] = []

    def __enter__(self) -> "DieWriter":
        self.partial.mkdir()
        (self.partial / "weights").mkdir()
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None and self.partial.exists():
            shutil.rmtree(self.partial, ignore_errors=True)

    def write_tensors(self, stage: str, tensors: dict[str, "QuantizedTensor | np.ndarray"],
                      methods: dict[str, str] | None = None) -> None:
        """Write one weights file: quantized matrices (packed) and float32 vectors."""
        import safetensors.numpy

        relative = f"weights/{stage}.safetensors"
        arrays: dict[str, np.ndarray] = {}
        for name, tensor in tensors.items():
            entry = {"file": relative}
            if isinstance(tensor, QuantizedTensor):
                fmt = tensor.format
                arrays[f"{name}.codes"] = pack_codes(tensor.codes, fmt.bits)
                arrays[f"{name}.scales"] = np.ascontiguousarray(tensor.stored_scales)
                if tensor.zeros is not None:
                    arrays[f"{name}.zeros"] = pack_codes(tensor.zeros, fmt.bits)
                if tensor.scale_multiplier is not None:
                    arrays[f"{name}.scale_multiplier"] = np.array([tensor.scale_multiplier], np.float32)
                entry.update(kind="quantized", shape=list(tensor.shape), format=fmt.to_dict(),
                             method=(methods or {}).get(name, "rtn"), rom_bits=tensor.storage_bits())
            else:
                array = np.ascontiguousarray(tensor, dtype=np.float32)
                arrays[name] = array
                entry.update(kind="float32", shape=list(array.shape), rom_bits=32 * array.size)
            self.tensors[name] = entry
        safetensors.numpy.save_file(arrays, str(self.partial / relative))
        self.files.append(relative)

    def write_arrays(self, relative: str, arrays: dict[str, np.ndarray]) -> None:
        import safetensors.numpy

        safetensors.numpy.save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()},
                                    str(self.partial / relative))
        self.files.append(relative)

    def copy_file(self, source: Path, relative: str) -> None:
        target = self.partial / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        self.files.append(relative)

    def commit(self, fields: dict) -> "Die":
        """Hash every file, write the manifest, and move the die to its final name."""
        files = {}
        for relative in sorted(self.files):
            path = self.partial / relative
            files[relative] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
        manifest = {"format": DIE_FORMAT, "format_version": DIE_FORMAT_VERSION, **fields,
                    "tensors": self.tensors, "files": files}
        manifest["id"] = die_id(manifest)
        with open(self.partial / MANIFEST, "wb") as f:
            f.write(canonical_json(manifest))
            f.flush()
            os.fsync(f.fileno())
        for relative in self.files:
            with open(self.partial / relative, "rb") as f:
                os.fsync(f.fileno())
        if self.path.exists():          # only with overwrite=True (checked in __init__)
            retired = self.path.parent / f".{self.path.name}.retired-{secrets.token_hex(4)}"
            os.rename(self.path, retired)
            os.rename(self.partial, self.path)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(self.partial, self.path)
        return Die(self.path, manifest)


# -- reading -------------------------------------------------------------------------------------

class Die:
    """An opened, verified die. Offers the same `.spec` / `.tensor(name)` / `.tokenizer` as a
    `Model`, so the float reference runs a die directly on its dequantized weights."""

    def __init__(self, path: Path, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest
        self.spec = ModelSpec.from_dict(manifest["spec"])
        self._handles: dict[str, object] = {}
        self._tokenizer = None

    @property
    def id(self) -> str:
        return self.manifest["id"]

    @property
    def format(self) -> str:
        return "die"

    @property
    def tokenizer(self):
        if self._tokenizer is None and self.manifest.get("tokenizer"):
            from hardwire.model.tokenizer import load_tokenizer
            self._tokenizer = load_tokenizer(self.path / self.manifest["tokenizer"]["file"], self.spec.vocab_size)
        return self._tokenizer

    def _read(self, relative: str, key: str) -> np.ndarray:
        from safetensors import safe_open

        if relative not in self._handles:
            self._handles[relative] = safe_open(str(self.path / relative), framework="np")
        return self._handles[relative].get_tensor(key)

    def entry(self, name: str) -> dict:
        if name not in self.manifest["tensors"]:
            raise KeyError(f"{name!r} is not a tensor of this die")
        return self.manifest["tensors"][name]

    def quantized(self, name: str) -> QuantizedTensor:
        """Integer codes, stored scales, zero points and format of a matrix (for the golden model
        and RTL generator)."""
        entry = self.entry(name)
        if entry["kind"] != "quantized":
            raise KeyError(f"{name!r} is stored as {entry['kind']}, not quantized")
        fmt_data = entry["format"]
        fmt = WeightFormat(bits=fmt_data["bits"], group=fmt_data["group"], symmetric=fmt_data["symmetric"],
                           scale_format=fmt_data["scale_format"])
        rows, cols = entry["shape"]
        relative = entry["file"]
        codes = unpack_codes(self._read(relative, f"{name}.codes"), fmt.bits, rows * cols).reshape(rows, cols)
        scales = self._read(relative, f"{name}.scales")
        zeros = None
        if not fmt.symmetric:
            zeros = unpack_codes(self._read(relative, f"{name}.zeros"), fmt.bits, scales.size).reshape(scales.shape)
        multiplier = None
        if fmt.scale_format == "e4m4":
            multiplier = float(self._read(relative, f"{name}.scale_multiplier")[0])
        return QuantizedTensor(fmt, codes, scales, multiplier, zeros)

    def tensor(self, name: str) -> np.ndarray:
        """float32 value of a tensor: a matrix exactly as (code - zero) * scale, a vector as stored."""
        entry = self.entry(name)
        if entry["kind"] == "quantized":
            return self.quantized(name).dequantize()
        return np.asarray(self._read(entry["file"], name), dtype=np.float32)

    def output_matrix(self) -> np.ndarray:
        return self.tensor(self.spec.classifier)

    def activation_scales(self) -> dict[str, float]:
        """Per-matmul input scale: a float input x is the code round(x / scale) in the die's
        activation format (`manifest["activations"]["format"]`)."""
        info = self.manifest.get("activations")
        if not info:
            return {}
        from safetensors import safe_open
        with safe_open(str(self.path / info["file"]), framework="np") as f:
            return {key: float(f.get_tensor(key)[0]) for key in f.keys()}

    def rom_bits(self) -> int:
        return sum(entry["rom_bits"] for entry in self.manifest["tensors"].values())

    def close(self) -> None:
        self._handles.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"<Die {self.path.name} id={self.id[:12]} plan={self.manifest.get('plan', {}).get('default')}>"


def open_die(path: str | os.PathLike, verify: bool = True) -> Die:
    """Open a die directory; with `verify`, re-hash every file and refuse any difference."""
    path = Path(path)
    if not path.is_dir():
        raise BadDie("not a die directory (expected a folder with manifest.json)", path=path)
    manifest_path = path / MANIFEST
    try:
        raw = manifest_path.read_bytes()
    except OSError as e:
        raise BadDie(f"cannot read: {e.strerror}", path=manifest_path) from None
    manifest = parse_json(raw, manifest_path, BadDie, expect=None, what="manifest JSON")
    if not isinstance(manifest, dict) or manifest.get("format") != DIE_FORMAT:
        raise BadDie(f"not a hardwire die manifest (expected \"format\": \"{DIE_FORMAT}\")", path=manifest_path)
    if manifest.get("format_version") != DIE_FORMAT_VERSION:
        raise BadDie(f"die format version {manifest.get('format_version')!r} is not supported; expected "
                     f"{DIE_FORMAT_VERSION}", path=manifest_path)
    for key in ("id", "spec", "tensors", "files"):
        if key not in manifest:
            raise BadDie(f"missing field {key!r}", path=manifest_path)
    if verify:
        try:
            canonical = canonical_json(manifest)
        except ValueError:
            canonical = b""
        if raw != canonical:
            raise BadDie("bytes differ from the canonical form written at freeze time; the manifest was "
                         "modified", path=manifest_path)
        if die_id(manifest) != manifest["id"]:
            raise BadDie("content does not match the die id; the manifest was modified", path=manifest_path)
    arrays_by_file = check_manifest(path, manifest)
    if verify:
        verify_files(path, manifest)
    for relative, arrays in arrays_by_file.items():
        check_weights_file(path / relative, arrays)
    return Die(path, manifest)


def source_checkpoint(weights: FrozenWeights) -> Path | None:
    """The checkpoint a die was frozen from, if it can be found here. The manifest names it without
    its folder (so the id does not depend on where it lay; older dies hold an absolute path), so
    it is looked for as recorded, among the bundled models, beside the die, then in the working
    directory."""
    from hardwire.model.load import BUNDLED_MODELS

    recorded = (weights.manifest.get("source") or {}).get("path")
    if not recorded:
        return None
    name = Path(recorded).name
    die_folder = Path(getattr(weights, "path", ".")).resolve().parent
    candidates = [Path(recorded), *(p for p in BUNDLED_MODELS.values() if p.name == name),
                  die_folder / name, Path.cwd() / name]
    return next((p for p in candidates if p.exists()), None)


def open_model_or_die(source):
    """A die or a checkpoint, opened: a path (a die directory or any checkpoint `load` reads), or
    None for the bundled model. Anything already opened (a Model, a Die) is returned as it is."""
    if source is None or isinstance(source, (str, os.PathLike)):
        if is_die(source):
            return open_die(source)
        from hardwire.model.load import load
        return load(source)
    return source


# -- the manifest's own consistency -----------------------------------------------------------------
# The hashes prove a die is what some freeze wrote; they cannot prove that what it wrote makes sense
# (a manifest edited and re-hashed, or written by another tool). These checks refuse a manifest whose
# parts disagree with each other or point outside the die, before anything reads a tensor.

SCALE_DTYPES = {"fp16": "F16", "bf16": "U16", "e4m4": "U8"}
NUMBER = "number"           # an int or a float (never a bool)
# The manifest's schema beyond `spec`, `tensors` and `files` (checked on their own below): each field
# is a type, an object of required fields, or a tuple of alternatives (None: null allowed).
MANIFEST_SCHEMA = {
    "plan": {"default": str, "activations": str},
    "activations": {"file": str, "format": str, "bits": int, "scaling": str},
    "tokenizer": ({"file": str, "kind": str}, None),
    "calibration": dict,
    "source": dict,
    "totals": {"rom_bits": int, "matrix_rom_bits": int, "matrix_weights": int, "vector_values": int,
               "bits_per_weight": NUMBER, "code_bits_per_weight": NUMBER},
    GOLDEN_TABLES_KEY: ({"file": str, "version": int, "kv_bits": int}, None),
}
OPTIONAL_FIELDS = (GOLDEN_TABLES_KEY,)      # older dies have no golden tables; the golden model builds them


def _matches(value: object, schema: object) -> str | None:
    """None when `value` fits `schema`, else the dotted path below it that does not."""
    if isinstance(schema, tuple):
        failures = [_matches(value, option) for option in schema if option is not None]
        return None if (value is None and None in schema) or None in failures else failures[0] or ""
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return ""
        for key, child in schema.items():
            if key not in value:
                return key
            below = _matches(value[key], child)
            if below is not None:
                return f"{key}.{below}".rstrip(".")
        return None
    if schema is NUMBER:
        ok = type(value) in (int, float)
    elif schema in (int, bool):
        ok = type(value) is schema
    else:
        ok = isinstance(value, schema)
    return None if ok else ""
FILE_FIELDS = ("tokenizer", "activations", GOLDEN_TABLES_KEY)     # manifest fields naming a file


def confined_path(die_path: Path, relative: object, field: str) -> str:
    """`relative` as a path inside the die: a plain relative POSIX path, no `..`, no link out."""
    manifest_path = die_path / MANIFEST
    parts = relative.split("/") if isinstance(relative, str) else []
    if not parts or any(part in ("", ".", "..") or "\\" in part or "\0" in part for part in parts) \
            or relative.startswith("/") or relative == MANIFEST:
        raise BadDie(f"expected a relative path inside the die, got {json.dumps(relative)[:80]}",
                     path=manifest_path, field=field)
    root = die_path.resolve()
    if not (die_path / relative).resolve().is_relative_to(root):
        raise BadDie(f"{relative} leads outside the die (a symbolic link)", path=manifest_path, field=field)
    return relative


def check_manifest(path: Path, manifest: dict) -> dict[str, dict[str, tuple[str, int]]]:
    """Refuse, naming the field, a manifest whose parts disagree: a field not of its schema, a spec
    that does not build, a tensor set other than the spec's, a tensor whose shape, format, bits or
    ROM size contradict each other, a totals line that is not the sum, or any file path outside the
    die or not listed in `files`. Reads no file but the manifest; returns, per weights file, the
    arrays it must hold ({key: (dtype, elements)}) for `check_weights_file`."""
    manifest_path = path / MANIFEST

    def bad(field: str, message: str):
        raise BadDie(message, path=manifest_path, field=field)

    for key, schema in MANIFEST_SCHEMA.items():
        if key not in manifest:
            if key in OPTIONAL_FIELDS:
                continue
            bad(key, "missing field")
        wrong = _matches(manifest[key], schema)
        if wrong is not None:
            bad(f"{key}.{wrong}".rstrip("."), f"malformed: {json.dumps(manifest[key])[:80]}")
    if manifest["activations"]["format"] not in ACTIVATION_FORMATS or \
            ACTIVATION_FORMATS[manifest["activations"]["format"]] != manifest["activations"]["bits"]:
        bad("activations", f"format and bits disagree or are unknown; expected one of {ACTIVATION_FORMATS}")
    files, tensors = manifest["files"], manifest["tensors"]
    if not isinstance(files, dict) or not all(
            isinstance(v, dict) and type(v.get("bytes")) is int and v["bytes"] >= 0
            and isinstance(v.get("sha256"), str) and len(v["sha256"]) == 64 for v in files.values()):
        bad("files", "expected an object of path: {bytes, sha256}")
    for relative in files:
        confined_path(path, relative, "files")
    try:
        if not isinstance(manifest["spec"], dict):
            raise TypeError("expected an object")
        spec = ModelSpec.from_dict(manifest["spec"])
    except (HardwireError, TypeError, AttributeError, ValueError) as e:
        bad("spec", f"malformed model spec ({e})")

    def listed_file(field: str, value: object) -> str:
        relative = confined_path(path, value, field)
        if relative not in files:
            bad(field, f"{relative} is not listed in files")
        return relative

    for field in FILE_FIELDS:
        value = manifest.get(field)
        if value is not None:
            if not isinstance(value, dict):
                bad(field, "expected an object with a file, or null")
            listed_file(f"{field}.file", value.get("file"))

    expected_shapes = spec.tensor_shapes()
    if not isinstance(tensors, dict) or set(tensors) != set(expected_shapes):
        names = set(tensors) if isinstance(tensors, dict) else set()
        missing, extra = sorted(set(expected_shapes) - names), sorted(names - set(expected_shapes))
        bad("tensors", f"do not match the spec: missing {missing[:3]}, unexpected {extra[:3]}")
    arrays_by_file: dict[str, dict[str, tuple[str, int]]] = {}
    for name, entry in tensors.items():
        field = f"tensors.{name}"
        if not isinstance(entry, dict):
            bad(field, "expected an object")
        shape = entry.get("shape")
        shape = tuple(shape) if isinstance(shape, list) and all(type(d) is int for d in shape) else None
        if shape != expected_shapes[name]:
            bad(f"{field}.shape", f"{json.dumps(entry.get('shape'))[:40]} differs from {list(expected_shapes[name])} "
                                  "given by the spec")
        arrays = arrays_by_file.setdefault(listed_file(f"{field}.file", entry.get("file")), {})
        if entry.get("kind") == "float32":
            rom_bits = 32 * math.prod(shape)
            arrays[name] = ("F32", math.prod(shape))
        elif entry.get("kind") == "quantized" and len(shape) == 2:
            fmt = _manifest_format(entry.get("format"), f"{field}.format", bad)
            if not isinstance(entry.get("method"), str):
                bad(f"{field}.method", "expected the name of the quantization method")
            rows, cols = shape
            rom_bits = fmt.storage_bits(shape)
            groups = rows * fmt.groups(cols)
            arrays[f"{name}.codes"] = ("U8", math.ceil(rows * cols * fmt.bits / 8))
            arrays[f"{name}.scales"] = (SCALE_DTYPES[fmt.scale_format], groups)
            if not fmt.symmetric:
                arrays[f"{name}.zeros"] = ("U8", math.ceil(groups * fmt.bits / 8))
            if fmt.scale_format == "e4m4":
                arrays[f"{name}.scale_multiplier"] = ("F32", 1)
        else:
            bad(f"{field}.kind", f"expected \"quantized\" (a matrix) or \"float32\", got "
                                 f"{json.dumps(entry.get('kind'))[:40]}")
        if entry.get("rom_bits") != rom_bits:
            bad(f"{field}.rom_bits", f"{entry.get('rom_bits')!r} differs from {rom_bits}, what its shape and "
                                     "format store")
    total = (manifest.get("totals") or {}).get("rom_bits")
    if total is not None and total != sum(e["rom_bits"] for e in tensors.values()):
        bad("totals.rom_bits", f"{total!r} is not the sum of the tensors' rom_bits")
    return arrays_by_file


def _manifest_format(data: object, field: str, bad) -> WeightFormat:
    """The WeightFormat a manifest entry names, refused unless every field agrees with it."""
    try:
        fmt = WeightFormat(bits=data["bits"], group=data["group"], symmetric=data["symmetric"],
                           scale_format=data["scale_format"])
        consistent = fmt.to_dict() == data and type(data["bits"]) is int
    except (HardwireError, TypeError, KeyError, ValueError) as e:
        bad(field, f"not a weight format ({e})")
    if not consistent:
        bad(field, f"{json.dumps(data)[:120]} is inconsistent; {fmt.name} is {json.dumps(fmt.to_dict())}")
    return fmt


def check_weights_file(file: Path, expected: dict[str, tuple[str, int]]) -> None:
    """A weights file holds exactly the arrays its tensors need, each of the dtype and element count
    its manifest entry implies (its header checked the way every safetensors file is)."""
    from hardwire.model.safetensors_file import SafetensorsFile

    try:
        st = SafetensorsFile(file)
    except HardwireError as e:
        raise BadDie(str(e).split(": ", 1)[-1], path=file) from None
    try:
        if set(st.entries) != set(expected):
            odd = sorted(set(st.entries) ^ set(expected))
            raise BadDie(f"arrays {odd[:3]} disagree with the manifest's tensors", path=file)
        for key, (dtype, count) in expected.items():
            if st.dtype(key) != dtype or math.prod(st.shape(key)) != count:
                raise BadDie(f"array {key} is {st.dtype(key)} {list(st.shape(key))}; the manifest implies "
                             f"{dtype} with {count} elements", path=file)
    finally:
        st.close()


def verify_files(path: Path, manifest: dict) -> None:
    listed = manifest["files"]
    for relative in listed:
        confined_path(path, relative, "files")
    present = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()} - {MANIFEST}
    for extra in sorted(present - set(listed)):
        raise BadDie("is not listed in the manifest; a die is immutable (remove the file)", path=path / extra)
    for relative, expected in sorted(listed.items()):
        file = path / relative
        if not file.is_file():
            raise BadDie("is missing from the die", path=file)
        size = file.stat().st_size
        if size != expected["bytes"]:
            raise BadDie(f"has {size} bytes, the manifest says {expected['bytes']}; the file was modified",
                         path=file)
        if file_sha256(file) != expected["sha256"]:
            raise BadDie("sha256 does not match the manifest; the file was modified after freezing", path=file)

