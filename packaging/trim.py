"""What the SD Studio bundle contains and what it leaves out; sdstudio.spec applies these rules.

PyInstaller collects everything an import can reach, and its torch and Qt hooks add more (torch's C++
headers, test binaries and test libraries; Qt's translations). The app uses torch's CPU kernels, its own CLIP
tokenizer and text model (no transformers), and QtCore/QtGui/QtWidgets; the rules below remove the rest. The
self-test and the slow bundle test run the frozen app after a build: that is what shows each rule is safe.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase
from pathlib import Path

APP_NAME = "sdstudio"
BUILTIN_MODEL = "sdstudio-emoji"
EXCLUDED_MODULES = (
    # Tests and tools that live in the build environment, never in the app (diffusers is a test reference).
    "diffusers", "k_diffusion", "torchsde", "torchdiffeq", "pytest", "_pytest", "pytest_qt", "pytestqt",
    "hypothesis", "IPython", "jedi", "parso", "matplotlib", "pandas", "PyInstaller", "setuptools", "pip",
    "sdstudio.training", "tests", "training", "libcst",
    # transformers and its stack: test-only references since sdstudio.engine.clip_text / clip_tokenizer.
    "transformers", "tokenizers", "huggingface_hub", "regex",
    # Optional integrations transformers and huggingface_hub use when installed; CLIP on CPU needs none.
    "accelerate", "scipy", "sklearn", "boto3", "botocore", "s3transfer", "awscli", "moto", "trio", "hf_xet",
    "datasets", "peft", "bitsandbytes", "deepspeed", "tensorflow", "flax", "jax", "timm", "torchvision",
    "torchaudio", "tensorboard", "torch.utils.tensorboard", "onnx", "onnxruntime", "wandb", "pydantic",
    "pydantic_core", "cryptography", "fsspec", "emoji",
    # Command-line front ends of huggingface_hub and transformers (downloads, uploads): not part of the app.
    "rich", "pygments", "markdown_it", "click", "typer", "huggingface_hub.cli",
    "huggingface_hub.commands", "transformers.commands", "transformers.cli",
    # torch.compile's graph partitioner; eager CPU inference never imports it.
    "networkx", "functorch",
    # Python's other GUI toolkit.
    "tkinter", "_tkinter", "turtle", "turtledemo", "idlelib",
    # Qt modules the app never imports (most are in PySide6 Addons).
    "PySide6.QtWebEngineCore", "PySide6.QtWebEngineWidgets", "PySide6.QtWebEngineQuick",
    "PySide6.QtWebChannel", "PySide6.QtWebSockets", "PySide6.QtQml", "PySide6.QtQuick",
    "PySide6.QtQuickWidgets", "PySide6.QtQuick3D",
    "PySide6.QtQuickControls2", "PySide6.Qt3DCore", "PySide6.Qt3DRender", "PySide6.Qt3DInput",
    "PySide6.Qt3DLogic", "PySide6.Qt3DAnimation", "PySide6.Qt3DExtras", "PySide6.QtMultimedia",
    "PySide6.QtMultimediaWidgets", "PySide6.QtSpatialAudio", "PySide6.QtPdf", "PySide6.QtPdfWidgets",
    "PySide6.QtCharts", "PySide6.QtDataVisualization", "PySide6.QtGraphs", "PySide6.QtGraphsWidgets",
    "PySide6.QtBluetooth", "PySide6.QtNfc", "PySide6.QtPositioning", "PySide6.QtLocation",
    "PySide6.QtSensors", "PySide6.QtSerialPort", "PySide6.QtSerialBus", "PySide6.QtSql", "PySide6.QtTest",
    "PySide6.QtDesigner",
    "PySide6.QtUiTools", "PySide6.QtHelp", "PySide6.QtOpenGL", "PySide6.QtOpenGLWidgets", "PySide6.QtScxml",
    "PySide6.QtStateMachine", "PySide6.QtRemoteObjects", "PySide6.QtTextToSpeech", "PySide6.QtHttpServer",
    "PySide6.QtNetworkAuth", "PySide6.QtXml", "PySide6.QtConcurrent", "PySide6.QtAxContainer",
    "PySide6.QtNetwork",
)
# Collected files (destination paths inside the bundle, "/"-separated) that the app never opens.
DROPPED_FILES = (
    # torch: C++ headers, CMake files, C++ test binaries and test-only libraries, static and import libs.
    "torch/include/*", "torch/share/*", "torch/test/*", "torch/bin/*",
    "torch/lib/libjitbackend_test*", "torch/lib/libbackend_with_compiler*", "torch/lib/libtorchbind_test*",
    "torch/lib/libaoti_custom_ops*", "torch/lib/*.a", "torch/lib/*.lib",
    # A CUDA runtime PyInstaller finds on the build machine through a ctypes reference: CPU torch never
    # loads it (CUDA builds of torch carry their own under nvidia/).
    "libcudart.so*",
    "*.h", "*.hpp", "*.cuh", "*.pyi", "*.cmake",
    # Qt: the UI is English only, so no translations; plugins for formats and backends the app never uses.
    "PySide6/Qt/translations/*", "PySide6/translations/*",
    "PySide6/Qt/plugins/imageformats/libqpdf*", "PySide6/Qt/plugins/imageformats/qpdf*",
    "PySide6/Qt/plugins/platforminputcontexts/libqtvirtualkeyboardplugin*",
    "PySide6/Qt/plugins/sqldrivers/*", "PySide6/Qt/plugins/multimedia/*", "PySide6/Qt/plugins/qmltooling/*",
    "PySide6/Qt/plugins/tls/*", "PySide6/Qt/plugins/networkinformation/*",
    # Platforms for embedded devices and remote framebuffers, and their input plugins: a desktop app needs
    # xcb, wayland and offscreen (the self-test) only.
    "PySide6/Qt/plugins/platforms/libqeglfs*", "PySide6/Qt/plugins/platforms/libqlinuxfb*",
    "PySide6/Qt/plugins/platforms/libqvnc*", "PySide6/Qt/plugins/platforms/libqvkkhrdisplay*",
    "PySide6/Qt/plugins/platforms/libqminimalegl*", "PySide6/Qt/plugins/egldeviceintegrations/*",
    "PySide6/Qt/plugins/generic/*",
    "PySide6/Qt/lib/libQt6Pdf*", "PySide6/Qt/lib/libQt6Qml*", "PySide6/Qt/lib/libQt6Quick*",
    "PySide6/Qt/lib/libQt6VirtualKeyboard*", "PySide6/Qt/lib/libQt6WebEngine*",
    "PySide6/Qt/lib/libQt6Multimedia*", "PySide6/Qt/lib/libQt6EglFS*", "PySide6/Qt/lib/libQt6Network*",
)
# Exceptions to DROPPED_FILES: `import torch` checks that its shared-memory helper exists.
KEPT_FILES = ("torch/bin/torch_shm_manager*",)
# Libraries stripped of their symbol tables after the build (Linux): ~120 MiB less, and safe because these are
# linked by their own projects' builds. Wheels repaired by auditwheel (numpy.libs, pillow.libs) are patched
# with patchelf, and strip corrupts those, so nothing else is stripped.
STRIPPED_FILES = (
    "torch/lib/libtorch*.so", "torch/lib/libc10.so", "torch/lib/libshm.so",
    "safetensors/*.so", "libpython3*.so*",
)
# Package metadata of excluded distributions (hooks copy it for every installed optional dependency); left in,
# it makes other packages believe an excluded one is importable.
EXCLUDED_DISTRIBUTIONS = frozenset(m.lower() for m in EXCLUDED_MODULES if "." not in m)


def bundle_path(dest: str) -> str:
    return dest.replace("\\", "/")


def distribution(path: str) -> str | None:
    """The normalised project name of a "<name>-<version>.dist-info/..." path, else None."""
    folder = path.split("/")[0]
    if not folder.endswith(".dist-info"):
        return None
    return folder.removesuffix(".dist-info").rsplit("-", 1)[0].lower().replace("-", "_").replace(".", "_")


def is_dropped(dest: str, source: str = "", typecode: str = "") -> bool:
    path = bundle_path(dest)
    if typecode == "SYMLINK" and is_dropped(source):
        return True  # a link to a dropped library would dangle
    if distribution(path) in EXCLUDED_DISTRIBUTIONS:
        return True
    if any(fnmatchcase(path, pattern) for pattern in KEPT_FILES):
        return False
    return any(fnmatchcase(path, pattern) for pattern in DROPPED_FILES)


def is_stripped(dest: str) -> bool:
    path = bundle_path(dest)
    return any(fnmatchcase(path, pattern) for pattern in STRIPPED_FILES)


def trim(toc: Iterable[tuple]) -> list[tuple]:
    """A PyInstaller TOC (dest, source, typecode) without the entries the rules above drop."""
    return [entry for entry in toc if not is_dropped(*entry)]


def resource_datas(root: Path, models: Path) -> list[tuple[str, str]]:
    """(source, bundle folder) pairs: the tokenizer, the built-in model, its preview decoder and ControlNet, the
    icons.

    They come from the package data in sdstudio/resources/ (the models from `models`) and go to the bundle's
    resources/ folder, where sdstudio.paths.resources_dir() looks when frozen.

    Raises FileNotFoundError when the built-in model is missing: a bundle without it fails its self-test.
    """
    model = models / f"{BUILTIN_MODEL}.safetensors"
    if not model.is_file():
        raise FileNotFoundError(f"{model} is missing: train the built-in model, or pass --models DIR")
    resources = root / "sdstudio" / "resources"
    tokenizer = sorted(p for p in (resources / "tokenizer").iterdir() if p.is_file())
    datas = [(str(p), "resources/tokenizer") for p in tokenizer]
    datas += [(str(p), "resources/models") for p in sorted(models.glob(f"{BUILTIN_MODEL}*.safetensors"))]
    # Its companion ControlNet (issue 16), where sdstudio.paths.builtin_controlnet_dir() looks.
    datas += [(str(p), "resources/models/ControlNet")
              for p in sorted((models / "ControlNet").glob(f"{BUILTIN_MODEL}*.safetensors"))]
    datas += [(str(p), "resources/icons") for p in sorted((resources / "icons").glob("sdstudio*.*"))]
    datas.append((str(root / "packaging" / f"{APP_NAME}.desktop.in"), "resources"))
    return datas
