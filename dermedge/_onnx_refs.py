"""Which files an ONNX model pulls in as external data, read from the protobuf without the onnx package.

ONNX Runtime and OpenVINO open the ``location`` of every tensor stored as external data, relative to
the model file, wherever it points. A bundle must not reach outside itself, nor use a file that is not
listed and checksummed in its manifest, so the runtime lists those locations first
(``Bundle.check_references``). Only the messages that can hold tensors are walked; tensor bytes are
skipped by their length, so a 14 MB model is read in milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterator

# field numbers from onnx.proto (checked against the onnx package in tests/dermedge/test_bundle.py)
_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER = 1, 5, 15
_NODE_ATTRIBUTE = 5
_FUNCTION_NODE = 7
_ATTR_TENSOR, _ATTR_GRAPH, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_EXTERNAL_DATA = 13
_ENTRY_KEY, _ENTRY_VALUE = 1, 2
_MAX_DEPTH = 64


class MalformedOnnx(ValueError):
    """The bytes are not a well-formed protobuf where an ONNX model is expected."""


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise MalformedOnnx("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(data: memoryview) -> Iterator[tuple[int, memoryview | None]]:
    """``(field number, payload)`` for each field; payload only for length-delimited ones."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(data, pos)
            yield number, None
        elif wire == 1:
            pos += 8
            yield number, None
        elif wire == 5:
            pos += 4
            yield number, None
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise MalformedOnnx("a field runs past the end of the file")
            yield number, data[pos : pos + length]
            pos += length
        else:
            raise MalformedOnnx(f"unsupported protobuf wire type {wire}")
        if pos > len(data):
            raise MalformedOnnx("a field runs past the end of the file")


def _sub(data: memoryview, wanted: set[int]) -> Iterator[tuple[int, memoryview]]:
    for number, payload in _fields(data):
        if number in wanted and payload is not None:
            yield number, payload


def _tensor_locations(tensor: memoryview) -> Iterator[str]:
    for _, entry in _sub(tensor, {_TENSOR_EXTERNAL_DATA}):
        key = value = None
        for number, payload in _sub(entry, {_ENTRY_KEY, _ENTRY_VALUE}):
            text = bytes(payload).decode("utf-8", errors="replace")
            key, value = (text, value) if number == _ENTRY_KEY else (key, text)
        if key == "location" and value is not None:
            yield value


def _sparse_locations(sparse: memoryview) -> Iterator[str]:
    for _, tensor in _sub(sparse, {_SPARSE_VALUES, _SPARSE_INDICES}):
        yield from _tensor_locations(tensor)


def _node_locations(node: memoryview, depth: int) -> Iterator[str]:
    for _, attr in _sub(node, {_NODE_ATTRIBUTE}):
        for number, payload in _sub(
            attr, {_ATTR_TENSOR, _ATTR_GRAPH, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES}
        ):
            if number in (_ATTR_TENSOR, _ATTR_TENSORS):
                yield from _tensor_locations(payload)
            elif number in (_ATTR_SPARSE, _ATTR_SPARSES):
                yield from _sparse_locations(payload)
            else:
                yield from _graph_locations(payload, depth + 1)


def _graph_locations(graph: memoryview, depth: int) -> Iterator[str]:
    if depth > _MAX_DEPTH:
        raise MalformedOnnx(f"subgraphs nested deeper than {_MAX_DEPTH}")
    for number, payload in _sub(graph, {_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER}):
        if number == _GRAPH_INITIALIZER:
            yield from _tensor_locations(payload)
        elif number == _GRAPH_SPARSE_INITIALIZER:
            yield from _sparse_locations(payload)
        else:
            yield from _node_locations(payload, depth)


def external_data_locations(model: bytes) -> list[str]:
    """Every distinct external-data ``location`` an ONNX model refers to, in first-seen order.

    Raises:
        MalformedOnnx: the bytes are not a well-formed ONNX protobuf.
    """
    data = memoryview(model)
    seen: dict[str, None] = {}
    for number, payload in _sub(data, {_MODEL_GRAPH, _MODEL_FUNCTIONS}):
        if number == _MODEL_GRAPH:
            seen.update(dict.fromkeys(_graph_locations(payload, 0)))
        else:
            for _, node in _sub(payload, {_FUNCTION_NODE}):
                seen.update(dict.fromkeys(_node_locations(node, 0)))
    return list(seen)
