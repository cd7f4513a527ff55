"""A `.tflite` on LiteRT's GPU accelerator in a worker process that sees the Vulkan device of
`deploy.vulkan.environment()` (a real GPU, or the software one of `make gpu-sim`): a
`deploy.runtimes` Session, so export verification measures it as it measures every other.

The worker reads arrays from stdin and writes logits to stdout (each a length-prefixed .npy
image of the array, never pickled); its first line is a JSON header (input size and dtype,
accelerator facts, the Vulkan device) or {"error": ...}.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import tempfile
from typing import Any

import numpy as np

from deploy import vulkan


class GpuWorkerSession:
    """One `.tflite` on the GPU accelerator, in its own process (close() ends it).

    Raises (from the constructor):
      RuntimeError: the worker could not open the model on the GPU (its one-line error).
    """

    def __init__(self, path: str):
        # The worker's log goes to a file: a full stderr pipe would stall it.
        self._log = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "deploy.gpu_session", path], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._log,
            env=vulkan.environment() | {"PYTHONPATH": vulkan.REPO}, cwd=vulkan.REPO)
        line = self._process.stdout.readline()
        header = json.loads(line) if line.startswith(b"{") else {"error": self._stderr_tail()}
        if "error" in header:
            self.close()
            raise RuntimeError(f"{path}: {header['error']}")
        self.input_size = tuple(header["input_size"])
        self.input_dtype = header["input_dtype"]
        self.device = vulkan.VulkanDevice(**header["device"])
        self.info: dict[str, Any] = dict(header["info"], device=self.device.describe())

    def prepare(self, images: np.ndarray) -> np.ndarray:
        # The integer models take raw pixels, as under CompiledModel on the CPU.
        return images.astype(self.input_dtype)

    def run(self, feed: np.ndarray) -> np.ndarray:
        try:
            _send(self._process.stdin, feed)
            value = _receive(self._process.stdout)
        except (OSError, ValueError):
            value = None
        if value is None:
            raise RuntimeError(f"the GPU worker failed: {self._stderr_tail()}")
        return value

    def close(self) -> None:
        """Ends the worker (closing its input; killed if it does not exit in 30 s)."""
        if not self._process.stdin.closed:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process.stdout.close()

    def _stderr_tail(self) -> str:
        """The worker's last error line (after ending it)."""
        self.close()
        self._log.seek(0)
        lines = [line for line in self._log.read().decode(errors="replace").splitlines()
                 if line.strip()]
        errors = [line for line in lines if "ERROR" in line or "Error" in line]
        return (errors or lines or [f"exit code {self._process.returncode}"])[-1][:300]


def _serve(path: str) -> int:
    """The worker: the model on the GPU accelerator, one inference per array read."""
    from deploy.runtimes import error_text
    from deploy.runtimes.litert import CompiledModelSession

    # LiteRT may print to stdout: keep the real stdout for the protocol only.
    protocol = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    try:
        device = vulkan.devices_in_this_process()[0]
        session = CompiledModelSession(path, gpu=True)
    except Exception as e:  # noqa: BLE001 - every failure becomes the header's error
        protocol.write(json.dumps({"error": error_text(e)[:300]}).encode() + b"\n")
        return 1
    protocol.write(json.dumps({"input_size": session.input_size,
                               "input_dtype": session.input_dtype, "info": session.info,
                               "device": {"name": device.name, "type": device.type}}
                              ).encode() + b"\n")
    protocol.flush()
    while (feed := _receive(sys.stdin.buffer)) is not None:
        _send(protocol, session.run(feed))
    return 0


def _send(stream, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    stream.write(struct.pack("<Q", buffer.tell()) + buffer.getvalue())
    stream.flush()


def _receive(stream) -> np.ndarray | None:
    """The next array, or None at the end of the stream."""
    size = stream.read(8)
    if len(size) < 8:
        return None
    content = stream.read(struct.unpack("<Q", size)[0])
    return np.load(io.BytesIO(content), allow_pickle=False)


if __name__ == "__main__":
    sys.exit(_serve(sys.argv[1]))
