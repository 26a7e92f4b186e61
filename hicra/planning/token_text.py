"""Text and character offsets of sampled tokens, derived from the ids themselves (never by re-encoding text).

Re-tokenising decoded text does not give back the sampled ids (pitfall 8), so the offsets of a response come from
a vocab-sized table `piece[id]`: the exact bytes each token contributes when the tokenizer decodes. The text of a
response is the concatenation of its pieces and token t covers characters [start_t, end_t) with
end = cumsum(len(piece)). Special tokens (EOS, chat markers) contribute nothing.

A token that holds only part of a multi-byte UTF-8 character (byte-level BPE splits emoji and CJK) has no text of
its own: a slow path runs an incremental UTF-8 decoder, so such a token gets an empty span and the token that
completes the character gets the whole character. Text and offsets then still agree exactly.
"""

from __future__ import annotations

import codecs
from functools import lru_cache

import torch

SPIECE_SPACE = "\u2581"  # SentencePiece's visible space


@lru_cache(maxsize=1)
def gpt2_byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's byte -> printable-unicode map used by byte-level BPE vocabularies ('Ġ' = space)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    byte_to_char = {b: chr(b) for b in printable}
    shift = 0
    for b in range(256):
        if b not in byte_to_char:  # control bytes, space, DEL, NBSP, soft hyphen are shifted past 255
            byte_to_char[b] = chr(256 + shift)
            shift += 1
    return {c: b for b, c in byte_to_char.items()}


def _special_and_added(tokenizer) -> tuple[set[int], dict[int, bytes]]:
    """Ids that decode to nothing (special tokens) and the literal bytes of non-special added tokens."""
    special = {int(i) for i in getattr(tokenizer, "all_special_ids", [])}
    added: dict[int, bytes] = {}
    for idx, tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(tok, "special", False):
            special.add(int(idx))
        else:  # added tokens are stored verbatim, not in the byte-level alphabet
            added[int(idx)] = str(getattr(tok, "content", tok)).encode("utf-8")
    return special, added


def _spiece_bytes(token: str) -> bytes:
    if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):  # byte-fallback piece
        return bytes([int(token[3:5], 16)])
    return token.replace(SPIECE_SPACE, " ").encode("utf-8")


def build_piece_bytes(tokenizer) -> list[bytes]:
    """`pieces[id]`: the bytes token `id` contributes to decoded text (b'' for special tokens)."""
    n = len(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(list(range(n)))
    special, added = _special_and_added(tokenizer)
    regular = [t for i, t in enumerate(tokens) if t is not None and i not in special and i not in added]
    byte_decoder = gpt2_byte_decoder()
    if any(SPIECE_SPACE in t for t in regular):
        convert = _spiece_bytes
    elif all(c in byte_decoder for t in regular for c in t):
        convert = lambda t: bytes(byte_decoder[c] for c in t)
    else:  # unknown scheme: fall back to the tokenizer's own single-token decode
        convert = None
    pieces: list[bytes] = []
    for i, t in enumerate(tokens):
        if i in special or t is None:
            pieces.append(b"")
        elif i in added:
            pieces.append(added[i])
        elif convert is not None:
            pieces.append(convert(t))
        else:
            pieces.append(tokenizer.decode([i]).encode("utf-8"))
    return pieces


class TokenText:
    """Vocab-sized piece table of one tokenizer, built once; `spans` gives text + char offsets of an id list."""

    def __init__(self, tokenizer):
        self.piece_bytes = build_piece_bytes(tokenizer)
        self.vocab_size = len(self.piece_bytes)
        self.piece_str: list[str] = []
        complete = []
        for b in self.piece_bytes:
            try:
                self.piece_str.append(b.decode("utf-8"))
                complete.append(True)
            except UnicodeDecodeError:  # part of a multi-byte character
                self.piece_str.append("")
                complete.append(False)
        self.piece_len = torch.tensor([len(s) for s in self.piece_str], dtype=torch.long)  # (V,)
        self.complete = torch.tensor(complete, dtype=torch.bool)  # (V,)

    def spans(self, ids: torch.Tensor) -> tuple[str, torch.Tensor, torch.Tensor]:
        """Text of the 1-D id tensor `ids` and each token's character span: (text, starts (n,), ends (n,))."""
        ids = ids.detach().cpu().long()
        known = (ids >= 0) & (ids < self.vocab_size)  # ids past the tokenizer (padded embedding rows) are empty
        ids = torch.where(known, ids, torch.zeros_like(ids))
        if bool(self.complete[ids].all()):  # fast path: every token is whole characters
            id_list = ids.tolist()
            text = "".join(self.piece_str[i] if k else "" for i, k in zip(id_list, known.tolist()))
            lengths = torch.where(known, self.piece_len[ids], torch.zeros_like(ids))
        else:
            text, lengths = self._decode_incrementally(ids.tolist(), known.tolist())
        ends = torch.cumsum(lengths, 0)
        return text, ends - lengths, ends

    def _decode_incrementally(self, id_list: list[int], known: list[bool]) -> tuple[str, torch.Tensor]:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        chunks, lengths = [], []
        for i, k in zip(id_list, known):
            chunk = decoder.decode(self.piece_bytes[i] if k else b"")
            chunks.append(chunk)
            lengths.append(len(chunk))
        tail = decoder.decode(b"", final=True)  # dangling partial character at the very end
        if tail:
            chunks.append(tail)
            if lengths:
                lengths[-1] += len(tail)
        return "".join(chunks), torch.tensor(lengths, dtype=torch.long)
