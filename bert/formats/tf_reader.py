"""TensorFlow's V2 checkpoints (the "tensor bundle" Google's BERT releases are) read with the standard
library and numpy: no TensorFlow, no protobuf package.

    bert_model.ckpt.index                 a LevelDB-format table (SSTable), keys sorted bytewise:
        ""                  -> BundleHeaderProto {num_shards, endianness, version}
        "bert/.../kernel"   -> BundleEntryProto  {dtype, shape, shard_id, offset, size, crc32c, slices}
    bert_model.ckpt.data-00000-of-00001   the tensors' raw bytes, little-endian, back to back

The table (tensorflow/core/lib/io/format.h; LevelDB's doc/table_format.md):

    [data block][trailer] ... [data block][trailer] [metaindex block][trailer] [index block][trailer] [footer]
    trailer   1 byte compression (0 none, 1 Snappy) + fixed32 masked CRC32C of the block and that byte
    footer    48 bytes: metaindex and index BlockHandles (varint64 offset, varint64 size each), zero
              padding to 40 bytes, then the magic number 0xdb4775248b80fb57 as a little-endian fixed64
    block     entries, then the restart offsets (fixed32 each), then their count (fixed32)
    entry     varint32 shared (key bytes taken from the previous key), varint32 unshared, varint32 value
              length, the unshared key bytes, the value
    index     one entry per data block: key >= the block's last key, value the block's BlockHandle

Every block's checksum and every tensor's checksum (CRC32C of its bytes, masked, in its BundleEntryProto)
are verified, so a flipped bit is an error, never a wrong weight. Errors are one line naming the file.
Partitioned (sliced) variables and string tensors are listed but not read. bert.formats.tf_writer writes
the format.

Dtypes come back as numpy's, except bfloat16, which numpy lacks: it is returned as float32 (exactly: a
bfloat16 is the top half of a float32), and the entry's ``dtype`` still says ``bfloat16``.

CRC32C is computed in numpy over many lanes at once (see _extend): 400 MB read and verified in 1.3 s on one
core (0.1 s of it reading; about 340 MB/s of checking, a third of that on a core shared with other work),
against 5 MB/s for a byte loop in Python. So BERT-Base takes about 1.5 s, BERT-Large about 4 s (TensorFlow,
with the CPU's CRC32 instruction: 0.17 s for the same 400 MB).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bert.formats.crc32c import crc32c, mask_crc32c, unmask_crc32c  # noqa: F401 (mask_crc32c: re-exported)

__all__ = ["CheckpointFormatError", "CheckpointReader", "TensorEntry", "crc32c", "data_file_name", "mask_crc32c"]

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # two BlockHandles padded to 40 bytes, then the magic number
TRAILER_SIZE = 5  # compression type byte + masked CRC32C
_NO_COMPRESSION, _SNAPPY = 0, 1
_BUNDLE_VERSION = 1  # tensor_bundle.h kTensorBundleVersion: a bundle whose min_consumer exceeds it is newer

# tensorflow/core/framework/types.proto: DataType -> (our name, numpy dtype or None when not a number array).
DTYPES: dict[int, tuple[str, np.dtype | None]] = {
    1: ("float32", np.dtype("<f4")), 2: ("float64", np.dtype("<f8")), 3: ("int32", np.dtype("<i4")),
    4: ("uint8", np.dtype("u1")), 5: ("int16", np.dtype("<i2")), 6: ("int8", np.dtype("i1")),
    7: ("string", None), 8: ("complex64", np.dtype("<c8")), 9: ("int64", np.dtype("<i8")),
    10: ("bool", np.dtype("?")), 11: ("qint8", None), 12: ("quint8", None), 13: ("qint32", None),
    14: ("bfloat16", np.dtype("<u2")), 15: ("qint16", None), 16: ("quint16", None), 17: ("uint16", np.dtype("<u2")),
    18: ("complex128", np.dtype("<c16")), 19: ("float16", np.dtype("<f2")), 20: ("resource", None),
    21: ("variant", None), 22: ("uint32", np.dtype("<u4")), 23: ("uint64", np.dtype("<u8")),
}  # fmt: skip
_NUMPY = {name: dtype for name, dtype in DTYPES.values() if dtype is not None}


class CheckpointFormatError(ValueError):
    """A checkpoint file that cannot be read as it is: truncated, corrupt, or of a kind not supported."""


class _Corrupt(Exception):
    """Raised deep in the parsers; the caller adds the file's name and turns it into CheckpointFormatError."""


def _error(path: Path, detail: str) -> CheckpointFormatError:
    return CheckpointFormatError(f"{path}: not a readable TF checkpoint: {detail}")


def data_file_name(prefix: str | os.PathLike, shard: int, num_shards: int) -> Path:
    """``prefix.data-00000-of-00001``: the file holding shard `shard` of `num_shards`."""
    prefix = Path(prefix)
    return prefix.with_name(f"{prefix.name}.data-{shard:05d}-of-{num_shards:05d}")


# ----------------------------------------------------------------------------------------------
# Protocol buffers' wire format, for the few fields read here.


def _varint(buf: bytes, pos: int, end: int | None = None) -> tuple[int, int]:
    end = len(buf) if end is None else end
    value = shift = 0
    while pos < end and shift < 70:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise _Corrupt(f"a varint runs past its end at byte {pos}")


def _fields(buf: bytes, what: str) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of a serialized message: ints for varint/fixed, bytes for length-delimited."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > len(buf):
                raise _Corrupt(f"{what}: field {field} runs past the message's end")
            value, pos = int.from_bytes(buf[pos:pos + width], "little"), pos + width
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise _Corrupt(f"{what}: field {field} ({length} bytes) runs past the message's end")
            value, pos = buf[pos:pos + length], pos + length
        else:
            raise _Corrupt(f"{what}: field {field} has wire type {wire}, which this message never uses")
        yield field, wire, value


def _expect(what: str, field: int, wire: int, expected: int) -> None:
    if wire != expected:
        raise _Corrupt(f"{what}: field {field} has wire type {wire}, expected {expected}")


def _non_negative(value: int, what: str) -> int:
    if value >= 1 << 63:  # a negative int64, two's complement
        raise _Corrupt(f"{what} is negative ({value - (1 << 64)})")
    return value


@dataclass(frozen=True)
class TensorEntry:
    """Where a tensor lies and what it is (a BundleEntryProto).

    Attributes:
        name: the variable's name, e.g. ``bert/encoder/layer_0/attention/self/query/kernel``.
        dtype: numpy's name for it (``float32``, ``bfloat16``, ``int64``, ...), ``string``, or ``DT_<n>``
            for a DataType this reader does not know.
        shape: its dimensions.
        shard: the data file holding it (0-based).
        offset: its first byte in that file.
        size: its length in bytes.
        crc32c: the masked CRC32C of its bytes, as stored.
        sliced: a partitioned variable (saved as slices), which is not read.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int
    sliced: bool = False


def _parse_shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for field, wire, value in _fields(buf, "TensorShapeProto"):
        if field == 2:  # Dim {int64 size = 1; string name = 2}
            _expect("TensorShapeProto", field, wire, 2)
            size = 0
            for dim_field, dim_wire, dim_value in _fields(value, "TensorShapeProto.Dim"):
                if dim_field == 1:
                    _expect("TensorShapeProto.Dim", dim_field, dim_wire, 0)
                    size = _non_negative(dim_value, "a dimension")
            dims.append(size)
        elif field == 3 and value:
            raise _Corrupt("a tensor of unknown rank")
    return tuple(dims)


def _parse_entry(name: str, buf: bytes) -> TensorEntry:
    what = f"the entry of {name!r}"
    ints = {1: 0, 3: 0, 4: 0, 5: 0}  # dtype, shard_id, offset, size
    shape, crc, sliced = (), 0, False  # proto3: a field left out is zero (a masked CRC of 0 too)
    for field, wire, value in _fields(buf, what):
        if field in ints:
            _expect(what, field, wire, 0)
            ints[field] = _non_negative(value, f"{what}: field {field}")
        elif field == 2:
            _expect(what, field, wire, 2)
            shape = _parse_shape(value)
        elif field == 6:
            _expect(what, field, wire, 5)
            crc = value
        elif field == 7:
            sliced = True
    code, shard, offset, size = ints[1], ints[3], ints[4], ints[5]
    dtype = DTYPES[code][0] if code in DTYPES else f"DT_{code}"
    return TensorEntry(name, dtype, shape, shard, offset, size, crc, sliced)


def _parse_header(buf: bytes) -> int:
    """The number of data shards, after checking that this reader understands the bundle."""
    num_shards, endianness, min_consumer, bad_consumers = 0, 0, 0, []
    for field, wire, value in _fields(buf, "the bundle header"):
        if field == 1:
            _expect("the bundle header", field, wire, 0)
            num_shards = value
        elif field == 2:
            _expect("the bundle header", field, wire, 0)
            endianness = value
        elif field == 3:  # VersionDef {int32 producer = 1; int32 min_consumer = 2; repeated int32 bad_consumers = 3}
            _expect("the bundle header", field, wire, 2)
            for version_field, version_wire, version_value in _fields(value, "the bundle version"):
                if version_field == 2:
                    min_consumer = version_value
                elif version_field == 3:  # one varint, or a packed run of them
                    bad_consumers += [version_value] if version_wire == 0 else list(_varints(version_value))
    if endianness != 0:
        raise _Corrupt("a big-endian bundle (written on a big-endian machine); only little-endian ones are read")
    if min_consumer > _BUNDLE_VERSION or _BUNDLE_VERSION in bad_consumers:
        raise _Corrupt(f"a bundle of a newer format (it needs a reader of version >= {min_consumer}; this is "
                       f"{_BUNDLE_VERSION})")
    if not 1 <= num_shards < 100000:
        raise _Corrupt(f"the bundle header says {num_shards} data shards")
    return num_shards


def _varints(buf: bytes) -> Iterator[int]:
    pos = 0
    while pos < len(buf):
        value, pos = _varint(buf, pos)
        yield value


# ----------------------------------------------------------------------------------------------
# The table.


def _block_handle(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos, end)
    size, pos = _varint(buf, pos, end)
    return offset, size, pos


def _block(table: bytes, offset: int, size: int, what: str) -> bytes:
    """A block's contents, its trailer checked."""
    end = len(table) - FOOTER_SIZE
    if offset + size + TRAILER_SIZE > end:
        raise _Corrupt(f"{what} (bytes {offset}..{offset + size + TRAILER_SIZE}) runs past the table's "
                       f"{end} bytes of blocks: truncated or corrupt")
    contents = table[offset:offset + size + 1]  # with the compression byte, which the checksum covers
    stored = int.from_bytes(table[offset + size + 1:offset + size + TRAILER_SIZE], "little")
    actual = crc32c(contents)
    if unmask_crc32c(stored) != actual:
        raise _Corrupt(f"{what} at byte {offset} fails its checksum (CRC32C {actual:#010x}, stored "
                       f"{unmask_crc32c(stored):#010x}): corrupt")
    if contents[-1] != _NO_COMPRESSION:
        kind = "Snappy-compressed" if contents[-1] == _SNAPPY else f"compressed (type {contents[-1]})"
        raise _Corrupt(f"{what} at byte {offset} is {kind}; only uncompressed blocks are read (TF writes "
                       "checkpoints uncompressed)")
    return contents[:-1]


def _block_entries(block: bytes, what: str) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of each entry, keys rebuilt from their shared prefixes."""
    if len(block) < 4:
        raise _Corrupt(f"{what} is {len(block)} bytes, shorter than its restart count")
    restarts = int.from_bytes(block[-4:], "little")
    end = len(block) - 4 - 4 * restarts
    if restarts < 1 or end < 0:
        raise _Corrupt(f"{what} claims {restarts} restart points in {len(block)} bytes")
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos, end)
        unshared, pos = _varint(block, pos, end)
        length, pos = _varint(block, pos, end)
        if shared > len(key) or pos + unshared + length > end:
            raise _Corrupt(f"{what}: the entry at byte {pos} runs past its block")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + length]
        pos += length


def _table_entries(table: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of an SSTable held in memory, in key order."""
    if len(table) < FOOTER_SIZE or int.from_bytes(table[-8:], "little") != TABLE_MAGIC:
        raise _Corrupt(f"no table magic number in its last 8 bytes ({len(table)} bytes in all): truncated, or "
                       "not a checkpoint index")
    footer = len(table) - FOOTER_SIZE
    _, _, pos = _block_handle(table, footer, footer + 40)  # the metaindex: TF leaves it empty
    index_offset, index_size, _ = _block_handle(table, pos, footer + 40)
    index = _block(table, index_offset, index_size, "the index block")
    for number, (_, handle) in enumerate(_block_entries(index, "the index block")):
        offset, size, _ = _block_handle(handle, 0, len(handle))
        what = f"data block {number}"
        yield from _block_entries(_block(table, offset, size, what), what)


# ----------------------------------------------------------------------------------------------
# The bundle.


class CheckpointReader:
    """A V2 checkpoint: its index read and checked at once, each tensor read (and checked) on demand.

    Example:
        >>> reader = CheckpointReader("uncased_L-12_H-768_A-12/bert_model.ckpt")
        >>> reader.entries["bert/pooler/dense/kernel"].shape
        (768, 768)
        >>> reader.read("bert/pooler/dense/kernel").dtype
        dtype('float32')

    Args:
        prefix: the checkpoint prefix (``.../bert_model.ckpt``: the files are ``prefix.index`` and
            ``prefix.data-NNNNN-of-MMMMM``).
    Raises:
        CheckpointFormatError (a ValueError): one line naming the file: no index, a truncated or corrupt
            index (bad magic number, block checksum, malformed entry), a bundle of a newer format, a
            missing data shard, or a data shard too short for the tensors it should hold.
    """

    def __init__(self, prefix: str | os.PathLike):
        self.prefix = Path(prefix)
        self.index_path = self.prefix.with_name(self.prefix.name + ".index")
        try:
            table = self.index_path.read_bytes()
        except OSError as err:
            raise _error(self.index_path, f"cannot read the index ({err.strerror or err})") from None
        try:
            self.num_shards, self.entries = self._parse_index(table)
        except _Corrupt as err:
            raise _error(self.index_path, str(err)) from None
        self._check_shards()

    @staticmethod
    def _parse_index(table: bytes) -> tuple[int, dict[str, TensorEntry]]:
        entries, num_shards = {}, None
        for key, value in _table_entries(table):
            if key == b"":
                num_shards = _parse_header(value)
            elif key[:1] == b"\x00":
                continue  # a slice of a partitioned variable (its key encodes the slice); the variable says so
            else:
                try:
                    name = key.decode("utf-8")
                except UnicodeDecodeError:
                    raise _Corrupt(f"a tensor name that is not UTF-8: {key[:80]!r}") from None
                entries[name] = _parse_entry(name, value)
        if num_shards is None:
            raise _Corrupt("no bundle header (the entry with the empty key)")
        for entry in entries.values():
            if entry.shard >= num_shards and not entry.sliced:
                raise _Corrupt(f"tensor {entry.name!r} is in shard {entry.shard}, but there are {num_shards} shards")
        return num_shards, entries

    def data_path(self, shard: int) -> Path:
        """The file of data shard `shard`."""
        return data_file_name(self.prefix, shard, self.num_shards)

    def _check_shards(self) -> None:
        needed: dict[int, TensorEntry] = {}  # shard -> the tensor reaching furthest into it
        for entry in sorted(self.entries.values(), key=lambda e: e.offset + e.size):
            if not entry.sliced:
                needed[entry.shard] = entry
        for shard in range(self.num_shards):
            path = self.data_path(shard)
            try:
                size = path.stat().st_size
            except OSError:
                raise _error(path, f"data shard {shard} of {self.num_shards} is missing") from None
            entry = needed.get(shard)
            if entry is not None and entry.offset + entry.size > size:
                raise _error(path, f"{size} bytes, but tensor {entry.name!r} lies at bytes {entry.offset}.."
                                   f"{entry.offset + entry.size}: truncated")

    def read(self, name: str, verify: bool = True) -> np.ndarray:
        """One tensor as a new numpy array (bfloat16 as float32; see the module's notes).

        Args:
            name: a key of `entries`.
            verify: check the bytes against the stored CRC32C (about 340 MB/s; see the module's notes).
        Returns:
            The array, of the entry's shape.
        Raises:
            KeyError: no such tensor.
            CheckpointFormatError: a string or other non-numeric tensor, a partitioned variable, a size that
                does not fit the shape, a short read or a checksum mismatch (each naming the tensor).
        """
        entry = self.entries[name]
        path = self.data_path(entry.shard)
        dtype = _NUMPY.get(entry.dtype)
        if entry.sliced:
            raise _error(self.index_path, f"tensor {name!r} is a partitioned variable (saved in slices); only "
                                          "whole tensors are read")
        if dtype is None:
            kind = "an unknown dtype" if entry.dtype.startswith("DT_") else "not a number array"
            raise _error(self.index_path, f"tensor {name!r} is {entry.dtype} ({kind}); only numeric tensors "
                                          "are read")
        count = math.prod(entry.shape)
        if count * dtype.itemsize != entry.size:
            raise _error(self.index_path, f"tensor {name!r} is {entry.dtype} of shape {list(entry.shape)} "
                                          f"({count * dtype.itemsize} bytes), but its entry says {entry.size} bytes")
        raw = np.empty(entry.size, dtype=np.uint8)
        with open(path, "rb") as f:
            f.seek(entry.offset)
            got = f.readinto(memoryview(raw))
        if got != entry.size:
            raise _error(path, f"tensor {name!r} lies at bytes {entry.offset}..{entry.offset + entry.size}, "
                               "past the file's end: truncated")
        if verify:
            actual, stored = crc32c(raw), unmask_crc32c(entry.crc32c)
            if actual != stored:
                raise _error(path, f"tensor {name!r} (bytes {entry.offset}..{entry.offset + entry.size}) fails its "
                                   f"checksum (CRC32C {actual:#010x}, stored {stored:#010x}): corrupt")
        array = raw.view(dtype).reshape(entry.shape)
        if entry.dtype == "bfloat16":  # the top half of a float32: widening is exact
            array = (array.astype("<u4") << 16).view("<f4")
        return array
