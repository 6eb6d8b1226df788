"""Reads the gzip IDX files of an MNIST-style data set into numpy arrays (for the peer scripts)."""
import gzip, os
import numpy as np


def idx(root, name):
    """The array in ROOT/NAME.gz (uint8, shaped as the file's header says)."""
    with gzip.open(os.path.join(root, name + ".gz")) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)
