"""The export directory: its vocabulary, the path of every artifact, and discovery.

TensorFlow-free: the export writes through it, and the benchmarks, the report and
deploy.predict read through it. An export directory holds one export:

    saved_model/<model>/<version>/     TF Serving SavedModel (fp32)
    tflite/<model>_<quantization>.tflite
    onnx/<model>.onnx                  fp32 (and onnx/<model>_int8.onnx: QDQ int8)
    openvino/<model>.xml + .bin        OpenVINO IR, fp32 (and openvino/<model>_int8.xml: NNCF int8)
    plan.json                          the exported model's channel plan
    pruned_model/                      with pruning: checkpoint, plan.json, prune_report.json
    export_report.json / .md           the typed report (deploy.report)

`artifact_path` names an artifact and `parse_artifact_path` is its exact inverse. Model names
are letters, digits, '_' and '-', and may not end in `_<quantization>`, so that every name
parses back one way.
"""

from __future__ import annotations

import dataclasses
import os
import re

FORMATS = ("saved_model", "tflite", "onnx", "openvino")
QUANTIZATIONS = ("fp32", "fp16", "dynamic", "int8", "qat")
# The quantizations each format is written in (the others are TFLite's alone).
FORMAT_QUANTIZATIONS = {"saved_model": ("fp32",), "tflite": QUANTIZATIONS,
                        "onnx": ("fp32", "int8"), "openvino": ("fp32", "int8")}
EXTENSIONS = {"tflite": ".tflite", "onnx": ".onnx", "openvino": ".xml"}
# Every exported model's interface: the input and output names (TFLite: also its signature).
SIGNATURE, INPUT_NAME, OUTPUT_NAME = "serving_default", "images", "logits"
PLAN_FILENAME = "plan.json"
REPORT_JSON = "export_report.json"
REPORT_MARKDOWN = "export_report.md"
PRUNED_MODEL_DIR = "pruned_model"
UNPRUNED_SUFFIX = "_unpruned"
_NAME = re.compile(r"[A-Za-z0-9_-]+")


@dataclasses.dataclass(frozen=True)
class ArtifactName:
    """What an artifact path says: its model, format, quantization (and SavedModel version).

    `model` and `quantization` are None for a file in a format folder that the layout did not
    name (a file dropped there by hand).
    """

    path: str
    format: str
    model: str | None
    quantization: str | None
    version: int | None = None


def check_model_name(name: str) -> str:
    """Returns `name`, or raises ValueError when it is not a valid model name."""
    if not _NAME.fullmatch(name or ""):
        raise ValueError(f"model name must be letters, digits, '_' or '-', got {name!r}")
    for quantization in QUANTIZATIONS:
        if name.endswith(f"_{quantization}"):
            raise ValueError(f"model name {name!r} ends in _{quantization}, which artifact "
                             f"file names reserve for the quantization")
    return name


def formats_of(quantization: str) -> tuple[str, ...]:
    """The formats written in `quantization`."""
    return tuple(f for f in FORMATS if quantization in FORMAT_QUANTIZATIONS[f])


def artifact_path(model: str, fmt: str, quantization: str = "fp32", version: int = 1) -> str:
    """The path of an artifact, relative to the export directory.

    Raises:
      ValueError: an unknown format, or a quantization the format is not written in.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if quantization not in FORMAT_QUANTIZATIONS[fmt]:
        raise ValueError(f"{fmt} is not written in {quantization!r} (only "
                         f"{', '.join(FORMAT_QUANTIZATIONS[fmt])})")
    if fmt == "saved_model":
        return os.path.join("saved_model", model, str(version))
    if fmt == "tflite":
        return os.path.join("tflite", f"{model}_{quantization}.tflite")
    suffix = "" if quantization == "fp32" else f"_{quantization}"
    return os.path.join(fmt, f"{model}{suffix}{EXTENSIONS[fmt]}")


def parse_artifact_path(relative: str) -> ArtifactName | None:
    """The inverse of `artifact_path`; None for a path that is no artifact's place.

    A file with a format's extension in that format's folder whose name the layout would not
    write is returned with `model` and `quantization` None.
    """
    parts = os.path.normpath(relative).split(os.sep)
    if parts[0] == "saved_model":
        if len(parts) == 3 and parts[2].isdecimal() and int(parts[2]) >= 1:
            return ArtifactName(relative, "saved_model", parts[1], "fp32", int(parts[2]))
        return None
    if len(parts) != 2 or parts[0] not in EXTENSIONS or not parts[1].endswith(
            EXTENSIONS[parts[0]]):
        return None
    fmt, stem = parts[0], parts[1][:-len(EXTENSIONS[parts[0]])]
    model, _, quantization = stem.rpartition("_")
    if fmt == "tflite":
        known = bool(model) and quantization in QUANTIZATIONS
    elif model and quantization in FORMAT_QUANTIZATIONS[fmt] and quantization != "fp32":
        known = True
    else:
        model, quantization = stem, "fp32"
        known = not any(stem.endswith(f"_{q}") for q in QUANTIZATIONS)
    if not known or not _NAME.fullmatch(model):
        return ArtifactName(relative, fmt, None, None)
    return ArtifactName(relative, fmt, model, quantization)


def weights_file(path: str) -> str | None:
    """The file holding an artifact's weights beside it (an OpenVINO IR's .bin), or None."""
    return path[:-len(".xml")] + ".bin" if path.endswith(EXTENSIONS["openvino"]) else None


def artifact_size(path: str) -> int:
    """Bytes of an artifact on disk: a file, its weights file, or a SavedModel directory."""
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(root, name))
                   for root, _, names in os.walk(path) for name in names)
    extra = weights_file(path)
    return os.path.getsize(path) + (os.path.getsize(extra) if extra and os.path.isfile(extra)
                                    else 0)


def is_saved_model(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "saved_model.pb"))


def saved_model_versions(base: str) -> list[int]:
    """The numeric versions (ascending) with a SavedModel under a TF Serving model base dir."""
    if not os.path.isdir(base):
        return []
    return sorted(int(name) for name in os.listdir(base)
                  if name.isdecimal() and is_saved_model(os.path.join(base, name)))


def saved_model_version_dir(path: str) -> str:
    """A SavedModel dir, or the newest numeric version under a TF Serving model base dir.

    Raises:
      ValueError: neither.
    """
    if is_saved_model(path):
        return path
    versions = saved_model_versions(path)
    if not versions:
        raise ValueError(f"{path}: not a SavedModel (no saved_model.pb) nor a model base "
                         f"directory with numeric versions")
    return os.path.join(path, str(versions[-1]))


def discover(export_dir: str) -> list[ArtifactName]:
    """Every artifact on disk: SavedModel versions, then the files of each format folder."""
    found = []
    base = os.path.join(export_dir, "saved_model")
    for model in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        for version in saved_model_versions(os.path.join(base, model)):
            found.append(parse_artifact_path(os.path.join("saved_model", model, str(version))))
    for fmt in FORMATS:
        if fmt not in EXTENSIONS:
            continue
        folder = os.path.join(export_dir, fmt)
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            parsed = parse_artifact_path(os.path.join(fmt, name))
            if parsed is not None and os.path.isfile(os.path.join(folder, name)):
                found.append(parsed)
    return [name for name in found if name is not None]


def artifact_format(path: str) -> str:
    """The format of an artifact given by its path anywhere on disk.

    Raises:
      FileNotFoundError: no such path.
      ValueError: not an artifact.
    """
    if not os.path.lexists(path):
        raise FileNotFoundError(f"{path}: no such file or directory")
    if os.path.isdir(path):
        saved_model_version_dir(path)
        return "saved_model"
    for fmt, extension in EXTENSIONS.items():
        if path.endswith(extension):
            return fmt
    raise ValueError(f"{path}: not an exported artifact (a SavedModel directory, "
                     f"{', '.join(EXTENSIONS.values())} file)")


def is_artifact(path: str) -> bool:
    """True for a path `artifact_format` accepts (checkpoint dirs and .npy files are not)."""
    try:
        artifact_format(path)
    except (ValueError, OSError):
        return False
    return True
