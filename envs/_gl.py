"""MuJoCo's offscreen GL backend: chosen before `mujoco` is first imported, and kept compatible with
TensorFlow in the same process.

MuJoCo reads MUJOCO_GL once, at import. EGL (Mesa llvmpipe here, a GPU driver elsewhere) is the fast
headless choice; OSMesa is the fallback where no EGL display can be initialised. A value the user already
set is always respected, and nothing is changed once mujoco has been imported. The second half of this file
lets the suite render in a process that also imports TensorFlow (the RLDS writer and reader), in either order.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.abc
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

# Runs in a child process: initialising Mesa's EGL here would load its LLVM into this process, after which
# importing TensorFlow crashes (see below).
_EGL_PROBE = """
import ctypes
egl = ctypes.CDLL("libEGL.so.1")
egl.eglGetProcAddress.restype = ctypes.c_void_p
egl.eglGetProcAddress.argtypes = [ctypes.c_char_p]
query = ctypes.CFUNCTYPE(ctypes.c_uint, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_int))(
    egl.eglGetProcAddress(b"eglQueryDevicesEXT"))
get_display = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p)(
    egl.eglGetProcAddress(b"eglGetPlatformDisplayEXT"))
devices, count = (ctypes.c_void_p * 8)(), ctypes.c_int()
assert query(8, devices, ctypes.byref(count)) and count.value > 0
display = get_display(0x313F, devices[0], None)  # EGL_PLATFORM_DEVICE_EXT
egl.eglInitialize.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
assert display and egl.eglInitialize(display, None, None)
"""


def _egl_available() -> bool:
    """True when a headless EGL device display initialises the way mujoco.egl opens one
    (EGL_EXT_platform_device: eglQueryDevicesEXT, then eglGetPlatformDisplayEXT on the first device)."""
    try:
        probe = subprocess.run([sys.executable, "-c", _EGL_PROBE], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def choose_gl_backend() -> str:
    """Set MUJOCO_GL to egl or osmesa unless the user chose already or mujoco is loaded; return the value."""
    if "MUJOCO_GL" not in os.environ and "mujoco" not in sys.modules:
        os.environ["MUJOCO_GL"] = "egl" if _egl_available() else "osmesa"
    return os.environ.get("MUJOCO_GL", "")


# ----- MuJoCo's Mesa EGL renderer and TensorFlow in one process ------------------------------------------
# Measured here (Mesa 22 llvmpipe, TF 2.21): both carry LLVM, and TF loads its libraries RTLD_GLOBAL.
#  * Importing TensorFlow after Mesa created a context segfaults in TF's preload check, unless TF is loaded
#    with RTLD_DEEPBIND (its own symbols first): once the suite renders, a later `import tensorflow` (e.g. the
#    RLDS writer's) goes through a one-shot import hook that adds the flag.
#  * Creating a context after TensorFlow was imported segfaults in Mesa, unless Mesa's LLVM and gallium
#    driver are loaded with RTLD_DEEPBIND first: done here before the first renderer.


class _DeepbindLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        flags = sys.getdlopenflags()
        sys.setdlopenflags(flags | os.RTLD_DEEPBIND)
        try:
            self.loader.exec_module(module)
        finally:
            sys.setdlopenflags(flags)

    def __getattr__(self, name):
        return getattr(self.loader, name)


class _DeepbindTensorflow(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)  # one import only; find the real spec without us
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _DeepbindLoader(spec.loader)
        return spec


def mesa_egl() -> bool:
    """EGL rendering through Mesa (no NVIDIA EGL vendor library on the machine)."""
    return os.environ.get("MUJOCO_GL") == "egl" and ctypes.util.find_library("EGL_nvidia") is None


_MESA_DRIVERS = [
    Path(d) / "swrast_dri.so"
    for d in (
        "/usr/lib/x86_64-linux-gnu/dri",
        "/usr/lib/aarch64-linux-gnu/dri",
        "/usr/lib64/dri",
        "/usr/lib/dri",
    )
]


def _preload_mesa_deepbind() -> bool:
    """Load Mesa's software driver and the LLVM it links with RTLD_DEEPBIND; False when not found."""
    driver = next((p for p in _MESA_DRIVERS if p.is_file()), None)
    if driver is None:
        return False
    needed = re.search(rb"libLLVM[-.0-9a-z]*\.so[.0-9]*", driver.read_bytes())  # its DT_NEEDED string
    try:
        if needed:
            ctypes.CDLL(needed.group().decode(), mode=os.RTLD_DEEPBIND | os.RTLD_LAZY)
        ctypes.CDLL(str(driver), mode=os.RTLD_DEEPBIND | os.RTLD_LAZY)
    except OSError:
        return False
    return True


_mesa_ready = []  # non-empty once Mesa may be initialised safely in this process


def before_first_renderer() -> str | None:
    """Call before creating a MuJoCo renderer: returns why it would crash (None: fine) and otherwise makes
    this and later TensorFlow imports safe."""
    if _mesa_ready or not mesa_egl() or not hasattr(os, "RTLD_DEEPBIND"):
        return None
    if "tensorflow" in sys.modules and not _preload_mesa_deepbind():
        return (
            "TensorFlow was imported before the first MuJoCo renderer in this process and Mesa's EGL driver "
            "could not be preloaded with RTLD_DEEPBIND, so creating the GL context would crash; create a "
            "CPU-suite env (or call envs.prepare_rendering()) before importing tensorflow"
        )
    _mesa_ready.append(True)
    if "tensorflow" not in sys.modules:
        sys.meta_path.insert(0, _DeepbindTensorflow())
    return None
