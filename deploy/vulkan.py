"""The Vulkan devices LiteRT's GPU accelerator (WebGPU/Dawn over Vulkan) can run on, and the
environment of the private software device `make gpu-sim` installs (Mesa's lavapipe).

Vulkan's loader reads LD_LIBRARY_PATH and VK_ICD_FILENAMES when a process starts, so a
process that should see the private device is started with `environment()`; `devices()` asks
such a process. Standard library only (ctypes over libvulkan.so.1).

  python -m deploy.vulkan    # the devices this environment (plus the private one) sees
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIM_DIR_ENV = "ICNET_GPU_SIM"
_LIB = os.path.join("root", "usr", "lib", "x86_64-linux-gnu")
_ICD = os.path.join("icd", "lvp_icd.x86_64.json")
# VkPhysicalDeviceType.
_TYPES = {0: "other", 1: "integrated GPU", 2: "discrete GPU", 3: "virtual GPU", 4: "CPU"}


class NoVulkanDevice(Exception):
    """No Vulkan device can be used here (the reason names what is missing)."""


@dataclasses.dataclass(frozen=True)
class VulkanDevice:
    name: str
    type: str

    @property
    def software(self) -> bool:
        """A CPU-type device (lavapipe, SwiftShader): right numerics, not GPU speed."""
        return self.type == "CPU"

    def describe(self) -> str:
        return f"{self.name} ({'software, on the CPU' if self.software else self.type})"


def sim_dir() -> str | None:
    """The private software device's directory ($ICNET_GPU_SIM, else the checkout's
    `.gpu-sim`) when it is installed, else None."""
    path = os.environ.get(SIM_DIR_ENV) or os.path.join(REPO, ".gpu-sim")
    return path if os.path.isfile(os.path.join(path, _ICD)) else None


def environment(base: dict | None = None) -> dict:
    """`base` (default: this process's environment) plus, when `make gpu-sim` has run, the
    variables that make the private software device the only Vulkan driver."""
    env = dict(os.environ if base is None else base)
    prefix = sim_dir()
    if prefix is None:
        return env
    libraries = [os.path.join(prefix, _LIB), os.path.join(prefix, "root", "lib",
                                                           "x86_64-linux-gnu")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libraries + [p for p in [env.get(
        "LD_LIBRARY_PATH")] if p])
    env["VK_ICD_FILENAMES"] = env["VK_DRIVER_FILES"] = os.path.join(prefix, _ICD)
    # llvmpipe compiles every shader on first use (tens of seconds per model); Mesa's disk
    # cache makes the next process fast.
    env.setdefault("MESA_SHADER_CACHE_DIR", os.path.join(prefix, "shader-cache"))
    return env


class _InstanceCreateInfo(ctypes.Structure):
    _fields_ = [("sType", ctypes.c_uint32), ("pNext", ctypes.c_void_p),
                ("flags", ctypes.c_uint32), ("pApplicationInfo", ctypes.c_void_p),
                ("enabledLayerCount", ctypes.c_uint32), ("ppEnabledLayerNames", ctypes.c_void_p),
                ("enabledExtensionCount", ctypes.c_uint32),
                ("ppEnabledExtensionNames", ctypes.c_void_p)]


def devices_in_this_process() -> list[VulkanDevice]:
    """The Vulkan physical devices this process's loader finds.

    Raises:
      NoVulkanDevice: no loader, no driver or no device.
    """
    try:
        vulkan = ctypes.CDLL("libvulkan.so.1")
    except OSError as e:
        raise NoVulkanDevice(f"no Vulkan loader (libvulkan.so.1: {e}); `make gpu-sim` "
                             "installs a software device") from e
    instance = ctypes.c_void_p()
    info = _InstanceCreateInfo(sType=1)  # VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO
    result = vulkan.vkCreateInstance(ctypes.byref(info), None, ctypes.byref(instance))
    if result != 0:
        raise NoVulkanDevice(f"no Vulkan driver (vkCreateInstance returned {result}); "
                             "`make gpu-sim` installs a software device")
    try:
        count = ctypes.c_uint32()
        vulkan.vkEnumeratePhysicalDevices(instance, ctypes.byref(count), None)
        handles = (ctypes.c_void_p * count.value)()
        vulkan.vkEnumeratePhysicalDevices(instance, ctypes.byref(count), handles)
        found = []
        for handle in handles:
            # VkPhysicalDeviceProperties: 5 uint32 (apiVersion, driverVersion, vendorID,
            # deviceID, deviceType), then deviceName[256]; the buffer is larger than it.
            buffer = ctypes.create_string_buffer(4096)
            vulkan.vkGetPhysicalDeviceProperties(ctypes.c_void_p(handle), buffer)
            kind = (ctypes.c_uint32 * 5).from_buffer(buffer)[4]
            name = buffer.raw[20:276].split(b"\0")[0].decode(errors="replace")
            found.append(VulkanDevice(name, _TYPES.get(kind, str(kind))))
    finally:
        vulkan.vkDestroyInstance(instance, None)
    if not found:
        raise NoVulkanDevice("the Vulkan driver lists no device")
    return found


def devices(timeout_s: float = 60) -> list[VulkanDevice]:
    """The Vulkan devices a process started with `environment()` finds.

    Raises:
      NoVulkanDevice: none (the reason names what is missing).
    """
    done = subprocess.run([sys.executable, "-m", "deploy.vulkan", "--json"],
                          capture_output=True, text=True, timeout=timeout_s,
                          env=environment() | {"PYTHONPATH": REPO}, cwd=REPO)
    if done.returncode != 0:
        lines = [line for line in done.stdout.splitlines() + done.stderr.splitlines() if line]
        raise NoVulkanDevice(lines[-1] if lines else f"exit code {done.returncode}")
    return [VulkanDevice(**d) for d in json.loads(done.stdout)]


def main(argv: list[str]) -> int:
    try:
        found = devices_in_this_process() if "--json" in argv else devices()
    except NoVulkanDevice as e:
        print(e)
        return 3
    if "--json" in argv:
        print(json.dumps([dataclasses.asdict(d) for d in found]))
    else:
        for device in found:
            print(device.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
