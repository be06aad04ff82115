"""How one gallery cell looks: the thumbnail centred in a square cell, a frame when selected, a star
for favourites, a "walk" badge on the tile that stands for a latent walk's frames. Painting reads only what the model already holds; it never loads anything."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QRect, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QStyle, QStyledItemDelegate, QStyleOptionViewItem

from sdstudio.ui.gallery_model import ENTRY_ROLE


class ThumbnailDelegate(QStyledItemDelegate):
    def __init__(self, cell: int, parent=None) -> None:
        super().__init__(parent)
        self.cell = cell

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> QSize:  # noqa: N802
        return QSize(self.cell, self.cell)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem,
              index: QModelIndex | QPersistentModelIndex) -> None:
        frame = option.rect.adjusted(2, 2, -2, -2)
        painter.save()
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        if selected:
            painter.fillRect(frame, option.palette.highlight())
        elif option.state & QStyle.StateFlag.State_MouseOver:
            painter.fillRect(frame, option.palette.midlight())
        pixmap = index.data(Qt.ItemDataRole.DecorationRole)
        if isinstance(pixmap, QPixmap):
            target = QRect(0, 0, pixmap.width(), pixmap.height())
            target.moveCenter(frame.center())
            painter.drawPixmap(target, pixmap)
        entry = index.data(ENTRY_ROLE)
        if entry is not None and entry.favourite:
            painter.setPen(QPen(QColor(255, 200, 40)))
            font = painter.font()
            font.setPointSizeF(font.pointSizeF() * 1.3)
            painter.setFont(font)
            painter.drawText(frame.adjusted(0, 0, -4, 0), Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignRight, "★")
        selection = getattr(index.model(), "selection", None)  # the gallery's Filter
        if entry is not None and entry.walk_id and selection is not None and selection.walk is None:
            self._walk_badge(painter, frame)
        painter.restore()

    @staticmethod
    def _walk_badge(painter: QPainter, frame: QRect) -> None:
        """A dark strip along the tile's foot reading "▶ walk": one tile stands for all the walk's frames."""
        strip = QRect(frame.left(), frame.bottom() - 15, frame.width(), 16)
        painter.fillRect(strip, QColor(0, 0, 0, 170))
        painter.setPen(QPen(QColor(255, 255, 255)))
        font = painter.font()
        font.setPointSizeF(max(6.0, font.pointSizeF() * 0.85))
        painter.setFont(font)
        painter.drawText(strip.adjusted(4, 0, -4, 0), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft,
                         "▶ walk")
