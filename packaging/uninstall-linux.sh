#!/bin/sh
# Remove what install-linux.sh added: the desktop entry and the icons under $XDG_DATA_HOME (~/.local/share).
# The bundle folder and your images, models and settings (~/.local/share/SDStudio, or $SDSTUDIO_HOME) are kept.
set -eu

data=${XDG_DATA_HOME:-$HOME/.local/share}

rm -f "$data/applications/sdstudio.desktop"
for size in 16 24 32 48 64 128 256 512; do
    rm -f "$data/icons/hicolor/${size}x${size}/apps/sdstudio.png"
done
rm -f "$data/icons/hicolor/scalable/apps/sdstudio.svg"

if command -v update-desktop-database >/dev/null 2>&1 && [ -d "$data/applications" ]; then
    update-desktop-database -q "$data/applications" 2>/dev/null || true
fi
if command -v gtk-update-icon-cache >/dev/null 2>&1 && [ -f "$data/icons/hicolor/index.theme" ]; then
    gtk-update-icon-cache -q -t "$data/icons/hicolor" 2>/dev/null || true
fi

echo "SD Studio is no longer in your applications menu."
echo "Kept: the bundle folder, and your data in ${SDSTUDIO_HOME:-$data/SDStudio}."
