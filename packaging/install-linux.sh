#!/bin/sh
# Put SD Studio in this user's applications menu: a desktop entry (freedesktop Desktop Entry Specification)
# pointing at the bundle's executable, and the icon in the hicolor theme (Icon Theme Specification), all under
# $XDG_DATA_HOME (~/.local/share). No root needed; uninstall-linux.sh removes exactly these files.
#
# Usage: install-linux.sh [BUNDLE_DIR]
#   BUNDLE_DIR is the folder holding the `sdstudio` executable: by default the folder this script is in (inside a
#   bundle) or dist/sdstudio (from a source checkout). Moved the bundle? Run this again.
set -eu

die() { echo "install-linux.sh: $*" >&2; exit 1; }

here=$(cd "$(dirname "$0")" && pwd)
if [ $# -ge 1 ]; then
    bundle=$(cd "$1" 2>/dev/null && pwd) || die "no such folder: $1"
elif [ -f "$here/sdstudio" ]; then
    bundle=$here
else
    bundle=$(cd "$here/../dist/sdstudio" 2>/dev/null && pwd) || die "no bundle found; build it first (python packaging/build.py) or pass its folder"
fi
exe="$bundle/sdstudio"
[ -f "$exe" ] && [ -x "$exe" ] || die "$exe is not an executable: pass the folder that holds the sdstudio executable"
case "$exe" in *"
"*) die "the bundle's path contains a line break, which a desktop entry cannot hold; move it" ;; esac

# Icons and the entry template: inside the bundle, else next to this script in a source checkout.
resources="$bundle/_internal/resources"
[ -d "$resources/icons" ] || resources="$here/../sdstudio/resources"
template="$resources/sdstudio.desktop.in"
[ -f "$template" ] || template="$here/sdstudio.desktop.in"
[ -f "$template" ] || die "sdstudio.desktop.in not found"

data=${XDG_DATA_HOME:-$HOME/.local/share}

for size in 16 24 32 48 64 128 256 512; do
    mkdir -p "$data/icons/hicolor/${size}x${size}/apps"
    cp "$resources/icons/sdstudio-$size.png" "$data/icons/hicolor/${size}x${size}/apps/sdstudio.png"
done
mkdir -p "$data/icons/hicolor/scalable/apps"
cp "$resources/icons/sdstudio.svg" "$data/icons/hicolor/scalable/apps/sdstudio.svg"

# Exec is quoted: inside the quotes ", `, $ and \ take a backslash, then the string-value escaping doubles every
# backslash, and a literal % is %%. TryExec is a plain string value: only backslashes are doubled.
exec_value=$(printf '%s' "$exe" | sed -e 's/\\/\\\\\\\\/g' -e 's/["`$]/\\\\&/g' -e 's/%/%%/g')
tryexec_value=$(printf '%s' "$exe" | sed -e 's/\\/\\\\/g')

mkdir -p "$data/applications"
entry="$data/applications/sdstudio.desktop"
tmp="$entry.tmp.$$"
while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in
        Exec=@EXEC@) printf 'Exec="%s"\n' "$exec_value" ;;
        TryExec=@TRYEXEC@) printf 'TryExec=%s\n' "$tryexec_value" ;;
        *) printf '%s\n' "$line" ;;
    esac
done < "$template" > "$tmp"
chmod 644 "$tmp"
mv "$tmp" "$entry"

# Menus and icon lookups refresh by themselves on most desktops; these make it immediate where available.
if command -v update-desktop-database >/dev/null 2>&1; then
    update-desktop-database -q "$data/applications" 2>/dev/null || true
fi
if command -v gtk-update-icon-cache >/dev/null 2>&1 && [ -f "$data/icons/hicolor/index.theme" ]; then
    gtk-update-icon-cache -q -t "$data/icons/hicolor" 2>/dev/null || true
fi

echo "SD Studio is in your applications menu: $entry"
echo "It starts $exe"
