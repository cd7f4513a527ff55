"""TFLite model metadata for ICNet files, so MediaPipe's ImageSegmenter runs them as they are.

The metadata is a flatbuffer of the TFLite metadata schema (`metadata_schema.fbs`, file
identifier `M001`) stored in a model buffer named `TFLITE_METADATA`, with the labels file
appended to the model as a zip archive (how the TFLite metadata populator attaches associated
files; interpreters ignore the bytes after the model). It is built here with the flatbuffers
runtime alone (the schema's field order is the layout), since the packages that ship the
generated schema classes cannot share this environment (tflite-support needs protobuf < 4,
mediapipe absl-py 2.x).

What it holds: the model's name, description and version; the input as an RGB image with
NormalizationOptions mean 0 / std 1 and pixel statistics 0..255 (ICNet normalizes inside the
model; MediaPipe refuses a float input without NormalizationOptions); the output as a
segmentation mask (GRAYSCALE image properties) whose labels file (TENSOR_AXIS_LABELS) lists the
dataset's class names.
"""

from __future__ import annotations

import dataclasses
import io
import zipfile
from collections.abc import Sequence

import flatbuffers
from flatbuffers import number_types
from flatbuffers.table import Table

METADATA_NAME = "TFLITE_METADATA"
LABELS_FILE = "labels.txt"
_IDENTIFIER = b"M001"
_MIN_PARSER_VERSION = "1.0.0"  # image properties, normalization, associated files
_IMAGE_PROPERTIES, _NORMALIZATION_OPTIONS = 2, 1  # union member indices
_RGB, _GRAYSCALE = 1, 2
_TENSOR_AXIS_LABELS = 2


@dataclasses.dataclass(frozen=True)
class SegmenterMetadata:
    """What `read_metadata` finds in a model."""

    name: str
    description: str
    version: str
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None  # (mean, std)
    labels: tuple[str, ...]


# --------------------------------------------------------------------------------------------
# Writing.


def _strings(builder: flatbuffers.Builder, **values: str) -> dict[str, int]:
    return {key: builder.CreateString(value) for key, value in values.items()}


def _floats(builder: flatbuffers.Builder, values: Sequence[float]) -> int:
    builder.StartVector(4, len(values), 4)
    for value in reversed(values):
        builder.PrependFloat32(float(value))
    return builder.EndVector()


def _offsets(builder: flatbuffers.Builder, offsets: Sequence[int]) -> int:
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def _table(builder: flatbuffers.Builder, slots: int, fields: dict[int, tuple[str, int]]) -> int:
    """A table: slot -> ("offset" | "ubyte" | "byte" | "int", value)."""
    builder.StartObject(slots)
    for slot, (kind, value) in sorted(fields.items()):
        if kind == "offset":
            builder.PrependUOffsetTRelativeSlot(slot, value, 0)
        elif kind == "ubyte":
            builder.PrependUint8Slot(slot, value, 0)
        elif kind == "byte":
            builder.PrependInt8Slot(slot, value, 0)
        else:
            builder.PrependInt32Slot(slot, value, 0)
    return builder.EndObject()


def _image_content(builder: flatbuffers.Builder, color_space: int,
                   value_range: tuple[int, int] | None = None) -> int:
    properties = _table(builder, 2, {0: ("byte", color_space)})  # ImageProperties
    fields = {0: ("ubyte", _IMAGE_PROPERTIES), 1: ("offset", properties)}
    if value_range is not None:  # ValueRange {min, max}
        fields[2] = ("offset", _table(builder, 2, {0: ("int", value_range[0]),
                                                   1: ("int", value_range[1])}))
    return _table(builder, 3, fields)  # Content


def metadata_buffer(name: str, description: str, version: str, num_classes: int,
                    float_input: bool) -> bytes:
    """The ModelMetadata flatbuffer of an ICNet segmenter."""
    builder = flatbuffers.Builder(1024)
    text = _strings(builder, name=name, description=description, version=version,
                    parser=_MIN_PARSER_VERSION, input="images", output="logits",
                    input_description="RGB image, pixel values 0..255 (float32 models) or raw "
                                      "uint8 pixels (integer models)",
                    output_description=f"Per-class logits [1, H/4, W/4, {num_classes}]; the "
                                       f"argmax after a bilinear, align-corners upsample to "
                                       f"the image is the category mask",
                    labels=LABELS_FILE, labels_description="Class names, one per line, in "
                                                           "class-id order")
    normalization = _table(builder, 2, {0: ("offset", _floats(builder, [0.0])),
                                        1: ("offset", _floats(builder, [1.0]))})
    process_unit = _table(builder, 2, {0: ("ubyte", _NORMALIZATION_OPTIONS),
                                       1: ("offset", normalization)})
    stats = _table(builder, 2, {0: ("offset", _floats(builder, [255.0])),
                                1: ("offset", _floats(builder, [0.0]))})  # Stats {max, min}
    input_fields = {0: ("offset", text["input"]), 1: ("offset", text["input_description"]),
                    3: ("offset", _image_content(builder, _RGB)), 5: ("offset", stats)}
    if float_input:  # MediaPipe normalizes float inputs only, and requires it for them
        input_fields[4] = ("offset", _offsets(builder, [process_unit]))
    image = _table(builder, 7, input_fields)  # TensorMetadata
    labels = _table(builder, 5, {0: ("offset", text["labels"]),
                                 1: ("offset", text["labels_description"]),
                                 2: ("byte", _TENSOR_AXIS_LABELS)})  # AssociatedFile
    mask = _table(builder, 7, {0: ("offset", text["output"]),
                               1: ("offset", text["output_description"]),
                               3: ("offset", _image_content(builder, _GRAYSCALE, (1, 2))),
                               6: ("offset", _offsets(builder, [labels]))})
    subgraph = _table(builder, 10, {2: ("offset", _offsets(builder, [image])),
                                    3: ("offset", _offsets(builder, [mask]))})
    root = _table(builder, 8, {0: ("offset", text["name"]),
                               1: ("offset", text["description"]),
                               2: ("offset", text["version"]),
                               3: ("offset", _offsets(builder, [subgraph])),
                               7: ("offset", text["parser"])})
    builder.Finish(root, file_identifier=_IDENTIFIER)
    return bytes(builder.Output())


def model_part(content: bytes) -> bytes:
    """The model flatbuffer without the zip of associated files appended to it."""
    if zipfile.is_zipfile(io.BytesIO(content)):
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            return content[:min(info.header_offset for info in archive.infolist())]
    return content


def add_metadata(content: bytes, labels: Sequence[str], name: str, description: str,
                 version: str) -> bytes:
    """The model with segmenter metadata and `labels` as its labels file (replacing any).

    Raises:
      ValueError: not one input and one output, or not one label per class.
    """
    from ai_edge_litert import schema_py_generated as schema

    content = model_part(content)
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(content, 0))
    graph = model.subgraphs[0]
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ValueError("segmenter metadata needs one input and one output")
    num_classes = int(graph.tensors[graph.outputs[0]].shape[-1])
    if len(labels) != num_classes:
        raise ValueError(f"{len(labels)} labels for a model with {num_classes} classes")
    float_input = graph.tensors[graph.inputs[0]].type == schema.TensorType.FLOAT32
    data = list(metadata_buffer(name, description, version, num_classes, float_input))
    entry = next((m for m in model.metadata or [] if m.name.decode() == METADATA_NAME), None)
    if entry is None:  # a new buffer and entry; a second call replaces the buffer's data
        model.buffers.append(schema.BufferT())
        entry = schema.MetadataT()
        entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
        model.metadata = [*(model.metadata or []), entry]
    model.buffers[entry.buffer].data = data
    builder = flatbuffers.Builder(len(content) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    stream = io.BytesIO(bytes(builder.Output()))
    with zipfile.ZipFile(stream, "a", zipfile.ZIP_STORED) as archive:
        archive.writestr(LABELS_FILE, "\n".join(labels) + "\n")
    return stream.getvalue()


# --------------------------------------------------------------------------------------------
# Reading.


def _field(table: Table, slot: int) -> int:
    return table.Offset(4 + 2 * slot)


def _string(table: Table, slot: int) -> str:
    offset = _field(table, slot)
    return table.String(offset + table.Pos).decode() if offset else ""


def _children(table: Table, slot: int) -> list[Table]:
    offset = _field(table, slot)
    if not offset:
        return []
    start = table.Vector(offset)
    return [Table(table.Bytes, table.Indirect(start + 4 * i))
            for i in range(table.VectorLen(offset))]


def _child(table: Table, slot: int) -> Table | None:
    offset = _field(table, slot)
    return Table(table.Bytes, table.Indirect(offset + table.Pos)) if offset else None


def _float_vector(table: Table, slot: int) -> tuple[float, ...]:
    offset = _field(table, slot)
    if not offset:
        return ()
    start = table.Vector(offset)
    return tuple(table.Get(number_types.Float32Flags, start + 4 * i)
                 for i in range(table.VectorLen(offset)))


def read_metadata(content: bytes, where: str = "the model") -> SegmenterMetadata:
    """The segmenter metadata of a model (and its labels file).

    Raises:
      ValueError: the model has no TFLite metadata, naming `where`.
    """
    from ai_edge_litert import schema_py_generated as schema

    flatbuffer = model_part(content)
    model = schema.Model.GetRootAs(flatbuffer, 0)
    index = next((model.Metadata(i).Buffer() for i in range(model.MetadataLength())
                  if model.Metadata(i).Name().decode() == METADATA_NAME), None)
    if index is None:
        raise ValueError(f"{where}: no TFLite metadata ({METADATA_NAME}); deploy.export writes "
                         f"it into every .tflite")
    data = model.Buffers(index).DataAsNumpy().tobytes()
    if not flatbuffers.util.BufferHasIdentifier(data, 0, _IDENTIFIER):
        raise ValueError(f"{where}: its {METADATA_NAME} buffer is not TFLite metadata")
    root = Table(data, flatbuffers.encode.Get(number_types.UOffsetTFlags.packer_type, data, 0))
    subgraph = _children(root, 3)[0]
    image = _children(subgraph, 2)[0]
    units = _children(image, 4)
    normalization = None
    if units:
        options = _child(units[0], 1)
        normalization = (_float_vector(options, 0), _float_vector(options, 1))
    labels = ()
    if zipfile.is_zipfile(io.BytesIO(content)):
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            if LABELS_FILE in archive.namelist():
                labels = tuple(archive.read(LABELS_FILE).decode().splitlines())
    return SegmenterMetadata(name=_string(root, 0), description=_string(root, 1),
                             version=_string(root, 2), normalization=normalization,
                             labels=labels)
