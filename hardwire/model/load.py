"""Open a checkpoint of any supported format as a `Model` that streams float32 tensors.

A `Model` never holds all weights: `tensor(name)` reads one tensor (memory-mapped where the format
allows) and checks its shape against the spec, so a 70B checkpoint can be inspected and frozen layer
by layer on a small machine.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from hardwire.errors import BadCheckpoint
from hardwire.model.spec import ModelSpec

PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl")
PICKLE_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


@dataclass
class Model:
    """A checkpoint opened for streaming.

    `read_tensor(name)` is the format's reader; it returns the tensor in canonical layout
    (see `ModelSpec.tensor_shapes`), any float dtype.
    """

    spec: ModelSpec
    path: Path
    format: str                                   # "hf" | "gguf" | "llama2c"
    read_tensor: Callable[[str], np.ndarray]
    tokenizer: object | None = None               # hardwire.model.tokenizer.Tokenizer
    dtypes: dict[str, str] = field(default_factory=dict)   # storage dtype per canonical name
    close: Callable[[], None] = lambda: None

    def tensor(self, name: str) -> np.ndarray:
        shapes = self.spec.tensor_shapes()
        if name not in shapes:
            raise KeyError(f"{name!r} is not a tensor of this model")
        array = self.read_tensor(name)
        if tuple(array.shape) != shapes[name]:
            raise BadCheckpoint(f"tensor {name} has shape {tuple(array.shape)}, expected {shapes[name]}",
                                path=self.path)
        if not np.issubdtype(array.dtype, np.floating):
            raise BadCheckpoint(f"tensor {name} has dtype {array.dtype}, expected a float type", path=self.path)
        array = np.asarray(array, dtype=np.float32)
        if not np.all(np.isfinite(array)):
            raise BadCheckpoint(f"tensor {name} contains NaN or infinity", path=self.path)
        return array

    def output_matrix(self) -> np.ndarray:
        """The classifier [vocab, hidden]: the embedding when tied."""
        return self.tensor(self.spec.classifier)

    def layer(self, index: int) -> dict[str, np.ndarray]:
        return {n: self.tensor(f"layers.{index}.{n}") for n in self.spec.layer_tensor_shapes()}

    def iter_tensors(self) -> Iterator[tuple[str, np.ndarray]]:
        for name in self.spec.tensor_shapes():
            yield name, self.tensor(name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def half_rotary_from_interleaved(weight: np.ndarray, heads: int) -> np.ndarray:
    """Reorder q/k projection rows from interleaved RoPE pairs (Meta, llama2.c, GGUF) to the
    rotate-half layout Hugging Face uses: within each head, rows (2j, 2j+1) become (j, j + d/2)."""
    rows, cols = weight.shape
    head_dim = rows // heads
    return weight.reshape(heads, head_dim // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def interleaved_from_half_rotary(weight: np.ndarray, heads: int) -> np.ndarray:
    """Inverse of `half_rotary_from_interleaved` (used to write GGUF / llama2.c files)."""
    rows, cols = weight.shape
    head_dim = rows // heads
    return weight.reshape(heads, 2, head_dim // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def refuse_pickle(path: Path) -> None:
    """Never unpickle: a PyTorch pickle can run arbitrary code when loaded."""
    if path.suffix in PICKLE_SUFFIXES:
        raise BadCheckpoint("PyTorch pickle checkpoints are refused (unpickling can run code); "
                            "convert it to safetensors first, e.g. with transformers' save_pretrained("
                            "safe_serialization=True)", path=path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise BadCheckpoint(f"cannot read: {e.strerror}", path=path) from None
    if head.startswith(PICKLE_MAGIC):
        raise BadCheckpoint("this is a PyTorch pickle (zip/pickle magic), which is refused because "
                            "unpickling can run code; convert it to safetensors first", path=path)


DATA_DIR = Path(__file__).resolve().parent.parent / "data"
# Models that ship in the package, addressable by name wherever a checkpoint path is taken.
BUNDLED_MODELS = {
    "stories260k": DATA_DIR / "stories260K" / "stories260K.bin",
    "task-small": DATA_DIR / "task-models" / "task-small",
    "task-medium": DATA_DIR / "task-models" / "task-medium",
    "task-large": DATA_DIR / "task-models" / "task-large",
}


def bundled_model_path(name: str = "stories260k") -> Path:
    return BUNDLED_MODELS[name]


def resolve_model_path(path: str | os.PathLike | None) -> Path:
    """A path as given, or the bundled model a name stands for when no such file exists."""
    if path is None:
        return bundled_model_path()
    path = Path(path)
    if not path.exists() and str(path).lower() in BUNDLED_MODELS:
        return BUNDLED_MODELS[str(path).lower()]
    return path


def bundled_text_path() -> Path:
    return DATA_DIR / "tinystories_valid_1k" / "tinystories_valid_1k.txt"


class TokenizerNote(UserWarning):
    """The tokenizer has fewer pieces than the model has embedding rows: the model still runs
    (rows past the last piece are never sampled), but far fewer suggests the wrong tokenizer."""


def note_short_tokenizer(model: Model) -> None:
    pieces, rows = model.tokenizer.vocab_size if model.tokenizer else None, model.spec.vocab_size
    if pieces is None or pieces >= rows:
        return
    message = (f"{model.path}: the tokenizer has {pieces:,} pieces and the model {rows:,} embedding rows; "
               f"ids {pieces:,} and above are never sampled")
    if pieces < rows // 2:
        message += " (far fewer pieces than rows: is this the model's own tokenizer?)"
    warnings.warn(message, TokenizerNote, stacklevel=2)


def load(path: str | os.PathLike | None = None, tokenizer: str | os.PathLike | None = None) -> Model:
    """Open a checkpoint: a Hugging Face folder (or its config.json / .safetensors), a `.gguf`
    file, or a llama2.c `.bin`. With no path, the bundled stories260K model; a bundled model's name
    (`task-small`) stands for its path. A tokenizer with fewer pieces than the model's vocabulary
    gives a `TokenizerNote` warning."""
    model = _load(path, tokenizer)
    note_short_tokenizer(model)
    return model


def _load(path: str | os.PathLike | None, tokenizer: str | os.PathLike | None) -> Model:
    path = resolve_model_path(path)
    if not path.exists():
        raise BadCheckpoint("no such file or directory", path=path)
    if path.is_dir() or path.name == "config.json" or path.suffix == ".safetensors" \
            or path.name.endswith(".safetensors.index.json"):
        from hardwire.model import hf
        return hf.load_hf(path, tokenizer=tokenizer)
    refuse_pickle(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        from hardwire.model import gguf_format
        return gguf_format.load_gguf(path, tokenizer=tokenizer)
    if path.suffix == ".gguf":
        raise BadCheckpoint(f"expected GGUF magic b'GGUF', found {magic!r}", path=path)
    if path.suffix == ".bin":
        from hardwire.model import llama2c
        return llama2c.load_llama2c(path, tokenizer=tokenizer)
    raise BadCheckpoint("unrecognised checkpoint: expected a Hugging Face folder, a .safetensors/"
                        "config.json file, a .gguf file or a llama2.c .bin", path=path)
