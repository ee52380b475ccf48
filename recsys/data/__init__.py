"""MovieLens data layer: read and validate every release, cache it, filter, index and sequence it."""
from recsys.data.loader import embedded_ml100k_dir, load_dataset
from recsys.data.prepare import IdMap, PreparedData, Sequences, build_sequences, kcore_filter, prepare
from recsys.data.readers import read_movielens
from recsys.data.schema import DataError, DataUnavailableError, DataValidationError, MovieLensData

__all__ = [
    "load_dataset", "embedded_ml100k_dir", "read_movielens", "prepare", "kcore_filter", "build_sequences",
    "IdMap", "PreparedData", "Sequences", "MovieLensData", "DataError", "DataValidationError", "DataUnavailableError",
]
