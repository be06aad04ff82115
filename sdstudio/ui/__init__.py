"""The PySide6 desktop application."""

from sdstudio.ui.pyside_refcount import install as _install_pyside_refcount_fix

_install_pyside_refcount_fix()
