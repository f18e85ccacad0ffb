"""hardwire: turn a trained language model into a chip that is the model."""
from __future__ import annotations

# before any module compiles a function with cache=True: whose cached code is stale (numba_cache)
from hardwire import numba_cache  # noqa: F401

__version__ = "0.1.0"


def load(path=None, tokenizer=None):
    """Open a checkpoint (HF folder, GGUF, llama2.c .bin) as a streaming `Model`."""
    from hardwire.model.load import load as _load
    return _load(path, tokenizer=tokenizer)


def open_die(path):
    """Open and verify a frozen die directory."""
    from hardwire.die import open_die as _open_die
    return _open_die(path)


def engine(model_or_die=None, backend: str = "float"):
    """An inference engine over a model or die: `.logits(ids)` and `.generate(...)`."""
    from hardwire.runtime.engine import make_engine
    return make_engine(model_or_die, backend=backend)
