"""TensorFlow's V2 checkpoints written with the standard library and numpy, byte for byte as TF's own
BundleWriter writes them (tf.raw_ops.SaveV2 of the same tensors gives identical files).

The format is drawn in bert.formats.tf_reader. What TF's writer chooses, and this one too:

    data file   tensors in name order, back to back (no alignment), little-endian
    index       "" -> BundleHeaderProto {num_shards: 1, version {producer: 1}}, then one entry per name
    blocks      uncompressed; data blocks cut once they reach 256 KiB; a restart every 16 keys (every key
                in the index block); index keys shortened to the shortest separator, as LevelDB's
                bytewise comparator does
    protos      proto3: fields holding zero are left out; a shape is always written, even empty
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from bert.formats.crc32c import crc32c, mask_crc32c
from bert.formats.tf_reader import DTYPES, TABLE_MAGIC, data_file_name

__all__ = ["write_checkpoint"]

BLOCK_SIZE = 256 * 1024  # tensorflow/core/lib/io/table_options.h block_size
RESTART_INTERVAL = 16  # block_restart_interval
_CODES = {name: code for code, (name, dtype) in DTYPES.items() if dtype is not None}  # "float32" -> 1
_BUNDLE_VERSION = 1


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, value: int | bytes, fixed32: bool = False) -> bytes:
    """One protobuf field: varint, fixed32 or length-delimited (bytes); b"" for a zero scalar (proto3)."""
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    if not value:
        return b""
    if fixed32:
        return _varint(number << 3 | 5) + value.to_bytes(4, "little")
    return _varint(number << 3) + _varint(value)


def _entry(code: int, shape: tuple[int, ...], offset: int, size: int, crc: int) -> bytes:
    """BundleEntryProto {dtype = 1; TensorShapeProto shape = 2 {repeated Dim dim = 2 {int64 size = 1}};
    shard_id = 3; offset = 4; size = 5; fixed32 crc32c = 6}, all in shard 0."""
    shape_proto = b"".join(_field(2, _field(1, dim)) for dim in shape)
    return (_field(1, code) + _field(2, shape_proto) + _field(4, offset) + _field(5, size)
            + _field(6, crc, fixed32=True))


class _Block:
    """LevelDB's BlockBuilder: keys stored as (shared prefix length, rest), a restart point every `interval`."""

    def __init__(self, interval: int):
        self.interval, self.buffer, self.restarts, self.count, self.last = interval, bytearray(), [0], 0, b""

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.count < self.interval:
            while shared < min(len(key), len(self.last)) and key[shared] == self.last[shared]:
                shared += 1
        else:
            self.restarts.append(len(self.buffer))
            self.count = 0
        self.buffer += _varint(shared) + _varint(len(key) - shared) + _varint(len(value)) + key[shared:] + value
        self.last, self.count = key, self.count + 1

    def size(self) -> int:
        return len(self.buffer) + 4 * len(self.restarts) + 4

    def finish(self) -> bytes:
        restarts = b"".join(r.to_bytes(4, "little") for r in self.restarts)
        return bytes(self.buffer) + restarts + len(self.restarts).to_bytes(4, "little")


def _separator(start: bytes, limit: bytes) -> bytes:
    """The shortest key >= start and < limit that LevelDB's bytewise comparator picks."""
    common = 0
    while common < min(len(start), len(limit)) and start[common] == limit[common]:
        common += 1
    if common < min(len(start), len(limit)) and start[common] < 0xFF and start[common] + 1 < limit[common]:
        return start[:common] + bytes([start[common] + 1])
    return start


def _successor(key: bytes) -> bytes:
    """The shortest key >= `key`: its first byte that is not 0xff, plus one."""
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


def _table(entries: list[tuple[bytes, bytes]]) -> bytes:
    """An SSTable of sorted (key, value) pairs, as LevelDB's TableBuilder lays it out."""
    out = bytearray()

    def write_block(block: _Block) -> bytes:  # -> its BlockHandle
        contents = block.finish() + b"\x00"  # no compression
        handle = _varint(len(out)) + _varint(len(contents) - 1)
        out.extend(contents + mask_crc32c(crc32c(contents)).to_bytes(4, "little"))
        return handle

    data, index, pending, last = _Block(RESTART_INTERVAL), _Block(1), None, b""
    for key, value in entries:
        if pending is not None:  # the block before this key was written: index it by a short separator
            index.add(_separator(last, key), pending)
            pending = None
        data.add(key, value)
        last = key
        if data.size() >= BLOCK_SIZE:
            pending, data = write_block(data), _Block(RESTART_INTERVAL)
    if data.buffer:
        pending = write_block(data)
    metaindex = write_block(_Block(RESTART_INTERVAL))  # TF stores no meta blocks
    if pending is not None:
        index.add(_successor(last), pending)
    footer = (metaindex + write_block(index)).ljust(40, b"\x00") + TABLE_MAGIC.to_bytes(8, "little")
    return bytes(out + footer)


def write_checkpoint(variables: Mapping[str, np.ndarray], prefix: str | os.PathLike) -> Path:
    """Write `variables` as ``prefix.index`` + ``prefix.data-00000-of-00001`` (one shard).

    Args:
        variables: {name: array}: float32/16/64, bfloat16 (ml_dtypes' numpy type, as TF returns it),
            int8/16/32/64, uint8/16/32/64, bool, complex64/128.
        prefix: the checkpoint prefix; its folder must exist. The files are written in place (the caller
            renames them into place when it needs atomicity).
    Returns:
        The prefix.
    Raises:
        ValueError: before anything is written: an empty name, or an array of a dtype TF checkpoints do
            not hold as numbers (strings, objects).
    """
    prefix = Path(prefix)
    for name, value in variables.items():
        dtype = np.asarray(value).dtype
        if not name or dtype.name not in _CODES:
            problem = "an empty name" if not name else f"{dtype} is not a dtype TF checkpoints hold"
            raise ValueError(f"cannot write variable {name!r} to a TF checkpoint: {problem}")
    entries = [(b"", _field(1, 1) + _field(3, _field(1, _BUNDLE_VERSION)))]  # header: one shard, version 1
    offset = 0
    with open(data_file_name(prefix, 0, 1), "wb") as f:
        for name in sorted(variables, key=lambda n: n.encode("utf-8")):
            array = np.asarray(variables[name])
            code = _CODES[array.dtype.name]
            if array.dtype.byteorder == ">":
                array = array.astype(array.dtype.newbyteorder("<"))
            raw = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
            f.write(raw.data)
            crc = mask_crc32c(crc32c(raw))
            entries.append((name.encode("utf-8"), _entry(code, array.shape, offset, raw.size, crc)))
            offset += raw.size
    prefix.with_name(prefix.name + ".index").write_bytes(_table(entries))
    return prefix
