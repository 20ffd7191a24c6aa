"""The ground floor: a Zarr v3 store of videos, labels, clip features and predictions.

Public API::

    FeatureStore.create / FeatureStore.open     the store
    FeatureSetSpec                              how a feature set is shaped and made
    FeatureSet, FeatureWriter                   one feature set; its locked writer
    ChunkShuffleDataset                         torch reader for training (store.readers)
    verify_store                                the checks behind ``python -m store.verify``
"""

from store.errors import StoreError
from store.feature_set import FeatureSet, FeatureWriter
from store.feature_store import FeatureStore
from store.schema import SCHEMA_VERSION, FeatureSetSpec

__all__ = ["SCHEMA_VERSION", "FeatureSet", "FeatureSetSpec", "FeatureStore", "FeatureWriter", "StoreError"]
