"""Image datasets read from local files (no torchvision, no downloads): one loader registry, the dataset
object, a per-class sampler, ZCA whitening, and an on-disk uint8 storage read per batch for sets of any size.

``from condense.data import load_dataset, ImageDataset, ClassSampler, ZCA, DATASETS, split_validation``.
"""
from .core import ZCA, ClassSampler, ImageDataset, fit_zca, split_validation
from .loaders import DATASETS, LOADERS, from_arrays, from_folder, load_dataset, read_idx, register_loader
from .store import ImageStore

__all__ = ["ImageDataset", "ImageStore", "ZCA", "ClassSampler", "load_dataset", "from_arrays", "from_folder", "split_validation",
           "fit_zca", "DATASETS", "LOADERS", "register_loader", "read_idx"]
