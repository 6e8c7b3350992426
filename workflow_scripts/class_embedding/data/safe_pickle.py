"""CIFAR-100's python-pickle batches, read with an unpickler that can build only numpy arrays.

Unpickling runs whatever callable a pickle names, and a CIFAR-100 root you give is not
checksum-pinned (only the downloaded archive is). The official ``cifar-100-python/{train,test,meta}``
files were written by Python 2's cPickle (protocol 2): dicts, lists, strings and ints, which are
pickle opcodes and need no global, plus the ``data`` array, rebuilt from the few numpy globals
below. Any other global is refused before it is imported or called.
"""

from __future__ import annotations

import os
import pickle

import numpy as np

from ..errors import InputError

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct, scalar

# (module, name) as a pickle spells it -> the object, resolved here, never by importing the
# module the pickle names. numpy.core is numpy 1.x's name (the one in the official files).
ALLOWED_GLOBALS = {
    **{(module, "_reconstruct"): _reconstruct for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "scalar"): scalar for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class CifarUnpickler(pickle.Unpickler):
    """Resolves only :data:`ALLOWED_GLOBALS` (GLOBAL, STACK_GLOBAL and extension codes all
    go through ``find_class``); persistent ids are refused by the base class."""

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise RefusedGlobal(f"{module}.{name}") from None


def load_cifar_pickle(path: str | os.PathLike):
    """The object pickled in ``path`` (strings decoded as latin-1, as Python 2 wrote them).

    A global other than numpy's array reconstruction raises :class:`InputError`; read errors
    (``OSError``, ``pickle.UnpicklingError``, ``EOFError``...) are left to the caller.
    """
    with open(path, "rb") as handle:
        try:
            return CifarUnpickler(handle, encoding="latin1").load()
        except RefusedGlobal as refused:
            raise InputError(
                f"{path} is not CIFAR-100's file: its pickle names the global {refused.name}, and CIFAR-100's "
                f"files hold only dicts, lists, strings, ints and numpy arrays, so it was not unpickled (nothing "
                f"in it ran). Replace it with the one in the official archive "
                f"(https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz), or set the dataset's root to null "
                f"to download that archive (checksum-pinned)."
            ) from None
