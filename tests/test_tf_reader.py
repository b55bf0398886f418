"""bert.formats.tf_reader and tf_writer against TensorFlow itself: checkpoints that TF writes (its
tf.compat.v1 Saver, sharded, as Estimator and Google's scripts did; its object-based tf.train.Checkpoint)
read to identical arrays, every dtype BERT uses, optimizer slots and a 64 MiB tensor among them; damaged
files are one line; what we write is what TF's SaveV2 writes, byte for byte.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bert.formats import tf_reader
from bert.formats.tf_checkpoint import read_tf_checkpoint, write_tf_checkpoint
from bert.formats.crc32c import crc32c
from bert.formats.tf_reader import CheckpointFormatError, CheckpointReader
from bert.formats.tf_writer import write_checkpoint

pytestmark = pytest.mark.xdist_group("tensorflow")  # one TF import per worker, not one per test file

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return pytest.importorskip("tensorflow")


def crc32c_bytewise(data: bytes) -> int:
    """The textbook loop, bit by bit: the reference for the table-driven lanes."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_crc32c_known_values_and_every_length():
    # RFC 3720 (iSCSI) B.4 test vectors, and the "check" value of the CRC catalogue.
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert crc32c(bytes(range(31, -1, -1))) == 0x113FDB5C
    assert crc32c(b"") == 0
    rng = np.random.default_rng(0)
    # Around the byte loop / lanes threshold, odd tails, several lane widths and a recursion on the tail.
    for n in (1, 3, 1023, 1024, 1025, 1031, 4096, 12_345, 70_001, 2**18 + 3):
        data = rng.integers(0, 256, n, dtype=np.uint8)
        assert crc32c(data) == crc32c_bytewise(data.tobytes()), n
        assert crc32c(data.tobytes()) == crc32c(data), n  # bytes and arrays alike


# ----------------------------------------------------------------------------------------------
# Checkpoints TF writes.


def bf16_values() -> np.ndarray:
    return np.array([0.0, -0.0, 1.0, -2.5, 3.140625, 1e-40, np.inf, -np.inf, np.nan, 65504.0, 1e30], np.float32)


def variables() -> dict[str, np.ndarray]:
    """Every dtype BERT's checkpoints hold (bfloat16 apart, see save_sharded), optimizer slots, odd values."""
    rng = np.random.default_rng(1)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, 3.4e38], np.float32)
    kernel = rng.normal(0, 0.02, (32, 37)).astype(np.float32)
    kernel.flat[:specials.size] = specials
    out = {
        "bert/embeddings/word_embeddings": rng.normal(0, 0.02, (99, 32)).astype(np.float32),
        "bert/encoder/layer_0/intermediate/dense/kernel": kernel,
        "bert/encoder/layer_0/intermediate/dense/bias": rng.normal(0, 0.02, 37).astype(np.float32),
        "bert/encoder/layer_0/output/LayerNorm/gamma": np.ones(32, np.float32),
        "cls/predictions/output_bias": np.zeros(99, np.float32),
        "fp16/kernel": np.concatenate([rng.normal(0, 1, 61), [np.inf, -0.0, np.nan]]).astype(np.float16),
        "int/position_ids": np.arange(64, dtype=np.int32).reshape(1, 64),
        "int/big": np.array([-(2**63), 2**63 - 1, 0, -1], np.int64),
        "mask": rng.random((3, 5)) > 0.5,
        "fp64/scale": np.array([np.pi, -1e300], np.float64),
        "empty": np.zeros((0, 3), np.float32),
    }
    for name in ("bert/embeddings/word_embeddings", "bert/encoder/layer_0/intermediate/dense/kernel"):
        out[name + "/adam_m"] = np.full_like(out[name], 0.25)
        out[name + "/adam_v"] = np.abs(out[name]) + 3.0
    return out


def save_sharded(tf, values: dict[str, np.ndarray], prefix: Path, shards: int, bf16: dict[str, np.ndarray]) -> Path:
    """Graph-mode variables spread over `shards` CPU devices, saved by Saver(sharded=True): one data file per
    device, merged by TF's MergeV2Checkpoints. `bf16` variables are stored as bfloat16; global_step is 1000."""
    v1 = tf.compat.v1
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with tf.Graph().as_default():
        feeds = {}
        for i, (name, value) in enumerate(sorted(values.items()) + sorted(bf16.items())):
            dtype = tf.bfloat16 if name in bf16 else tf.as_dtype(value.dtype)
            with tf.device(f"/cpu:{i % shards}"):
                placeholder = v1.placeholder(dtype, value.shape)  # no big constants in the graph
                v1.get_variable(name, initializer=placeholder)
            feeds[placeholder] = value.astype(dtype.as_numpy_dtype)
        with tf.device("/cpu:0"):  # a variable placed nowhere would get a shard of its own
            step = v1.train.get_or_create_global_step()
        with v1.Session(config=v1.ConfigProto(device_count={"CPU": shards})) as session:
            session.run(v1.global_variables_initializer(), feed_dict=feeds)
            session.run(step.assign(1000))
            v1.train.Saver(sharded=True).save(session, str(prefix), write_meta_graph=False)
    return prefix


@pytest.fixture(scope="module")
def sharded(tf, tmp_path_factory):
    """Three shards, every dtype, Adam slots, global_step and a 64 MiB tensor."""
    values = variables()
    values["large/kernel"] = np.random.default_rng(2).standard_normal((4096, 4096), np.float32)
    bf16 = {"bf16/kernel": bf16_values()}
    return save_sharded(tf, values, tmp_path_factory.mktemp("sharded") / "model.ckpt", 3, bf16)


def assert_identical(ours: np.ndarray, theirs: np.ndarray, name: str) -> None:
    """Same dtype, shape and bytes (NaN payloads and -0.0 included); bfloat16 as exactly widened float32."""
    theirs = np.asarray(theirs)
    assert ours.shape == theirs.shape, name
    if theirs.dtype.name == "bfloat16":
        assert ours.dtype == np.float32, name
        bits = ours.view(np.uint32)
        assert not (bits & 0xFFFF).any() and (bits >> 16).astype(np.uint16).tobytes() == theirs.tobytes(), name
        return
    assert ours.dtype == theirs.dtype, (name, ours.dtype, theirs.dtype)
    assert ours.tobytes() == theirs.tobytes(), name
    if ours.dtype.kind != "f":
        assert np.array_equal(ours, theirs), name


def test_every_dtype_shard_and_slot_identical_to_tensorflow(tf, sharded):
    reader, oracle = CheckpointReader(sharded), tf.train.load_checkpoint(str(sharded))
    assert sorted(reader.entries) == sorted(oracle.get_variable_to_shape_map())
    assert reader.num_shards == 3 and {e.shard for e in reader.entries.values()} == {0, 1, 2}
    assert sorted(p.name for p in sharded.parent.glob("model.ckpt.data-*")) == [
        f"model.ckpt.data-0000{i}-of-00003" for i in range(3)]
    dtypes = {name: dtype.name for name, dtype in oracle.get_variable_to_dtype_map().items()}
    for name, entry in reader.entries.items():
        assert entry.dtype == dtypes[name] and list(entry.shape) == oracle.get_variable_to_shape_map()[name], name
        assert_identical(reader.read(name), oracle.get_tensor(name), name)
    assert {"float32", "float16", "bfloat16", "int32", "int64", "bool", "float64"} <= set(dtypes.values())
    assert reader.entries["large/kernel"].size == 64 << 20
    assert reader.read("global_step") == 1000 and reader.read("global_step").dtype == np.int64
    # read_tf_checkpoint: the weights only by default, slots and counters on request.
    weights, everything = read_tf_checkpoint(sharded), read_tf_checkpoint(sharded.parent, include_optimizer=True)
    assert sorted(everything) == sorted(reader.entries)
    assert sorted(weights) == sorted(n for n in reader.entries if "adam_" not in n and n != "global_step")
    assert all(weights[n].tobytes() == everything[n].tobytes() for n in weights)


def test_object_based_checkpoint_and_single_saves(tf, tmp_path):
    """tf.train.Checkpoint (TF2) stores a string tensor, the object graph: listed, refused in one line,
    left out by read_tf_checkpoint. SaveV2 (what write_tf_checkpoint runs) writes one shard."""
    checkpoint = tf.train.Checkpoint(kernel=tf.Variable(np.arange(6, dtype=np.float32).reshape(2, 3)),
                                     step=tf.Variable(7, dtype=tf.int64), half=tf.Variable(np.ones(2, np.float16)))
    prefix = Path(checkpoint.write(str(tmp_path / "object" / "ckpt")))
    reader, oracle = CheckpointReader(prefix), tf.train.load_checkpoint(str(prefix))
    assert sorted(reader.entries) == sorted(oracle.get_variable_to_shape_map())
    assert reader.entries["_CHECKPOINTABLE_OBJECT_GRAPH"].dtype == "string"
    with pytest.raises(CheckpointFormatError) as info:
        reader.read("_CHECKPOINTABLE_OBJECT_GRAPH")
    assert "\n" not in str(info.value) and "is string (not a number array)" in str(info.value)
    arrays = read_tf_checkpoint(prefix)
    assert sorted(arrays) == ["half/.ATTRIBUTES/VARIABLE_VALUE", "kernel/.ATTRIBUTES/VARIABLE_VALUE",
                              "step/.ATTRIBUTES/VARIABLE_VALUE"]
    for name, array in arrays.items():
        assert_identical(array, oracle.get_tensor(name), name)

    values = variables()
    names = sorted(values)
    with tf.device("/CPU:0"):
        tf.raw_ops.SaveV2(prefix=str(tmp_path / "raw" / "ckpt"), tensor_names=names, shape_and_slices=[""] * len(names),
                          tensors=[tf.constant(values[n]) for n in names])
    reader = CheckpointReader(tmp_path / "raw" / "ckpt")
    assert reader.num_shards == 1 and sorted(reader.entries) == names
    for name in names:
        assert_identical(reader.read(name), values[name], name)


def test_partitioned_variable_is_one_line(tf, tmp_path):
    v1 = tf.compat.v1
    with tf.Graph().as_default():
        v1.get_variable("p", shape=[8, 4], partitioner=v1.fixed_size_partitioner(2), initializer=v1.ones_initializer())
        v1.get_variable("w", initializer=np.ones(3, np.float32))
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            prefix = Path(v1.train.Saver().save(session, str(tmp_path / "model.ckpt"), write_meta_graph=False))
    reader = CheckpointReader(prefix)
    assert sorted(reader.entries) == ["p", "w"] and reader.entries["p"].sliced and reader.entries["p"].shape == (8, 4)
    assert reader.read("w").tolist() == [1, 1, 1]
    with pytest.raises(ValueError) as info:
        read_tf_checkpoint(prefix)
    assert "\n" not in str(info.value) and str(prefix) + ".index" in str(info.value)
    assert "tensor 'p' is a partitioned variable" in str(info.value)


# ----------------------------------------------------------------------------------------------
# Damaged files: one line naming the file and what is wrong.


@pytest.fixture(scope="module")
def small(tf, tmp_path_factory):
    """Two shards, no large tensor: cheap to copy for each damage."""
    return save_sharded(tf, variables(), tmp_path_factory.mktemp("small") / "model.ckpt", 2,
                        {"bf16/kernel": bf16_values()})


def mask(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def blocks(table: bytes) -> dict[str, tuple[int, int]]:
    """'index' and 'data 0', 'data 1', ...: (offset, size) of each block of an index file."""
    footer = len(table) - tf_reader.FOOTER_SIZE
    _, _, pos = tf_reader._block_handle(table, footer, footer + 40)
    index_offset, index_size, _ = tf_reader._block_handle(table, pos, footer + 40)
    out = {"index": (index_offset, index_size)}
    index = tf_reader._block(table, index_offset, index_size, "index")
    for i, (_, handle) in enumerate(tf_reader._block_entries(index, "index")):
        out[f"data {i}"] = tf_reader._block_handle(handle, 0, len(handle))[:2]
    return out


def reseal(table: bytearray, offset: int, size: int) -> None:
    """Recompute a block's checksum after an edit, so that the edit itself is what the reader meets."""
    checksum = mask(crc32c(bytes(table[offset:offset + size + 1])))  # the contents and the compression byte
    table[offset + size + 1:offset + size + 5] = checksum.to_bytes(4, "little")


def entry_value(table: bytes, name: str) -> int:
    """Where the BundleEntryProto of `name` starts in the index file."""
    value = dict(tf_reader._table_entries(table))[name.encode()]
    assert table.count(value) == 1
    return table.index(value)


def damage(prefix: Path, case: str) -> tuple[str, list[str]]:
    """Damage the checkpoint at `prefix`: the file the error must name, and fragments of the message."""
    index = prefix.with_name(prefix.name + ".index")
    table = bytearray(index.read_bytes())
    reader = CheckpointReader(prefix)
    where = blocks(bytes(table))
    kernel = reader.entries["bert/encoder/layer_0/intermediate/dense/kernel"]
    kernel_file = reader.data_path(kernel.shard)
    if case == "truncated index":
        index.write_bytes(table[:-20])
        return str(index), ["no table magic number", "truncated"]
    if case == "wrong magic":
        table[-1] ^= 0x01
        index.write_bytes(table)
        return str(index), ["no table magic number"]
    if case == "flipped byte in a data block":
        offset, size = where["data 0"]
        table[offset + size // 2] ^= 0x10
        index.write_bytes(table)
        return str(index), ["data block 0 at byte 0 fails its checksum", "corrupt"]
    if case == "flipped byte in the index block":
        offset, size = where["index"]
        table[offset + 1] ^= 0x01
        index.write_bytes(table)
        return str(index), ["the index block at byte", "fails its checksum"]
    if case == "index block out of range":  # the footer is not checksummed: a handle pointing past the end
        footer = len(table) - tf_reader.FOOTER_SIZE
        _, _, pos = tf_reader._block_handle(bytes(table), footer, footer + 40)
        table[pos] |= 0x7F  # the index block's offset: same length, far larger
        index.write_bytes(table)
        return str(index), ["the index block", "runs past the table's", "truncated"]
    if case == "snappy block":
        offset, size = where["data 0"]
        table[offset + size] = 1
        reseal(table, offset, size)
        index.write_bytes(table)
        return str(index), ["data block 0 at byte 0 is Snappy-compressed", "only uncompressed blocks"]
    if case == "unknown dtype":
        start = entry_value(bytes(table), "mask")
        assert table[start:start + 2] == b"\x08\x0a"  # field 1 (dtype), DT_BOOL
        table[start + 1] = 99
        offset, size = next(b for k, b in where.items() if k != "index" and b[0] <= start < b[0] + b[1])
        reseal(table, offset, size)
        index.write_bytes(table)
        return str(index), ["tensor 'mask' is DT_99 (an unknown dtype)"]
    if case == "size not the shape's":
        start = entry_value(bytes(table), "mask")
        value = dict(tf_reader._table_entries(bytes(table)))[b"mask"]
        at = start + value.index(b"\x28\x0f")  # field 5 (size): 15 bytes of bool
        table[at + 1] = 14
        offset, size = next(b for k, b in where.items() if k != "index" and b[0] <= at < b[0] + b[1])
        reseal(table, offset, size)
        index.write_bytes(table)
        return str(index), ["tensor 'mask' is bool of shape [3, 5] (15 bytes), but its entry says 14 bytes"]
    if case == "missing shard":
        reader.data_path(1).unlink()
        return str(reader.data_path(1)), ["data shard 1 of 2 is missing"]
    if case == "truncated shard":
        last = max((e for e in reader.entries.values() if e.shard == kernel.shard), key=lambda e: e.offset)
        os.truncate(kernel_file, last.offset + last.size - 1)
        return str(kernel_file), [f"tensor {last.name!r} lies at bytes {last.offset}..{last.offset + last.size}",
                                  "truncated"]
    if case == "flipped byte in a tensor":
        with open(kernel_file, "r+b") as f:
            f.seek(kernel.offset + 1000)
            byte = f.read(1)
            f.seek(kernel.offset + 1000)
            f.write(bytes([byte[0] ^ 0x04]))
        span = f"{kernel.offset}..{kernel.offset + kernel.size}"
        return str(kernel_file), [f"tensor {kernel.name!r} (bytes {span}) fails its checksum", "corrupt"]
    raise AssertionError(case)


CASES = ["truncated index", "wrong magic", "flipped byte in a data block", "flipped byte in the index block",
         "index block out of range", "snappy block", "unknown dtype", "size not the shape's", "missing shard",
         "truncated shard", "flipped byte in a tensor"]


@pytest.mark.parametrize("case", CASES)
def test_damaged_checkpoint_is_one_line(small, tmp_path, case):
    folder = shutil.copytree(small.parent, tmp_path / "ckpt")
    path, fragments = damage(folder / "model.ckpt", case)
    with pytest.raises(ValueError) as info:
        read_tf_checkpoint(folder / "model.ckpt", include_optimizer=True)
    message = str(info.value)
    assert isinstance(info.value, CheckpointFormatError) and "\n" not in message, message
    assert message.startswith(f"{path}: not a readable TF checkpoint: "), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_a_flipped_tensor_byte_fails_in_tensorflow_too_and_spares_the_rest(tf, small, tmp_path):
    folder = shutil.copytree(small.parent, tmp_path / "ckpt")
    damage(folder / "model.ckpt", "flipped byte in a tensor")
    reader = CheckpointReader(folder / "model.ckpt")
    name = "bert/encoder/layer_0/intermediate/dense/kernel"
    with pytest.raises(tf.errors.OpError, match="Checksum does not match"):
        tf.train.load_checkpoint(str(folder / "model.ckpt")).get_tensor(name)
    assert reader.read(name, verify=False).tobytes() != CheckpointReader(small).read(name).tobytes()
    for other in reader.entries:  # every other tensor still reads, identical
        if other != name:
            assert reader.read(other).tobytes() == CheckpointReader(small).read(other).tobytes(), other


# ----------------------------------------------------------------------------------------------
# Writing.


def test_what_we_write_is_what_tensorflow_writes(tf, tmp_path):
    """write_checkpoint and TF's SaveV2 on the same tensors: identical .index and .data files (every dtype,
    bfloat16 from ml_dtypes' numpy type, UTF-8 names; 15000 keys, whose index takes two data blocks and
    shortened separator keys), and TF's reader gives the tensors back."""
    every = {**variables(), "global_step": np.array(1000, np.int64), "caf\u00e9/\u00fcber": np.ones(2, np.float32),
             "bf16/kernel": bf16_values().astype(tf.bfloat16.as_numpy_dtype)}
    many = {f"bert/encoder/layer_{i}/attention/self/query/slot_{j}": np.float32(i - j)
            for i in range(300) for j in range(50)}
    for case, values in (("every", every), ("many", many)):
        names = sorted(values)
        with tf.device("/CPU:0"):
            tf.raw_ops.SaveV2(prefix=str(tmp_path / case / "tf"), tensor_names=names,
                              shape_and_slices=[""] * len(names), tensors=[tf.constant(values[n]) for n in names])
        ours = write_checkpoint(values, tmp_path / case / "ours")
        for suffix in (".index", ".data-00000-of-00001"):
            theirs = (tmp_path / case / f"tf{suffix}").read_bytes()
            assert (tmp_path / case / f"ours{suffix}").read_bytes() == theirs, (case, suffix)
        oracle = tf.train.load_checkpoint(str(ours))
        assert sorted(oracle.get_variable_to_shape_map()) == names
        for name in names if case == "every" else names[::997]:
            theirs = oracle.get_tensor(name)
            assert theirs.dtype == values[name].dtype and theirs.tobytes() == values[name].tobytes(), name
    assert len(blocks((tmp_path / "many" / "ours.index").read_bytes())) == 3  # the index and two data blocks


def test_writing_refuses_what_checkpoints_cannot_hold(tmp_path):
    for bad, fragment in (({"words": np.array(["a", "b"])}, "variable 'words'"),
                          ({"": np.ones(1, np.float32)}, "an empty name")):
        with pytest.raises(ValueError) as info:
            write_tf_checkpoint({"fine": np.ones(2, np.float32), **bad}, tmp_path / "out" / "model.ckpt")
        assert "\n" not in str(info.value) and str(tmp_path / "out" / "model.ckpt") in str(info.value)
        assert fragment in str(info.value)
        assert not list((tmp_path / "out").iterdir())  # nothing written, no temporary left


# ----------------------------------------------------------------------------------------------
# Without TensorFlow.

NO_TENSORFLOW = """
import pickle, sys
sys.modules["tensorflow"] = None  # `import tensorflow` (and any tensorflow.x) now fails as if not installed
from bert.formats.tf_checkpoint import read_tf_checkpoint
arrays = read_tf_checkpoint(sys.argv[1], include_optimizer=True)
assert not any(m.startswith("tensorflow") and sys.modules[m] is not None for m in sys.modules)
with open(sys.argv[2], "wb") as f:
    pickle.dump(arrays, f)
"""


def test_reading_needs_no_tensorflow(small, tmp_path):
    out = tmp_path / "arrays.pkl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, str(small), str(out)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out, "rb") as f:
        arrays = pickle.load(f)
    expected = read_tf_checkpoint(small, include_optimizer=True)
    assert sorted(arrays) == sorted(expected)
    assert all(arrays[n].dtype == expected[n].dtype and arrays[n].tobytes() == expected[n].tobytes() for n in arrays)
