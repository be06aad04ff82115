"""The main window's menus: which actions exist, their shortcuts and where they sit (the slots are the window's)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtGui import QAction, QActionGroup, QKeySequence

from sdstudio import paths
from sdstudio.ui.help import build_help_menu, redo_keys
from sdstudio.ui.settings import (
    DEVICES,
    TILED_VAE_LABELS,
    device_unavailable,
    load_allow_pickle,
    load_device,
    load_tiled_vae,
    save_tiled_vae,
)

PICKLE_WARNING = ("Warning: pickled checkpoints (.ckpt/.pt) can run code when opened. With this on they load in "
                  "weights-only mode, which refuses code, but only use files you trust; prefer .safetensors.")

if TYPE_CHECKING:
    from sdstudio.ui.main_window import MainWindow


def menu_action(menu, text: str, slot, shortcut=None) -> QAction:
    action = menu.addAction(text)
    if shortcut is not None:
        action.setShortcuts(shortcut if isinstance(shortcut, list) else [QKeySequence(shortcut)])
    action.triggered.connect(slot)
    return action


def build_menus(window: MainWindow) -> None:
    """The window's menu bar: File, Edit, View, Generate, Help. Actions the window enables later are kept on it."""
    bar, cp = window.menuBar(), window.canvas_panel
    file = bar.addMenu("&File")
    menu_action(file, "&Open Image…", window.open_image_dialog, QKeySequence.StandardKey.Open)
    window.act_save = menu_action(file, "&Save Image As…", lambda: window.save_image_dialog(True),
                                  QKeySequence.StandardKey.SaveAs)
    window.act_save.setToolTip("Save the shown image with its parameters, so it can be re-run")
    window.act_save_plain = menu_action(file, "Save Image &Without Metadata…",
                                        lambda: window.save_image_dialog(False))
    window.act_save_plain.setToolTip("Save the pixels only: no prompt, no parameters, no model name")
    file.setToolTipsVisible(True)
    file.addSeparator()
    menu_action(file, "Add &Model…", window.add_model_dialog)
    menu_action(file, "Open Models &Folder", lambda: window.open_folder(paths.models_dir()))
    menu_action(file, "Open &Outputs Folder", lambda: window.open_folder(paths.outputs_dir()))
    file.addSeparator()
    menu_action(file, "&Quit", window.close, QKeySequence.StandardKey.Quit)
    edit = bar.addMenu("&Edit")
    undo = window.mask.undo_stack.createUndoAction(window, "&Undo")
    undo.setShortcut(QKeySequence.StandardKey.Undo)
    redo = window.mask.undo_stack.createRedoAction(window, "&Redo")
    redo.setShortcuts(redo_keys())
    edit.addActions([undo, redo])
    edit.addSeparator()
    edit.addActions([cp.act_brush, cp.act_eraser, cp.act_pan, cp.act_frame, cp.act_smaller, cp.act_bigger])
    edit.addSeparator()
    edit.addActions([cp.act_clear, cp.act_invert, cp.act_fill])
    view = bar.addMenu("&View")
    view.addActions([cp.act_result, cp.act_input, cp.act_control])
    view.addSeparator()
    view.addActions([cp.act_fit, cp.act_actual, cp.act_zoom_in, cp.act_zoom_out])
    view.addSeparator()
    _build_theme_menu(window, view.addMenu("&Theme"))
    window.view_menu = view
    gen = bar.addMenu("&Generate")
    window.act_generate = menu_action(gen, "&Generate", window.generate,
                                      [QKeySequence("Ctrl+Return"), QKeySequence("Ctrl+Enter")])
    window.act_cancel = menu_action(gen, "&Cancel", window.cancel, QKeySequence("Esc"))
    menu_action(gen, "C&lear Queue", window.worker.clear_queue)
    gen.addSeparator()
    gen.addActions([cp.act_use_as_input, cp.act_clear_input])
    menu_action(gen, "&Reuse Last Seed", window.reuse_last_seed)
    gen.addSeparator()
    _build_device_menu(window, gen.addMenu("&Device"))
    menu_action(gen, "&Backends…", lambda: window.backends.open_dialog())
    _build_tiled_vae_menu(window, gen.addMenu("&Tiled VAE"))
    gen.addSeparator()
    window.act_allow_pickle = menu_action(gen, "Allow &Pickled Checkpoints", window.set_allow_pickle)
    window.act_allow_pickle.setCheckable(True)
    window.act_allow_pickle.setChecked(load_allow_pickle(window.settings))
    window.act_allow_pickle.setToolTip(PICKLE_WARNING)
    gen.setToolTipsVisible(True)
    window.act_cancel.setEnabled(False)
    build_help_menu(window)

def _build_device_menu(window: MainWindow, menu) -> None:
    group = QActionGroup(window)
    current = load_device(window.settings)
    window.device_actions: dict[str, QAction] = {}
    for name, label in DEVICES:
        action = menu.addAction(label)
        action.setCheckable(True)
        action.setChecked(name == current)
        why = device_unavailable(name)
        action.setEnabled(not why)
        action.setToolTip(why or f"Run the engine on {name}; the model reloads there")
        action.triggered.connect(lambda _checked, name=name: window.set_device(name))
        group.addAction(action)
        window.device_actions[name] = action
    menu.setToolTipsVisible(True)

def _build_tiled_vae_menu(window: MainWindow, menu) -> None:
    """Automatic / on / off, saved in the settings and given to every job queued after (main_window.generate)."""
    group = QActionGroup(window)
    current = load_tiled_vae(window.settings)
    window.tiled_vae_actions: dict[str, QAction] = {}
    for name, label in TILED_VAE_LABELS:
        action = menu.addAction(label)
        action.setCheckable(True)
        action.setChecked(name == current)
        action.setToolTip("Decode and encode the VAE in tiles with whole-image statistics: the same pixels "
                          "with far less memory, for large images or small GPUs")
        action.triggered.connect(lambda _checked, name=name: save_tiled_vae(window.settings, name))
        group.addAction(action)
        window.tiled_vae_actions[name] = action
    menu.setToolTipsVisible(True)


def _build_theme_menu(window: MainWindow, menu) -> None:
    group = QActionGroup(window)
    current = str(window.settings.value("appearance/theme", "system"))
    for name, label in (("system", "Follow &System"), ("dark", "&Dark"), ("light", "&Light")):
        action = menu.addAction(label)
        action.setCheckable(True)
        action.setChecked(name == current)
        action.triggered.connect(lambda _checked, name=name: window.set_theme(name))
        group.addAction(action)
