"""Strategic-Gram mining (paper S3): n-grams of successful solutions -> embeddings -> clusters -> Cluster DF.

`hicra-grams mine` writes a gram file that `conf/planner/strategic_grams.yaml` (`grams_path:`) reads directly.
The pure parts (tokenisation, document frequency, cluster DF, selection) live in `hicra.grams.mining`.
"""

from hicra.grams.mining import (
    cluster_document_frequency,
    doc_ngrams,
    document_frequency,
    ngrams,
    prefilter,
    select_clusters,
    selected_grams,
    word_runs,
)

__all__ = [
    "cluster_document_frequency",
    "doc_ngrams",
    "document_frequency",
    "ngrams",
    "prefilter",
    "select_clusters",
    "selected_grams",
    "word_runs",
]
