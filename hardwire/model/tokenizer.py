"""Tokenizers: text <-> token ids, exactly as the checkpoint's own tooling does it.

Four sources, one interface (`Tokenizer`):

  kind            file                      how it encodes
  "hf"            tokenizer.json            the `tokenizers` library
  "sentencepiece" *.model                   the `sentencepiece` library
  "llama2c"       llama2.c tokenizer .bin   llama2.c's `encode`, written here (`ScoredPieceTokenizer`)
  "gguf-llama"    GGUF metadata, "llama"    the same scored-piece algorithm
  "gguf-gpt2"     GGUF metadata, "gpt2"     a byte-level BPE rebuilt in `tokenizers` from the merges

`add_tokenizer_to_gguf` writes the GGUF metadata that `tokenizer_from_gguf` reads back, so a GGUF
written by hardwire carries a tokenizer that encodes like the one it came from.

BOS/EOS follow each family's convention: `encode(text, bos=True)` adds BOS only where the
tokenizer's own configuration does (Llama 2 and llama2.c: `<s>`=1; Llama 3: `<|begin_of_text|>`
through the post-processor; Qwen2: none).
"""
from __future__ import annotations

import heapq
import json
import os
import re
import struct
from collections.abc import Mapping
from pathlib import Path

from gguf import TokenType

from hardwire.errors import BadConfig, BadTokenizer, UnsupportedModel
from hardwire.jsonfile import read_json_file

SPACE_MARK = "\u2581"          # "▁": how SentencePiece and GGUF "llama" vocabularies spell a space
BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")

# Pre-tokenizer split patterns of the byte-level BPE families, by their GGUF `tokenizer.ggml.pre`
# name (the names llama.cpp's converter writes). "gpt-2" is the ByteLevel pre-tokenizer's own regex.
PRE_TOKENIZER_PATTERNS = {
    "llama-bpe": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
             r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}
NFC_PRE_TOKENIZERS = ("qwen2",)         # families whose tokenizer.json normalises to NFC first
IGNORE_MERGES_PRE_TOKENIZERS = ("llama-bpe",)   # whole words found in the vocab skip the merges


class Tokenizer:
    """What every tokenizer offers.

    `encode(text, bos, eos)` returns ids; BOS is added only when `bos` is true *and* the family
    adds one (`add_bos`). `decode(ids)` is the inverse over a whole sequence: BOS/EOS and other
    control tokens decode to nothing, and `decode(encode(text)) == text` for any text the
    tokenizer does not normalise.
    """

    kind: str
    vocab_size: int
    bos_id: int | None
    eos_id: int | None
    add_bos: bool
    source: Path | None

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}")
        ids = self.encode_text(text)
        if bos and self.add_bos and self.bos_id is not None:
            ids.insert(0, self.bos_id)
        if eos and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

    def encode_text(self, text: str) -> list[int]:
        """Token ids of `text` alone, no BOS/EOS."""
        raise NotImplementedError

    def decode(self, ids: list[int]) -> str:
        raise NotImplementedError

    def check_ids(self, ids: list[int]) -> list[int]:
        ids = [int(i) for i in ids]
        for i in ids:
            if not 0 <= i < self.vocab_size:
                raise BadConfig(f"token id {i} is outside the vocabulary [0, {self.vocab_size})", field="ids")
        return ids

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} kind={self.kind} vocab_size={self.vocab_size} "
                f"bos_id={self.bos_id} eos_id={self.eos_id} source={self.source}>")


# ---------------------------------------------------------------------------------------------
# Scored pieces: SentencePiece-style BPE as llama2.c's run.c runs it (llama2.c .bin, GGUF "llama")

class ScoredPieceTokenizer(Tokenizer):
    """A vocabulary of pieces with scores, encoded the way llama2.c's `encode` does:

    1. prepend a dummy-prefix space when the text is non-empty (SentencePiece's add_dummy_prefix);
    2. look each code point up as a piece; one that is missing becomes its UTF-8 bytes, each the
       byte-fallback piece `<0xXX>`;
    3. repeatedly merge the adjacent pair whose concatenation is the best-scoring piece (leftmost
       on ties) until no pair is a piece.

    run.c rescans the whole sequence after every merge (quadratic); here a heap of candidate
    pairs with lazily discarded stale entries picks the same pair at every step.
    """

    def __init__(self, pieces: list[str], scores: list[float], types: list[int], *, kind: str,
                 bos_id: int | None, eos_id: int | None, unk_id: int | None = None,
                 add_bos: bool = True, add_dummy_prefix: bool = True,
                 remove_extra_whitespaces: bool = False, space: str = " ",
                 source: Path | None = None):
        self.kind = kind
        self.pieces = pieces                      # [vocab] piece text; `space` stands for " "
        self.scores = scores                      # [vocab] merge priority (higher merges first)
        self.types = types                        # [vocab] gguf.TokenType values
        self.vocab_size = len(pieces)
        self.bos_id, self.eos_id, self.unk_id = bos_id, eos_id, unk_id
        self.add_bos = add_bos
        self.add_dummy_prefix = add_dummy_prefix
        self.remove_extra_whitespaces = remove_extra_whitespaces
        self.space = space
        self.source = source
        # Only normal and user-defined pieces can be produced from text (as in SentencePiece);
        # the first id wins when a piece is listed twice.
        self.piece_id: dict[str, int] = {}
        for i, (piece, kind_of) in enumerate(zip(pieces, types)):
            if kind_of in (TokenType.NORMAL, TokenType.USER_DEFINED):
                self.piece_id.setdefault(piece, i)
        self.byte_id: list[int | None] = [None] * 256
        for i, (piece, kind_of) in enumerate(zip(pieces, types)):
            match = BYTE_PIECE.fullmatch(piece)
            if kind_of == TokenType.BYTE and match and self.byte_id[int(match.group(1), 16)] is None:
                self.byte_id[int(match.group(1), 16)] = i
        self.piece_bytes: list[bytes] = []        # [vocab] what each id decodes to
        for piece, kind_of in zip(pieces, types):
            match = BYTE_PIECE.fullmatch(piece)
            if kind_of == TokenType.CONTROL:
                self.piece_bytes.append(b"")
            elif kind_of == TokenType.BYTE and match:
                self.piece_bytes.append(bytes([int(match.group(1), 16)]))
            else:
                self.piece_bytes.append(piece.replace(space, " ").encode("utf-8", "surrogateescape"))

    def encode_text(self, text: str) -> list[int]:
        if self.remove_extra_whitespaces:
            text = " ".join(word for word in text.split(" ") if word)
        if not text:
            return []
        if self.add_dummy_prefix:
            text = " " + text
        if self.space != " ":
            text = text.replace(" ", self.space)
        ids: list[int] = []
        for char in text:
            piece = self.piece_id.get(char)
            if piece is not None:
                ids.append(piece)
                continue
            for byte in char.encode("utf-8", "surrogatepass"):
                fallback = self.byte_id[byte] if self.byte_id[byte] is not None else self.unk_id
                if fallback is None:
                    raise BadTokenizer(f"cannot encode {char!r}: it is not a piece and the vocabulary has "
                                       f"neither a <0x{byte:02X}> byte piece nor an unknown token",
                                       path=self.source)
                ids.append(fallback)
        return self.merge(ids)

    def merge(self, ids: list[int]) -> list[int]:
        """Greedy best-score pair merging (llama2.c `encode`'s loop), O(n log n)."""
        count = len(ids)
        if count < 2:
            return ids
        pieces, scores, piece_id = self.pieces, self.scores, self.piece_id
        # A doubly linked list over positions; a merged-away position gets id -1. Positions keep
        # their original order, so the smallest position is run.c's leftmost pair on ties.
        next_of = list(range(1, count + 1))
        next_of[-1] = -1
        prev_of = list(range(-1, count - 1))
        heap: list[tuple[float, int, int, int, int]] = []

        def candidate(left: int):
            right = next_of[left]
            if right >= 0:
                merged = piece_id.get(pieces[ids[left]] + pieces[ids[right]])
                if merged is not None:
                    heapq.heappush(heap, (-scores[merged], left, ids[left], ids[right], merged))

        for position in range(count - 1):
            candidate(position)
        while heap:
            _, left, left_id, right_id, merged = heapq.heappop(heap)
            right = next_of[left]
            # Stale unless both symbols are still the ones this entry was made from.
            if ids[left] != left_id or right < 0 or ids[right] != right_id:
                continue
            ids[left], ids[right] = merged, -1
            next_of[left] = next_of[right]
            if next_of[right] >= 0:
                prev_of[next_of[right]] = left
            candidate(left)
            if prev_of[left] >= 0:
                candidate(prev_of[left])
        return [i for i in ids if i >= 0]

    def decode(self, ids: list[int]) -> str:
        out = bytearray()
        at_start = True
        for i in self.check_ids(ids):
            if self.types[i] == TokenType.CONTROL:
                continue
            piece = self.piece_bytes[i]
            # The dummy prefix: SentencePiece drops the leading space of the first piece
            # (run.c does the same right after BOS).
            if at_start and self.add_dummy_prefix and self.types[i] != TokenType.BYTE and piece[:1] == b" ":
                piece = piece[1:]
            at_start = False
            out += piece
        return out.decode("utf-8", "replace")


def llama2c_token_types(pieces: list[str], bos_id: int, eos_id: int) -> list[int]:
    """llama2.c's file stores no token types; SentencePiece's are implied by the pieces."""
    types = []
    for i, piece in enumerate(pieces):
        if i in (bos_id, eos_id):
            types.append(TokenType.CONTROL)
        elif piece == "<unk>":
            types.append(TokenType.UNKNOWN)
        elif BYTE_PIECE.fullmatch(piece):
            types.append(TokenType.BYTE)
        else:
            types.append(TokenType.NORMAL)
    return types


class VocabMismatch(BadTokenizer):
    """The tokenizer file is well formed but holds more tokens than the model's vocabulary."""


def read_tokenizer_bytes(path: Path, expected: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadTokenizer(f"no such file, expected {expected}", path=path) from None
    except OSError as e:
        raise BadTokenizer(f"cannot read ({e.strerror}), expected {expected}", path=path) from None
    if not data:
        raise BadTokenizer(f"file is empty, expected {expected}", path=path)
    return data


def load_llama2c_tokenizer(path: str | os.PathLike, vocab_size: int | None = None) -> ScoredPieceTokenizer:
    """Read llama2.c's tokenizer.bin: int32 max_token_length, then per token float32 score,
    int32 byte length, the bytes (spaces as " "). The file does not say how many tokens it holds:
    `vocab_size` is the model's; without it, tokens are read to the end of the file."""
    path = Path(path)
    data = read_tokenizer_bytes(path, "a llama2.c tokenizer .bin")
    if len(data) < 4:
        raise BadTokenizer(f"expected an int32 max_token_length header (4 bytes), file has {len(data)}", path=path)
    (max_token_length,) = struct.unpack_from("<i", data, 0)
    if max_token_length <= 0:
        raise BadTokenizer(f"max_token_length is {max_token_length}, expected a positive int32 "
                           "(is this a llama2.c tokenizer .bin?)", path=path)
    pieces: list[str] = []
    scores: list[float] = []
    offset = 4
    while len(pieces) < vocab_size if vocab_size is not None else offset < len(data):
        token = len(pieces)
        if offset == len(data):
            raise VocabMismatch(f"file ends after {token} tokens, expected the model's vocab_size={vocab_size}: "
                                "it is not this model's tokenizer", path=path)
        if offset + 8 > len(data):
            raise BadTokenizer(f"token {token}: expected float32 score and int32 length (8 bytes), "
                               f"file ends after {len(data) - offset}", path=path)
        score, length = struct.unpack_from("<fi", data, offset)
        offset += 8
        if not 0 <= length <= max_token_length:
            raise BadTokenizer(f"token {token}: length {length} is outside [0, max_token_length="
                               f"{max_token_length}]", path=path)
        if offset + length > len(data):
            raise BadTokenizer(f"token {token}: expected {length} bytes, file ends", path=path)
        pieces.append(data[offset:offset + length].decode("utf-8", "surrogateescape"))
        scores.append(score)
        offset += length
    if offset != len(data):
        raise VocabMismatch(f"{len(data) - offset} bytes follow token {len(pieces) - 1}: the file holds more "
                            f"than the model's vocab_size={vocab_size} tokens, so it is not this model's "
                            "tokenizer", path=path)
    bos_id, eos_id = 1, 2                          # fixed in llama2.c (run.c)
    if len(pieces) <= eos_id:
        raise BadTokenizer(f"holds {len(pieces)} tokens, expected at least 3 (<unk>, <s>, </s>)", path=path)
    return ScoredPieceTokenizer(pieces, scores, llama2c_token_types(pieces, bos_id, eos_id), kind="llama2c",
                                bos_id=bos_id, eos_id=eos_id, unk_id=0, space=" ", source=path)


# ---------------------------------------------------------------------------------------------
# SentencePiece .model

class SentencePieceTokenizer(Tokenizer):
    kind = "sentencepiece"

    def __init__(self, processor, source: Path | None = None):
        self.processor = processor                # sentencepiece.SentencePieceProcessor
        self.source = source
        self.vocab_size = processor.vocab_size()
        self.bos_id = processor.bos_id() if processor.bos_id() >= 0 else None
        self.eos_id = processor.eos_id() if processor.eos_id() >= 0 else None
        self.unk_id = processor.unk_id() if processor.unk_id() >= 0 else None
        self.add_bos = self.bos_id is not None     # Llama 2 convention

    def encode_text(self, text: str) -> list[int]:
        return list(self.processor.encode(text))

    def decode(self, ids: list[int]) -> str:
        return self.processor.decode(self.check_ids(ids))

    def token_types(self) -> list[int]:
        p = self.processor
        types = []
        for i in range(self.vocab_size):
            if p.is_control(i):
                types.append(TokenType.CONTROL)
            elif p.is_unknown(i):
                types.append(TokenType.UNKNOWN)
            elif p.is_unused(i):
                types.append(TokenType.UNUSED)
            elif p.is_byte(i):
                types.append(TokenType.BYTE)
            else:
                types.append(TokenType.NORMAL)
        return types

    def normalizer_flags(self) -> tuple[bool, bool]:
        """(add_dummy_prefix, remove_extra_whitespaces), observed from behaviour because reading
        the model's NormalizerSpec would need protobuf."""
        pieces = self.processor.encode("a  a", out_type=str)
        add_dummy_prefix = bool(pieces) and pieces[0].startswith(SPACE_MARK)
        remove_extra_whitespaces = self.processor.decode(self.processor.encode("a  a")) == "a a"
        return add_dummy_prefix, remove_extra_whitespaces


def load_sentencepiece_tokenizer(path: str | os.PathLike) -> SentencePieceTokenizer:
    """Load a SentencePiece model from its bytes (never from the network)."""
    import sentencepiece

    path = Path(path)
    data = read_tokenizer_bytes(path, "a SentencePiece model (serialized ModelProto)")
    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.LoadFromSerializedProto(data)
    except Exception as e:  # sentencepiece reports every parse failure as RuntimeError/OSError
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadTokenizer(f"not a SentencePiece model ({detail})", path=path) from None
    if processor.vocab_size() <= 0:
        raise BadTokenizer("SentencePiece model has an empty vocabulary", path=path)
    return SentencePieceTokenizer(processor, source=path)


# ---------------------------------------------------------------------------------------------
# Hugging Face tokenizer.json (and GGUF "gpt2" vocabularies rebuilt as one)

class HFTokenizer(Tokenizer):
    def __init__(self, tokenizer, *, kind: str = "hf", bos_id: int | None, eos_id: int | None,
                 add_bos: bool, vocab_size: int | None = None, source: Path | None = None):
        self.tokenizer = tokenizer                # tokenizers.Tokenizer
        self.kind = kind
        self.bos_id, self.eos_id = bos_id, eos_id
        self.add_bos = add_bos and bos_id is not None
        self.source = source
        if vocab_size is None:
            vocab_size = max(tokenizer.get_vocab(with_added_tokens=True).values(), default=-1) + 1
        self.vocab_size = vocab_size

    def encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(self.check_ids(ids), skip_special_tokens=True)


def read_json(path: Path, what: str) -> dict:
    return read_json_file(path, BadTokenizer, what=what)


def special_token_text(value) -> str | None:
    """tokenizer_config.json writes a special token as a string or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def template_bos(post_processor: dict | None) -> str | None:
    """The special token a TemplateProcessing post-processor puts before a single sequence
    (Llama 3 adds <|begin_of_text|> this way, without add_bos_token in tokenizer_config.json)."""
    if not isinstance(post_processor, dict):
        return None
    if post_processor.get("type") == "Sequence":
        for inner in post_processor.get("processors") or []:
            found = template_bos(inner)
            if found is not None:
                return found
        return None
    if post_processor.get("type") != "TemplateProcessing":
        return None
    single = post_processor.get("single") or []
    if single and isinstance(single[0], dict) and "SpecialToken" in single[0]:
        return single[0]["SpecialToken"].get("id")
    return None


HF_TOKENIZER_COMPANIONS = ("tokenizer_config.json", "special_tokens_map.json")   # BOS/EOS settings


def tokenizer_files(tokenizer: Tokenizer) -> list[Path]:
    """Every file a tokenizer was read from: its source and, for tokenizer.json, the companion
    files beside it that set BOS/EOS (a copy of the tokenizer needs them all)."""
    source = getattr(tokenizer, "source", None)
    if source is None or not Path(source).is_file():
        return []
    files = [Path(source)]
    if tokenizer.kind == "hf":
        files += [Path(source).parent / n for n in HF_TOKENIZER_COMPANIONS if (Path(source).parent / n).is_file()]
    return files


def load_hf_tokenizer(path: str | os.PathLike) -> HFTokenizer:
    """Load tokenizer.json; BOS/EOS and add_bos_token come from tokenizer_config.json (then
    special_tokens_map.json, then the post-processor template) in the same folder."""
    import tokenizers

    path = Path(path)
    text = read_tokenizer_bytes(path, "a Hugging Face tokenizer.json").decode("utf-8", "replace")
    try:
        tokenizer = tokenizers.Tokenizer.from_str(text)
    except Exception as e:  # the Rust side raises a bare Exception naming the JSON problem
        raise BadTokenizer(f"not a valid Hugging Face tokenizer.json ({e})", path=path) from None
    definition = json.loads(text)
    config_name, map_name = HF_TOKENIZER_COMPANIONS
    config_path = path.parent / config_name
    config = read_json(config_path, config_name) if config_path.is_file() else {}
    map_path = path.parent / map_name
    special_map = read_json(map_path, "special_tokens_map.json") if map_path.is_file() else {}
    template_token = template_bos(definition.get("post_processor"))

    def token_id(name: str) -> int | None:
        for source in (config, special_map):
            if name in source:               # an explicit null means "this family has none"
                content = special_token_text(source[name])
                if content is None:
                    return None
                found = tokenizer.token_to_id(content)
                if found is None:
                    raise BadTokenizer(f"{name} {content!r} is not in the vocabulary of {path.name}",
                                       path=config_path if name in config else map_path, field=name)
                return found
        if name == "bos_token" and template_token is not None:
            return tokenizer.token_to_id(template_token)
        return None

    bos_id, eos_id = token_id("bos_token"), token_id("eos_token")
    if "add_bos_token" in config:
        add_bos = config["add_bos_token"]
        if type(add_bos) is not bool:       # "false" is a string, and truthy: refuse, never guess
            raise BadTokenizer(f"expected true or false, got {json.dumps(add_bos)[:40]}", path=config_path,
                               field="add_bos_token")
    else:
        add_bos = template_token is not None and tokenizer.token_to_id(template_token) == bos_id
    return HFTokenizer(tokenizer, kind="hf", bos_id=bos_id, eos_id=eos_id, add_bos=add_bos, source=path)


def gguf_pre_tokenizer_name(definition: dict) -> str:
    """The GGUF `tokenizer.ggml.pre` name of a byte-level BPE tokenizer.json, or
    UnsupportedModel when its pre-tokenizer is not one `tokenizer_from_gguf` can rebuild."""
    pre = definition.get("pre_tokenizer") or {}
    normalizer = definition.get("normalizer")
    name = None
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space"):
        name = "gpt-2"
    elif pre.get("type") == "Sequence":
        steps = pre.get("pretokenizers") or []
        if (len(steps) == 2 and steps[0].get("type") == "Split" and steps[1].get("type") == "ByteLevel"
                and not steps[1].get("use_regex") and not steps[1].get("add_prefix_space")
                and steps[0].get("behavior") == "Isolated" and not steps[0].get("invert")):
            pattern = (steps[0].get("pattern") or {}).get("Regex")
            name = next((n for n, p in PRE_TOKENIZER_PATTERNS.items() if p == pattern), None)
    expected_normalizer = "NFC" if name in NFC_PRE_TOKENIZERS else None
    if name is None or (normalizer or {}).get("type") != expected_normalizer:
        raise UnsupportedModel("a byte-level BPE tokenizer.json with pre-tokenizer "
                               f"{json.dumps(pre)[:200]} and normalizer {json.dumps(normalizer)[:100]} has no "
                               f"GGUF equivalent here; known: {', '.join(['gpt-2', *PRE_TOKENIZER_PATTERNS])}")
    return name


def byte_level_bpe(tokens: list[str], types: list[int], merges: list[str], pre: str):
    """A `tokenizers.Tokenizer` from GGUF "gpt2" metadata: vocabulary, merges ("a b"), the
    control/user-defined tokens as added tokens, and the pre-tokenizer named by `pre`."""
    from tokenizers import AddedToken, Regex, normalizers, pre_tokenizers, decoders, models
    from tokenizers import Tokenizer as RustTokenizer

    vocab: dict[str, int] = {}
    for i, (token, kind_of) in enumerate(zip(tokens, types)):
        if kind_of != TokenType.UNUSED:
            vocab.setdefault(token, i)
    pairs = []
    for number, merge in enumerate(merges):
        parts = merge.split(" ")
        if len(parts) != 2:
            raise BadTokenizer(f"merge {number} is {merge!r}, expected two tokens separated by one space",
                               field="tokenizer.ggml.merges")
        pairs.append((parts[0], parts[1]))
    tokenizer = RustTokenizer(models.BPE(vocab=vocab, merges=pairs,
                                         ignore_merges=pre in IGNORE_MERGES_PRE_TOKENIZERS))
    if pre in PRE_TOKENIZER_PATTERNS:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(PRE_TOKENIZER_PATTERNS[pre]), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:                                      # "gpt-2", "default" or absent: GPT-2's own regex
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in NFC_PRE_TOKENIZERS:
        tokenizer.normalizer = normalizers.NFC()
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                  for t, k in zip(tokens, types) if k == TokenType.CONTROL])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False)
                          for t, k in zip(tokens, types) if k == TokenType.USER_DEFINED])
    return tokenizer


# ---------------------------------------------------------------------------------------------
# GGUF metadata (tokenizer.ggml.*)

class GGUFReaderMetadata(Mapping):
    """A `gguf.GGUFReader`'s metadata as a read-only {key: value} mapping."""

    def __init__(self, reader, path=None):
        self.reader, self.path = reader, path

    def __getitem__(self, key: str):
        field = self.reader.fields[key]
        try:
            return field.contents()
        except UnicodeDecodeError as e:
            raise BadTokenizer(f"is not valid UTF-8 ({e})", path=self.path, field=key) from None

    def __iter__(self):
        return iter(self.reader.fields)

    def __len__(self) -> int:
        return len(self.reader.fields)


def tokenizer_from_gguf(metadata, path: str | os.PathLike | None = None) -> Tokenizer | None:
    """The tokenizer embedded in a GGUF file's metadata, or None when the file carries no
    vocabulary (no `tokenizer.ggml.model`, or "none").

    `metadata` is a `gguf.GGUFReader` or an already parsed {key: value} mapping (strings as str,
    arrays as lists or numpy arrays); `path` only names the file in errors.
    """
    if not isinstance(metadata, Mapping):             # a gguf.GGUFReader
        path = path if path is not None else getattr(metadata.data, "filename", None)
        metadata = GGUFReaderMetadata(metadata, path)
    model = metadata.get("tokenizer.ggml.model")
    if model is None or model in ("none", "no"):
        return None
    tokens = list(metadata.get("tokenizer.ggml.tokens") or [])
    if not tokens:
        raise BadTokenizer(f"tokenizer.ggml.model is {model!r} but there is no tokenizer.ggml.tokens list",
                           path=path, field="tokenizer.ggml.tokens")
    if not all(isinstance(token, str) for token in tokens):
        raise BadTokenizer("expected an array of strings", path=path, field="tokenizer.ggml.tokens")

    def per_token(key: str, default: list) -> list:
        values = metadata.get(key)
        if values is None:
            return default
        if not hasattr(values, "__len__") or isinstance(values, (str, bytes)):
            raise BadTokenizer(f"expected an array, got {type(values).__name__}", path=path, field=key)
        if len(values) != len(tokens):
            raise BadTokenizer(f"has {len(values)} entries, expected one per token ({len(tokens)})",
                               path=path, field=key)
        return list(values)

    def token_id(key: str, default: int | None) -> int | None:
        value = metadata.get(key, default)
        if value is not None and (type(value) is not int or not 0 <= value < len(tokens)):
            raise BadTokenizer(f"is {value}, expected a token id in [0, {len(tokens)})", path=path, field=key)
        return None if value is None else int(value)

    bos_id = token_id("tokenizer.ggml.bos_token_id", None)
    eos_id = token_id("tokenizer.ggml.eos_token_id", None)
    add_bos = metadata.get("tokenizer.ggml.add_bos_token", model == "llama")
    if type(add_bos) is not bool:
        raise BadTokenizer(f"expected a bool, got {add_bos!r:.40}", path=path, field="tokenizer.ggml.add_bos_token")
    if model == "llama":
        types = [int(t) for t in per_token("tokenizer.ggml.token_type",
                                           llama2c_token_types(tokens, bos_id, eos_id))]
        scores = [float(s) for s in per_token("tokenizer.ggml.scores", [0.0] * len(tokens))]
        return ScoredPieceTokenizer(
            tokens, scores, types, kind="gguf-llama", bos_id=bos_id, eos_id=eos_id,
            unk_id=token_id("tokenizer.ggml.unknown_token_id", None), add_bos=add_bos,
            add_dummy_prefix=bool(metadata.get("tokenizer.ggml.add_space_prefix", True)),
            remove_extra_whitespaces=bool(metadata.get("tokenizer.ggml.remove_extra_whitespaces", False)),
            space=SPACE_MARK, source=Path(path) if path else None)
    if model == "gpt2":
        types = [int(t) for t in per_token("tokenizer.ggml.token_type", [TokenType.NORMAL] * len(tokens))]
        merges = metadata.get("tokenizer.ggml.merges")
        if merges is None:
            raise BadTokenizer("tokenizer.ggml.model is 'gpt2' but there is no tokenizer.ggml.merges list",
                               path=path, field="tokenizer.ggml.merges")
        pre = metadata.get("tokenizer.ggml.pre", "default")
        if pre not in ("default", "gpt-2", *PRE_TOKENIZER_PATTERNS):
            raise UnsupportedModel(f"pre-tokenizer {pre!r} is not supported; known: default, gpt-2, "
                                   + ", ".join(PRE_TOKENIZER_PATTERNS), path=path, field="tokenizer.ggml.pre")
        return HFTokenizer(byte_level_bpe(tokens, types, merges, pre), kind="gguf-gpt2", bos_id=bos_id,
                           eos_id=eos_id, add_bos=add_bos, vocab_size=len(tokens),
                           source=Path(path) if path else None)
    raise UnsupportedModel(f"tokenizer model {model!r} is not supported (expected 'llama' or 'gpt2')",
                           path=path, field="tokenizer.ggml.model")


def add_tokenizer_to_gguf(tokenizer: Tokenizer, writer) -> None:
    """Store `tokenizer` in a `gguf.GGUFWriter`'s metadata the way llama.cpp's converter does:
    scored pieces (SentencePiece, llama2.c) as model "llama" with tokens, scores and types;
    a byte-level BPE tokenizer.json as model "gpt2" with tokens, merges and types."""
    if isinstance(tokenizer, ScoredPieceTokenizer):
        tokens = [p.replace(tokenizer.space, SPACE_MARK) if tokenizer.space != SPACE_MARK else p
                  for p in tokenizer.pieces]
        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        writer.add_token_scores(tokenizer.scores)
        writer.add_token_types([int(t) for t in tokenizer.types])
        writer.add_add_space_prefix(tokenizer.add_dummy_prefix)
        writer.add_remove_extra_whitespaces(tokenizer.remove_extra_whitespaces)
        if tokenizer.unk_id is not None:
            writer.add_unk_token_id(tokenizer.unk_id)
    elif isinstance(tokenizer, SentencePieceTokenizer):
        p = tokenizer.processor
        add_dummy_prefix, remove_extra_whitespaces = tokenizer.normalizer_flags()
        writer.add_tokenizer_model("llama")
        writer.add_token_list([p.id_to_piece(i) for i in range(tokenizer.vocab_size)])
        writer.add_token_scores([p.get_score(i) for i in range(tokenizer.vocab_size)])
        writer.add_token_types([int(t) for t in tokenizer.token_types()])
        writer.add_add_space_prefix(add_dummy_prefix)
        writer.add_remove_extra_whitespaces(remove_extra_whitespaces)
        if tokenizer.unk_id is not None:
            writer.add_unk_token_id(tokenizer.unk_id)
    elif isinstance(tokenizer, HFTokenizer):
        definition = json.loads(tokenizer.tokenizer.to_str())
        model = definition.get("model") or {}
        if model.get("type") != "BPE" or model.get("byte_fallback") or model.get("continuing_subword_prefix") \
                or model.get("end_of_word_suffix"):
            raise UnsupportedModel("only byte-level BPE tokenizer.json files can be stored in GGUF here "
                                   f"(this one is a {model.get('type')} model)", path=tokenizer.source)
        pre = gguf_pre_tokenizer_name(definition)
        if bool(model.get("ignore_merges")) != (pre in IGNORE_MERGES_PRE_TOKENIZERS):
            raise UnsupportedModel(f"ignore_merges={model.get('ignore_merges')} does not match what GGUF "
                                   f"pre-tokenizer {pre!r} implies", path=tokenizer.source)
        added = {t["id"]: t for t in definition.get("added_tokens") or []}
        by_id: dict[int, str] = {i: t for t, i in model.get("vocab", {}).items()}
        by_id.update({i: t["content"] for i, t in added.items()})
        tokens, types = [], []
        for i in range(tokenizer.vocab_size):
            if i in added:
                types.append(TokenType.CONTROL if added[i].get("special") else TokenType.USER_DEFINED)
            elif i in by_id:
                types.append(TokenType.NORMAL)
            else:
                types.append(TokenType.UNUSED)
            tokens.append(by_id.get(i, f"[PAD{i}]"))
        merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
        writer.add_token_types([int(t) for t in types])
        writer.add_token_merges(merges)
    else:
        raise TypeError(f"cannot store a {type(tokenizer).__name__} in GGUF")
    if tokenizer.bos_id is not None:
        writer.add_bos_token_id(tokenizer.bos_id)
    if tokenizer.eos_id is not None:
        writer.add_eos_token_id(tokenizer.eos_id)
    writer.add_add_bos_token(tokenizer.add_bos)
    writer.add_add_eos_token(False)


# ---------------------------------------------------------------------------------------------
# Finding and loading by file

def read_gguf_tokenizer(path: Path) -> Tokenizer | None:
    import mmap

    from hardwire.errors import HardwireError
    from hardwire.model.gguf_format import read_header   # bounds-checked, unlike gguf.GGUFReader

    read_tokenizer_bytes(path, "a GGUF file")
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            metadata = read_header(path, buffer).metadata
    except (HardwireError, ValueError) as e:
        raise BadTokenizer(f"cannot read GGUF metadata ({e})", path=path) from None
    return tokenizer_from_gguf(metadata, path)


def load_tokenizer(path: str | os.PathLike, vocab_size: int | None = None) -> Tokenizer:
    """Load tokenizer.json, a SentencePiece .model, a llama2.c .bin, a GGUF file's vocabulary, or
    the first of tokenizer.json / tokenizer.model in a folder. With `vocab_size` (the model's),
    a tokenizer holding more tokens than the model is refused."""
    path = Path(path)
    if path.is_dir():
        for name in ("tokenizer.json", "tokenizer.model"):
            if (path / name).is_file():
                return load_tokenizer(path / name, vocab_size)
        raise BadTokenizer("no tokenizer.json or tokenizer.model in this folder", path=path)
    if path.suffix == ".json":
        tokenizer = load_hf_tokenizer(path)
    elif path.suffix == ".model":
        tokenizer = load_sentencepiece_tokenizer(path)
    elif path.suffix == ".bin":
        tokenizer = load_llama2c_tokenizer(path, vocab_size)
    elif path.suffix == ".gguf":
        tokenizer = read_gguf_tokenizer(path)
        if tokenizer is None:
            raise BadTokenizer("this GGUF file carries no tokenizer (no tokenizer.ggml.model)", path=path)
    else:
        raise BadTokenizer("unrecognised tokenizer file: expected tokenizer.json, a SentencePiece .model, "
                           "a llama2.c tokenizer .bin or a .gguf", path=path)
    if vocab_size is not None and tokenizer.vocab_size > vocab_size:
        raise VocabMismatch(f"has {tokenizer.vocab_size} tokens but the model's vocabulary has {vocab_size}: "
                            "it is not this model's tokenizer", path=path)
    return tokenizer


def find_tokenizer(checkpoint_path: str | os.PathLike, vocab_size: int | None) -> Tokenizer | None:
    """The tokenizer that ships with a checkpoint, or None.

    A Hugging Face folder (or a file in it): tokenizer.json, else tokenizer.model. A llama2.c
    .bin: beside it tok{vocab_size}.model, tokenizer.model, tok{vocab_size}.bin, tokenizer.bin —
    the SentencePiece model first because it encoded the training data (it collapses runs of
    spaces, which llama2.c's encoder does not); both decode identically. A .gguf: its embedded vocabulary. A candidate
    that does not fit the model's vocabulary is skipped; a corrupt one raises BadTokenizer.
    """
    path = Path(checkpoint_path)
    if path.suffix == ".bin":
        folder = path.parent
        sized = [f"tok{vocab_size}.model", "tokenizer.model", f"tok{vocab_size}.bin", "tokenizer.bin"]
        names = sized if vocab_size is not None else ["tokenizer.model", "tokenizer.bin"]
    elif path.suffix == ".gguf":
        tokenizer = read_gguf_tokenizer(path)
        return tokenizer if tokenizer is None or vocab_size is None or tokenizer.vocab_size <= vocab_size else None
    else:
        folder = path if path.is_dir() else path.parent
        names = ["tokenizer.json", "tokenizer.model"]
    for name in names:
        candidate = folder / name
        if candidate.is_file() and candidate != path:
            try:
                return load_tokenizer(candidate, vocab_size)
            except VocabMismatch:
                continue
    return None
