"""Built-in offline datasets: nothing is downloaded, everything is deterministic.

- :mod:`models.data.hypergraph` — ``digits_hypergraph`` (scikit-learn digits, k-NN hyperedges)
  and ``synthetic_hypergraph`` (seeded, homophily and noise as parameters); splits by content hash.
- :mod:`models.data.stdlib` — the running interpreter's standard library as a corpus:
  function body -> name pairs, docstrings, comments, a character stream, hash splits.
- :mod:`models.data.sentences` — stdlib docstrings and comments embedded by all-MiniLM-L6-v2.
- :mod:`models.data.tokenizer` — ``ByteTokenizer`` (UTF-8 bytes + pad/bos/eos/sep).
"""

from edgesdk.models.data.hypergraph import Hypergraph, digits_hypergraph, hash_splits, synthetic_hypergraph
from edgesdk.models.data.stdlib import (char_stream, comments, docstrings, function_pairs, split_by_hash,
                                stdlib_files)
from edgesdk.models.data.sentences import SentenceDataset, sentence_dataset, stdlib_sentences
from edgesdk.models.data.tokenizer import ByteTokenizer

__all__ = ["ByteTokenizer", "Hypergraph", "SentenceDataset", "sentence_dataset", "stdlib_sentences", "char_stream", "comments", "digits_hypergraph", "docstrings",
           "function_pairs", "hash_splits", "split_by_hash", "stdlib_files", "synthetic_hypergraph"]
