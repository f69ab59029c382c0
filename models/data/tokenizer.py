"""A byte-level tokenizer shipped in the repo: nothing to download, nothing out of vocabulary.

Ids 0..255 are the UTF-8 bytes of the text; the special tokens follow them:
``pad`` = 256, ``bos`` = 257, ``eos`` = 258, ``sep`` = 259 (``vocab_size`` = 260).

>>> tok = ByteTokenizer()
>>> ids = tok.encode("def f(): pass", bos=True, eos=True)
>>> tok.decode(ids)
'def f(): pass'
>>> batch, mask = tok.batch(["a", "abc"])      # (2, 5) ids padded with pad_id, bool mask
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class ByteTokenizer:
    """UTF-8 bytes plus four special tokens. Stateless; ``ByteTokenizer()`` everywhere agrees."""

    pad_id: int = 256
    bos_id: int = 257
    eos_id: int = 258
    sep_id: int = 259

    SPECIALS = ("pad", "bos", "eos", "sep")

    @property
    def vocab_size(self) -> int:
        return 256 + len(self.SPECIALS)

    @property
    def special_ids(self) -> dict[str, int]:
        return {name: getattr(self, f"{name}_id") for name in self.SPECIALS}

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Text -> UTF-8 byte ids, optionally framed by ``bos`` / ``eos``."""
        ids = list(text.encode("utf-8"))
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def encode_pair(self, a: str, b: str) -> list[int]:
        """``bos a sep b eos``: one sequence for decoder-only seq2seq (e.g. body -> name)."""
        return [self.bos_id, *a.encode("utf-8"), self.sep_id, *b.encode("utf-8"), self.eos_id]

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special: bool = True,
               stop_at_eos: bool = False) -> str:
        """Ids -> text. Special tokens are dropped (or shown as ``<name>``); invalid UTF-8
        sequences (a cut multi-byte character) decode to U+FFFD instead of raising."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        names = {v: k for k, v in self.special_ids.items()}
        out, buf = [], bytearray()
        for i in ids:
            i = int(i)
            if stop_at_eos and i == self.eos_id:
                break
            if 0 <= i < 256:
                buf.append(i)
                continue
            if i not in names:
                raise ValueError(f"token id {i} is outside the vocabulary (0..{self.vocab_size - 1})")
            if not skip_special:
                out.append(buf.decode("utf-8", errors="replace"))
                buf = bytearray()
                out.append(f"<{names[i]}>")
        out.append(buf.decode("utf-8", errors="replace"))
        return "".join(out)

    def pad(self, seqs: Sequence[Sequence[int]], max_len: int | None = None,
            side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
        """Pad id lists to one length: ``(ids (B, T) int64, mask (B, T) bool)``, mask True on
        real tokens. Longer sequences are cut at ``max_len`` (from the end for ``side="left"``
        so the most recent tokens stay)."""
        if side not in ("right", "left"):
            raise ValueError(f"side must be 'right' or 'left', got {side!r}")
        if max_len is None:
            max_len = max((len(s) for s in seqs), default=0)
        ids = torch.full((len(seqs), max_len), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), max_len), dtype=torch.bool)
        for r, s in enumerate(seqs):
            s = list(s)[:max_len] if side == "right" else list(s)[-max_len:] if max_len else []
            if not s:
                continue
            t = torch.tensor(s, dtype=torch.long)
            if side == "right":
                ids[r, :len(s)], mask[r, :len(s)] = t, True
            else:
                ids[r, max_len - len(s):], mask[r, max_len - len(s):] = t, True
        return ids, mask

    def batch(self, texts: Sequence[str], max_len: int | None = None, bos: bool = False,
              eos: bool = False, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
        """Encode and pad texts: ``(ids (B, T) int64, mask (B, T) bool)``."""
        return self.pad([self.encode(t, bos=bos, eos=eos) for t in texts], max_len=max_len, side=side)

    def batch_decode(self, ids: torch.Tensor, **kw) -> list[str]:
        return [self.decode(row, **kw) for row in ids]
