"""The restricted unpickler of CIFAR-100's pickle files: it reads the official format exactly as
pickle.load does, and refuses any other global before it is imported or called.

No real CIFAR-100 file is in the repository (the archive is 161 MB), so ``write_py2_pickle``
writes files the way the official ``cifar-100-python/{train,test,meta}`` were written: Python 2's
cPickle, protocol 2, every string a Python 2 ``str`` (BINSTRING/SHORT_BINSTRING opcodes, read
back as latin-1 text), and the uint8 ``data`` array reduced through numpy 1.x's
``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and ``numpy.dtype``. The test batch's
keys are those of the official file: data (N x 3072 uint8), fine_labels, coarse_labels,
filenames, batch_label; meta holds fine_label_names and coarse_label_names.
"""

import io
import os
import pickle
import pickletools
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from class_embedding.data import cifar, user_inputs
from class_embedding.data.safe_pickle import load_cifar_pickle
from class_embedding.errors import InputError

PY2_GLOBALS = {
    id(np._core.multiarray._reconstruct): (b"numpy.core.multiarray", b"_reconstruct"),
    id(np.ndarray): (b"numpy", b"ndarray"),
    id(np.dtype): (b"numpy", b"dtype"),
}


class Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2 wrote it: str and bytes as Python 2 ``str``, numpy 1.x globals."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str

    def save_global(self, obj, name=None):
        module, qualname = PY2_GLOBALS[id(obj)]
        self.write(pickle.GLOBAL + module + b"\n" + qualname + b"\n")
        self.memoize(obj)


def write_py2_pickle(value, path: Path) -> Path:
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(value)
    path.write_bytes(buffer.getvalue())
    return path


def official_like_files(folder: Path, images: int = 12) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    fine, coarse = [f"fine_{i}" for i in range(100)], [f"coarse_{i}" for i in range(20)]
    for name, label in (("train", "training batch 1 of 1"), ("test", "testing batch 1 of 1")):
        write_py2_pickle(
            {
                "filenames": [f"{fine[i % 100]}_s_{i:06d}.png" for i in range(images)],
                "batch_label": label,
                "fine_labels": [int(i % 100) for i in range(images)],
                "coarse_labels": [int(i % 20) for i in range(images)],
                "data": rng.integers(0, 256, (images, 3072), dtype=np.uint8),
            },
            folder / name,
        )
    write_py2_pickle({"fine_label_names": fine, "coarse_label_names": coarse}, folder / "meta")
    return folder


def assert_same(loaded, expected):
    assert type(loaded) is type(expected)
    if isinstance(expected, dict):
        assert list(loaded) == list(expected)
        for key in expected:
            assert_same(loaded[key], expected[key])
    elif isinstance(expected, np.ndarray):
        assert loaded.dtype == expected.dtype and loaded.shape == expected.shape
        assert np.array_equal(loaded, expected)
    else:
        assert loaded == expected


def test_the_fixture_is_written_the_way_python_2_wrote_cifar(tmp_path):
    folder = official_like_files(tmp_path / "cifar-100-python")
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops((folder / "test").read_bytes())]
    assert ops[0] == ("PROTO", 2)
    assert {name for name, _ in ops} & {"BINUNICODE", "SHORT_BINUNICODE", "BINBYTES", "SHORT_BINBYTES"} == set()
    assert sorted({arg for name, arg in ops if name == "GLOBAL"}) == [
        "numpy dtype",
        "numpy ndarray",
        "numpy.core.multiarray _reconstruct",
    ]
    assert any(name == "BINSTRING" for name, _ in ops)  # the image bytes, over 255 of them


@pytest.mark.parametrize("name", ["train", "test", "meta"])
def test_official_format_loads_as_pickle_load_does(tmp_path, name):
    path = official_like_files(tmp_path / "cifar-100-python") / name
    with open(path, "rb") as handle:
        expected = pickle.load(handle, encoding="latin1")
    loaded = load_cifar_pickle(path)
    assert_same(loaded, expected)
    if name != "meta":
        assert loaded["data"].dtype == np.uint8 and loaded["data"].shape == (12, 3072)
        assert loaded["batch_label"].endswith("batch 1 of 1")


def test_python_3_pickles_and_numpy_scalars_load_too(tmp_path):
    """The test fixtures elsewhere write with pickle.dump (protocol 4, numpy._core names)."""
    value = {"data": np.arange(6, dtype=np.uint8).reshape(2, 3), "n": np.int64(3), "names": ["a", "b"]}
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps(value, protocol=4))
    assert_same(load_cifar_pickle(path), value)


def test_the_library_reads_official_files(tmp_path):
    folder = official_like_files(tmp_path / "root" / "cifar-100-python")
    batch = cifar.load_batch(folder / "test")
    assert batch["images"].shape == (12, 32, 32, 3) and batch["labels"].tolist() == [i % 100 for i in range(12)]
    assert cifar.label_names(folder)[:2] == ["fine_0", "fine_1"]
    (checked,) = user_inputs.check_user_inputs(
        {"cifar100": {"cifar100": {"root": str(tmp_path / "root")}}}, {"cifar100"}
    )
    assert checked["kind"] == "cifar-100 root"


class Payload:
    """Unpickling this calls ``function(*args)``."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def payloads(marker: Path) -> dict:
    return {
        "os.system": Payload(os.system, f"touch '{marker}'"),
        "builtins.eval": Payload(eval, f"open({str(marker)!r}, 'w').close()"),
        "builtins.open": Payload(open, str(marker), "w"),
        "subprocess.call": Payload(subprocess.call, ["touch", str(marker)]),
    }


# The global as the pickle spells it (protocol 2 uses Python 2's module names).
SPELLED = {
    "os.system": {2: "posix.system", 4: "posix.system"},
    "builtins.eval": {2: "__builtin__.eval", 4: "builtins.eval"},
    "builtins.open": {2: "io.open", 4: "io.open"},
    "subprocess.call": {2: "commands.call", 4: "subprocess.call"},
}


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("kind", ["os.system", "builtins.eval", "builtins.open", "subprocess.call"])
def test_a_payload_is_refused_and_never_runs(tmp_path, kind, protocol):
    marker = tmp_path / "marker"
    folder = tmp_path / "root" / "cifar-100-python"
    folder.mkdir(parents=True)
    # The payload comes first: Python 3's protocol 2 pickles the array's bytes through
    # _codecs.encode, a global that is refused too.
    batch = {"filenames": [payloads(marker)[kind]], "data": np.zeros((1, 3072), np.uint8), "fine_labels": [0]}
    (folder / "test").write_bytes(pickle.dumps(batch, protocol=protocol))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": payloads(marker)[kind]}, protocol=protocol))
    with pytest.raises(InputError) as refused:
        load_cifar_pickle(folder / "test")
    message = str(refused.value)
    assert str(folder / "test") in message and "is not CIFAR-100's file" in message
    assert f"names the global {SPELLED[kind][protocol]}," in message
    assert "cifar-100-python.tar.gz" in message
    with pytest.raises(InputError, match="is not CIFAR-100's file"):
        cifar.load_batch(folder / "test")
    with pytest.raises(InputError, match=r"^datasets\.cifar100\.cifar100\.root: .*meta is not CIFAR-100's file"):
        user_inputs.check_user_inputs({"cifar100": {"cifar100": {"root": str(tmp_path / "root")}}}, set())
    assert not marker.exists()
    # The payload is live: plain pickle runs it, so the refusal above is what kept it from running.
    pickle.loads((folder / "test").read_bytes())
    assert marker.exists()


@pytest.mark.parametrize(
    "module, name", [("numpy", "load"), ("numpy.core.multiarray", "frombuffer"), ("numpy.testing", "assert_equal")]
)
def test_other_numpy_globals_are_refused_too(tmp_path, module, name):
    path = tmp_path / "batch"
    path.write_bytes(b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"q\x00.")
    with pytest.raises(InputError, match=f"names the global {module}.{name},"):
        load_cifar_pickle(path)
