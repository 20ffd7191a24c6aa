"""The ground floor: a Zarr v3 store of videos, labels, clip features and predictions.

Public API::

    FeatureStore.create / FeatureStore.open     the store
    FeatureSetSpec                              how a feature set is shaped and made
    FeatureSet, FeatureWriter                   one feature set; its locked writer
    ChunkShuffleDataset                         torch reader for training (store.readers)
    verify_store                                the checks behind ``python -m store.verify``
    FeatureStore.set_splits                     crash-safe split assignment (``python -m store.split``)
    IndexSpec, FeatureIndex, ensure_index, ...  faiss indexes over feature sets (store.index)
    store.search.neighbours, ...                nearest-neighbour search (import store.search)
    store.export.export_features, export_run    feature sets / runs to npy, HDF5, Parquet
    store.feature_import.import_features        npy / HDF5 features of other tools into a set
    store.merge.merge_stores                    stores written apart joined into one (``python -m store.merge``)
"""

from store.errors import StoreError
from store.feature_set import FeatureSet, FeatureWriter
from store.feature_store import FeatureStore
from store.index import FeatureIndex, IndexSpec, build_index, ensure_index, open_index, update_index
from store.schema import SCHEMA_VERSION, FeatureSetSpec

__all__ = [
    "SCHEMA_VERSION", "FeatureIndex", "FeatureSet", "FeatureSetSpec", "FeatureStore", "FeatureWriter",
    "IndexSpec", "StoreError", "build_index", "ensure_index", "open_index", "update_index",
]
