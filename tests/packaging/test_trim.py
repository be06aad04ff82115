import pytest

from tests.packaging.util import ROOT, load

trim = load("trim")

# Packages the app imports at run time (from a self-test run); none of them may be excluded.
APP_MODULES = (
    "sdstudio.engine.api", "sdstudio.ui.app", "sdstudio.history.store", "sdstudio.selftest", "torch",
    "torch.nn", "torch.testing", "torch.distributed", "torch._dynamo", "torch.fx", "sympy", "mpmath",
    "safetensors",
    "PySide6.QtCore", "PySide6.QtGui", "PySide6.QtWidgets", "shiboken6", "PIL", "numpy", "sqlite3",
)


def excluded(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in trim.EXCLUDED_MODULES)


@pytest.mark.parametrize("module", APP_MODULES)
def test_modules_the_app_imports_are_kept(module):
    assert not excluded(module)


@pytest.mark.parametrize("module", ["diffusers", "tkinter", "sdstudio.training", "PySide6.QtWebEngineCore",
                                    "PySide6.QtQml", "PySide6.QtMultimedia", "PySide6.QtPdf", "accelerate",
                                    "transformers", "tokenizers", "huggingface_hub"])
def test_test_references_other_toolkits_and_training_are_left_out(module):
    assert excluded(module)


@pytest.mark.parametrize("dest", [
    "torch/include/ATen/Tensor.h", "torch/share/cmake/Torch/TorchConfig.cmake", "torch/bin/test_api",
    "torch/test/test_jit", "torch/lib/libtorchbind_test.so", "torch/lib/libjitbackend_test.so",
    "torch\\lib\\c10.lib", "PySide6/Qt/translations/qtbase_de.qm",
    "PySide6/Qt/plugins/imageformats/libqpdf.so",
    "PySide6/Qt/lib/libQt6Quick.so.6", "libcudart.so", "accelerate-1.15.0.dist-info/METADATA",
    "pydantic_core-2.46.4.dist-info/RECORD", "tokenizers-0.23.3.dist-info/RECORD",
])
def test_unused_files_are_dropped(dest):
    assert trim.is_dropped(dest)


@pytest.mark.parametrize("dest", [
    "torch/lib/libtorch_cpu.so", "torch/lib/libc10.so", "torch/lib/libgomp.so.1", "torch/lib/libshm.so",
    "torch\\lib\\torch_cpu.dll", "numpy.libs/libscipy_openblas64_-ff651d7f.so",
    "torch/testing/_comparison.py",
    "PySide6/Qt/plugins/platforms/libqxcb.so", "PySide6/Qt/plugins/platforms/libqoffscreen.so",
    "PySide6/Qt/plugins/imageformats/libqjpeg.so", "PySide6/Qt/lib/libQt6Widgets.so.6",
    "resources/models/sdstudio-emoji.safetensors", "resources/tokenizer/merges.txt",
    "torch/bin/torch_shm_manager", "torch-2.13.0+cpu.dist-info/METADATA",
    "safetensors-0.6.2.dist-info/RECORD",
])
def test_what_the_app_needs_is_kept(dest):
    assert not trim.is_dropped(dest)


def test_trim_filters_a_pyinstaller_toc_and_links_to_dropped_files():
    toc = [("torch/include/a.h", "/src/a.h", "DATA"), ("torch/lib/libc10.so", "/src/libc10.so", "BINARY"),
           ("libQt6Pdf.so.6", "PySide6/Qt/lib/libQt6Pdf.so.6", "SYMLINK"),
           ("libQt6Core.so.6", "PySide6/Qt/lib/libQt6Core.so.6", "SYMLINK")]
    assert trim.trim(toc) == [toc[1], toc[3]]


def test_a_bundle_without_the_builtin_model_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="--models"):
        trim.resource_datas(ROOT, tmp_path)


def test_resources_are_the_tokenizer_the_model_and_its_decoder_and_the_icons(tmp_path):
    (tmp_path / "ControlNet").mkdir()
    for name in ("sdstudio-emoji.safetensors", "sdstudio-emoji.taesd_decoder.safetensors", "notes.txt",
                 "ControlNet/sdstudio-emoji_canny.safetensors", "ControlNet/notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    by_folder: dict[str, set[str]] = {}
    for source, folder in trim.resource_datas(ROOT, tmp_path):
        by_folder.setdefault(folder, set()).add(source.rsplit("/", 1)[-1])
    models = {"sdstudio-emoji.safetensors", "sdstudio-emoji.taesd_decoder.safetensors"}
    assert by_folder["resources/models"] == models
    assert by_folder["resources/models/ControlNet"] == {"sdstudio-emoji_canny.safetensors"}
    assert {"vocab.json", "merges.txt"} <= by_folder["resources/tokenizer"]
    assert {"sdstudio.svg", "sdstudio-16.png", "sdstudio-512.png"} <= by_folder["resources/icons"]
    assert by_folder["resources"] == {"sdstudio.desktop.in"}


@pytest.mark.parametrize("dest, stripped", [
    ("torch/lib/libtorch_cpu.so", True), ("torch/lib/libtorch_python.so", True),
    ("torch/lib/libc10.so", True), ("safetensors/_safetensors_rust.abi3.so", True),
    ("libpython3.11.so.1.0", True),
    # auditwheel-patched libraries: strip corrupts them
    ("numpy.libs/libscipy_openblas64_-32a4b2a6.so", False), ("pillow.libs/libjpeg-6dc8d115.so.62.4.0", False),
    ("torch/lib/libgomp.so.1", False), ("PySide6/Qt/lib/libQt6Core.so.6", False),
])
def test_only_libraries_built_by_their_own_projects_are_stripped(dest, stripped):
    assert trim.is_stripped(dest) is stripped
