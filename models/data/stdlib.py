"""A real text/code corpus on every machine: the running interpreter's standard library.

Everything here is read from the ``.py`` files of the Python that runs it (no download, no
disk cache) and parsed with :mod:`ast` / :mod:`tokenize`:

- :func:`stdlib_files` — the stdlib's ``.py`` files, sorted (tests, site-packages and generated
  tables excluded).
- :func:`function_pairs` — ``(body, name)`` pairs: a function's body (no ``def`` line, no
  decorators, no docstring) and its name — an asymmetric seq2seq task.
- :func:`docstrings`, :func:`comments` — natural-language sentences (deduplicated, length
  filtered) to embed with a sentence encoder.
- :func:`char_stream` — source text for a character (byte) language model.
- :func:`split_by_hash` — deterministic train/val/test splits by content hash.

Every helper is deterministic. The stdlib differs slightly between Python patch versions; since
each item's split depends only on its own content (or, for whole files, their relative path),
an item keeps its split across versions and machines — only added or removed items differ.

>>> from edgesdk.models.data.stdlib import function_pairs, split_by_hash
>>> pairs = function_pairs(limit=100)
>>> body, name = pairs[0]
>>> parts = split_by_hash(pairs)          # {"train": [...], "val": [...], "test": [...]}
"""

from __future__ import annotations

import ast
import functools
import gc
import hashlib
import io
import os
import re
import sysconfig
import textwrap
import tokenize
from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar

T = TypeVar("T")

DEFAULT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}

# Folders skipped anywhere under the stdlib root: tests, third-party packages, build outputs, and
# `encodings` (mostly generated character-map tables, not prose or ordinary code).
_SKIP_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages",
                        "__pycache__", "lib-dynload", "encodings", "__phello__"})
# Generated or machine-specific files (sysconfig data differs per build; pydoc topics is a dump).
_SKIP_FILES = re.compile(r"^_sysconfigdata_.*\.py$|^topics\.py$")


def stdlib_root() -> Path:
    """The running interpreter's stdlib folder (``sysconfig``'s ``stdlib`` path)."""
    return Path(sysconfig.get_paths()["stdlib"])


@functools.lru_cache(maxsize=None)
def _stdlib_files(root: str) -> tuple[Path, ...]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        if rel.parts and rel.parts[0].startswith("config-"):  # build config folder
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        out += [Path(dirpath, f) for f in filenames if f.endswith(".py") and not _SKIP_FILES.match(f)]
    return tuple(sorted(out, key=lambda p: p.relative_to(root).as_posix()))


def stdlib_files() -> list[Path]:
    """The stdlib's ``.py`` files, sorted by relative path.

    Excludes test folders (``test``, ``tests``, ``idle_test``), ``site-packages``, the
    ``encodings`` package (generated codec tables), ``_sysconfigdata_*`` (build specific) and
    ``pydoc_data/topics.py`` (a generated dump).
    """
    return list(_stdlib_files(str(stdlib_root())))


def _relpath(p: Path) -> str:
    return p.relative_to(stdlib_root()).as_posix()


def hash_unit(key: str | bytes, salt: str = "") -> float:
    """Map a key to [0, 1) with sha256: the same on every machine and Python version."""
    if isinstance(key, str):
        key = key.encode("utf-8")
    digest = hashlib.sha256(salt.encode("utf-8") + key).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_name(key: str | bytes, fractions: dict[str, float] | None = None, salt: str = "") -> str:
    """The split a key falls in: cumulative ``fractions`` (in their order) over :func:`hash_unit`."""
    fractions = fractions or DEFAULT_FRACTIONS
    total = sum(fractions.values())
    if total <= 0 or any(f < 0 for f in fractions.values()):
        raise ValueError(f"fractions must be non-negative and sum to > 0, got {fractions!r}")
    u, acc = hash_unit(key, salt) * total, 0.0
    for name, f in fractions.items():
        acc += f
        if u < acc:
            return name
    return name  # float round-off at the top end


def _default_key(item) -> str:
    if isinstance(item, (str, bytes)):
        return item  # type: ignore[return-value]
    if isinstance(item, tuple):
        return "\x1f".join(str(x) for x in item)
    return repr(item)


def split_by_hash(items: Sequence[T], key: Callable[[T], str | bytes] | None = None,
                  fractions: dict[str, float] | None = None, salt: str = "") -> dict[str, list[T]]:
    """Split ``items`` deterministically by the sha256 of ``key(item)``.

    The default key is the item itself (strings), or its fields joined (tuples such as the
    ``(body, name)`` pairs), so identical items always share a split (no train/test leakage of
    duplicates) and an item's split never depends on the other items. Fractions are expected
    values, not exact counts. Order within each split follows ``items``.

    >>> parts = split_by_hash(["a", "b", "c"], fractions={"train": 0.5, "test": 0.5})
    >>> sorted(parts)
    ['test', 'train']
    """
    fractions = dict(fractions or DEFAULT_FRACTIONS)
    key = key or _default_key
    out: dict[str, list[T]] = {name: [] for name in fractions}
    for item in items:
        out[split_name(key(item), fractions, salt)].append(item)
    return out


@functools.lru_cache(maxsize=None)
def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _parse(path: Path) -> ast.Module | None:
    # Not cached: holding every tree alive makes the garbage collector rescan millions of nodes.
    # The collector is paused while parsing: an AST is millions of fresh objects and no cycles,
    # and with torch loaded each full collection is slow (3x faster parsing here).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(_read(path), filename=str(path))
    except (SyntaxError, ValueError):
        return None
    finally:
        if enabled:
            gc.enable()


_Def = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _iter_defs(stmts: list[ast.stmt]):
    """Functions and classes in a statement list, nested ones included (statements only: much
    faster than ``ast.walk``, which also visits every expression)."""
    for st in stmts:
        if isinstance(st, _Def):
            yield st
        for field in ("body", "orelse", "finalbody"):
            sub = getattr(st, field, None)
            if isinstance(sub, list) and sub and isinstance(sub[0], ast.stmt):
                yield from _iter_defs(sub)
        for h in getattr(st, "handlers", ()) or ():
            yield from _iter_defs(h.body)
        for case in getattr(st, "cases", ()) or ():
            yield from _iter_defs(case.body)


@functools.lru_cache(maxsize=None)
def _file_items(path: Path) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """One parse per file: all ``(body, name)`` pairs and all raw docstrings (cached, small)."""
    tree = _parse(path)
    if tree is None:
        return (), ()
    src = _read(path)  # universal newlines: only "\n" (str.splitlines would also split at form feeds)
    lines = [line + "\n" for line in src.split("\n")]
    pairs, docs = [], []
    doc = ast.get_docstring(tree, clean=True)
    if doc:
        docs.append(doc)
    for node in _iter_defs(tree.body):
        doc = ast.get_docstring(node, clean=True)
        if doc:
            docs.append(doc)
        if not isinstance(node, ast.ClassDef):
            pairs.append((_body_source(lines, src, node), node.name))
    return tuple(pairs), tuple(docs)


def _files_hash_order(split: str | None = None,
                      fractions: dict[str, float] | None = None) -> list[Path]:
    """Files in sha256(relative path) order — a prefix is a mixed sample of the stdlib —
    restricted to one split of the files when ``split`` is given."""
    files = sorted(stdlib_files(), key=lambda p: hash_unit(_relpath(p)))
    if split is None:
        return files
    fractions = fractions or DEFAULT_FRACTIONS
    if split not in fractions:
        raise ValueError(f"Unknown split {split!r}. Available: {', '.join(fractions)}")
    return [p for p in files if split_name(_relpath(p), fractions, salt="file") == split]


# ---------------------------------------------------------------------------------------------
# function body -> name
# ---------------------------------------------------------------------------------------------

def _body_source(lines: list[str], src: str, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    body = fn.body
    if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)):
        body = body[1:]  # drop the docstring
    if not body:
        return ""
    first = body[0]
    prefix = lines[first.lineno - 1].encode("utf-8")[:first.col_offset]
    if prefix.strip():
        # the body shares a line with the header or the docstring: `def f(): return 1`
        return "\n".join(ast.get_source_segment(src, s) or "" for s in body).strip()
    start = first.lineno - 1  # 0-based; take comment lines just above the first statement too
    floor = fn.body[0].end_lineno if body is not fn.body else fn.lineno  # below docstring / def
    while start - 1 >= floor and lines[start - 1].strip().startswith("#"):
        start -= 1
    text = "".join(lines[start: fn.end_lineno])
    return textwrap.dedent(text).strip()


def _is_trivial(body: str) -> bool:
    b = body.strip()
    return b in ("pass", "...", "return", "return None") or b.startswith("raise NotImplementedError")


def function_pairs(max_body_chars: int = 1000, min_body_chars: int = 16, limit: int | None = None,
                   include_dunder: bool = False, split: str | None = None,
                   fractions: dict[str, float] | None = None) -> list[tuple[str, str]]:
    """``(body, name)`` pairs from every function and method in the stdlib.

    ``body`` is the function's source without decorators, the ``def`` line(s) and the
    docstring, dedented, comments kept. Trivial bodies (``pass``, ``...``,
    ``raise NotImplementedError``) and bodies outside ``[min_body_chars, max_body_chars]`` are
    skipped; dunder methods (``__init__``...) are skipped unless ``include_dunder``. Pairs are
    deduplicated and come file by file in sha256(path) order, so ``limit`` takes a mixed sample.
    ``split`` keeps only the pairs that :func:`split_by_hash` puts in that split.

    >>> body, name = function_pairs(limit=1)[0]
    >>> name.isidentifier()
    True
    """
    fractions = fractions or DEFAULT_FRACTIONS
    if split is not None and split not in fractions:
        raise ValueError(f"Unknown split {split!r}. Available: {', '.join(fractions)}")
    out, seen = [], set()
    for path in _files_hash_order():
        for body, name in _file_items(path)[0]:
            if not include_dunder and name.startswith("__") and name.endswith("__"):
                continue
            if not (min_body_chars <= len(body) <= max_body_chars) or _is_trivial(body):
                continue
            pair = (body, name)
            if pair in seen:
                continue
            if split is not None and split_name(_default_key(pair), fractions) != split:
                continue
            seen.add(pair)
            out.append(pair)
            if limit is not None and len(out) >= limit:
                return out
    return out


# ---------------------------------------------------------------------------------------------
# sentences: docstrings and comments
# ---------------------------------------------------------------------------------------------

_WS = re.compile(r"\s+")
_LETTERS = re.compile(r"[A-Za-z]")
_DIRECTIVE = re.compile(r"^(noqa|type:|pragma|pylint:|fmt:|XXX$|TODO$|-\*-|!|vim?:|isort:)", re.I)


def _clean(text: str) -> str:
    return _WS.sub(" ", text).strip()


def _keep_sentence(s: str, min_chars: int, max_chars: int, min_words: int) -> bool:
    if not (min_chars <= len(s) <= max_chars) or len(s.split()) < min_words:
        return False
    letters = len(_LETTERS.findall(s))
    return letters >= 0.6 * len(s.replace(" ", ""))  # mostly words, not code or tables


def _looks_like_code(s: str) -> bool:
    if s.endswith((":", ")", "]", "}", ",")) or "==" in s or " = " in s or s.startswith((">>>", "...")):
        try:
            ast.parse(s.rstrip(":,"))
            return True
        except SyntaxError:
            return s.startswith((">>>", "..."))
    return False


def docstrings(limit: int | None = None, min_chars: int = 20, max_chars: int = 300,
               min_words: int = 4, first_paragraph: bool = True) -> list[str]:
    """Docstrings of stdlib modules, classes and functions, whitespace collapsed, deduplicated.

    By default only the first paragraph (up to the first blank line) of each docstring is kept:
    a summary sentence, the kind of text a sentence encoder is trained on. Files come in
    sha256(path) order, so ``limit`` takes a mixed sample.
    """
    out, seen = [], set()
    for path in _files_hash_order():
        for doc in _file_items(path)[1]:
            if first_paragraph:
                doc = doc.split("\n\n", 1)[0]
            s = _clean(doc)
            if s in seen or not _keep_sentence(s, min_chars, max_chars, min_words):
                continue
            seen.add(s)
            out.append(s)
            if limit is not None and len(out) >= limit:
                return out
    return out


@functools.lru_cache(maxsize=None)
def _file_comments(path: Path) -> tuple[str, ...]:
    """Comment blocks of one file: consecutive full-line comments at one column are merged."""
    blocks: list[str] = []
    cur: list[str] = []
    last = (-2, -1)  # (line, column) of the previous full-line comment
    try:
        toks = tokenize.generate_tokens(io.StringIO(_read(path)).readline)
        prev_type = tokenize.NL
        for tok in toks:
            if tok.type == tokenize.COMMENT:
                text = tok.string.lstrip("#").strip()
                full_line = prev_type in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                                          tokenize.DEDENT, tokenize.ENCODING)
                if full_line and cur and tok.start[0] == last[0] + 1 and tok.start[1] == last[1] and text:
                    cur.append(text)
                else:
                    if cur:
                        blocks.append(" ".join(cur))
                    cur = [text] if text else []
                last = tok.start if full_line else (-2, -1)
            prev_type = tok.type
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass
    if cur:
        blocks.append(" ".join(cur))
    return tuple(blocks)


def comments(limit: int | None = None, min_chars: int = 20, max_chars: int = 300,
             min_words: int = 4) -> list[str]:
    """Comments from the stdlib: consecutive ``#`` lines merged into one text, directives
    (``noqa``, ``type:``, ``-*- coding``), commented-out code and tables dropped, deduplicated.
    Files come in sha256(path) order, so ``limit`` takes a mixed sample."""
    out, seen = [], set()
    for path in _files_hash_order():
        for block in _file_comments(path):
            s = _clean(block)
            if (s in seen or _DIRECTIVE.match(s) or _looks_like_code(s)
                    or not _keep_sentence(s, min_chars, max_chars, min_words)):
                continue
            seen.add(s)
            out.append(s)
            if limit is not None and len(out) >= limit:
                return out
    return out


# ---------------------------------------------------------------------------------------------
# character stream
# ---------------------------------------------------------------------------------------------

FILE_SEPARATOR = "\n\n"


def char_stream(limit_chars: int | None = None, split: str | None = None,
                fractions: dict[str, float] | None = None) -> str:
    """Stdlib source text for a character / byte language model.

    Whole files, concatenated in sha256(relative path) order with :data:`FILE_SEPARATOR`
    between them, cut at ``limit_chars``. ``split`` ("train", "val", "test") keeps only the
    files whose relative path hashes into that split, so a held-out file is never seen in
    training, and a file keeps its split across Python versions.

    >>> text = char_stream(limit_chars=10_000, split="train")
    >>> len(text)
    10000
    """
    parts, n = [], 0
    for path in _files_hash_order(split, fractions):
        s = _read(path).strip("\n") + FILE_SEPARATOR
        parts.append(s)
        n += len(s)
        if limit_chars is not None and n >= limit_chars:
            break
    text = "".join(parts)
    return text if limit_chars is None else text[:limit_chars]


def sha256_text(text: str | Iterable[str]) -> str:
    """sha256 of a text (or of texts joined by newlines) as UTF-8: names a corpus in a manifest."""
    h = hashlib.sha256()
    if isinstance(text, str):
        h.update(text.encode("utf-8"))
    else:
        for t in text:
            h.update(t.encode("utf-8") + b"\n")
    return h.hexdigest()
