#!/usr/bin/env bash
# The system libraries napari's Qt/OpenGL canvas needs on a Linux machine without a display:
# Xvfb (a virtual display), Mesa (software OpenGL) and every shared library that Qt's platform
# plugins load (found with ldd on the plugins of the Qt binding installed in the venv).
#
#   bash .ci/system-deps.sh [VENV]        # VENV defaults to .venv
#
# Installs what is missing with apt-get when it can (root, or sudo without a password).
# When it cannot, it prints ONE message naming the missing packages and the command that
# installs them, and exits with status 3, so that the test command stops at once instead of
# failing hundreds of GL tests. Exits 0 when everything is present (or not on Linux).
set -euo pipefail

venv="${1:-.venv}"
[[ "$(uname -s)" == Linux ]] || exit 0

# soname -> Debian package, for the libraries Qt 5/6's xcb/offscreen plugins and Mesa load
declare -A deb_of=(
    [libxcb-icccm.so.4]=libxcb-icccm4 [libxcb-keysyms.so.1]=libxcb-keysyms1
    [libxcb-image.so.0]=libxcb-image0 [libxcb-render-util.so.0]=libxcb-render-util0
    [libxcb-randr.so.0]=libxcb-randr0 [libxcb-shape.so.0]=libxcb-shape0
    [libxcb-xkb.so.1]=libxcb-xkb1 [libxcb-xinerama.so.0]=libxcb-xinerama0
    [libxcb-cursor.so.0]=libxcb-cursor0 [libxcb-xfixes.so.0]=libxcb-xfixes0
    [libxcb-sync.so.1]=libxcb-sync1 [libxcb-shm.so.0]=libxcb-shm0
    [libxcb-render.so.0]=libxcb-render0 [libxcb-util.so.1]=libxcb-util1
    [libxcb-glx.so.0]=libxcb-glx0 [libxcb-xinput.so.0]=libxcb-xinput0 [libxcb.so.1]=libxcb1
    [libX11-xcb.so.1]=libx11-xcb1 [libX11.so.6]=libx11-6 [libXext.so.6]=libxext6
    [libXrender.so.1]=libxrender1 [libSM.so.6]=libsm6 [libICE.so.6]=libice6
    [libxkbcommon.so.0]=libxkbcommon0 [libxkbcommon-x11.so.0]=libxkbcommon-x11-0
    [libfontconfig.so.1]=libfontconfig1 [libfreetype.so.6]=libfreetype6
    [libdbus-1.so.3]=libdbus-1-3 [libglib-2.0.so.0]=libglib2.0-0 [libgthread-2.0.so.0]=libglib2.0-0
    [libGL.so.1]=libgl1 [libEGL.so.1]=libegl1 [libGLX.so.0]=libglx0 [libOpenGL.so.0]=libopengl0
    [libGLX_mesa.so.0]=libglx-mesa0 [libEGL_mesa.so.0]=libegl-mesa0
)

# shared objects to check: Qt's xcb and offscreen platform plugins and its xcb GL integrations
# (of the binding installed in the venv; Wayland plugins are not used here),
# and libraries Qt opens at run time (dlopen, invisible to ldd)
site="$(ls -d "$venv"/lib/python3*/site-packages 2>/dev/null | head -1 || true)"
plugins=()
if [[ -n "$site" ]]; then
    while IFS= read -r file; do plugins+=("$file"); done < <(
        find "$site" -path '*plugins/platforms/libqxcb.so' -o \
            -path '*plugins/platforms/libqoffscreen.so' -o \
            -path '*plugins/xcbglintegrations/*.so' 2>/dev/null | sort
    )
fi
runtime_libs=(libxcb-cursor.so.0 libGL.so.1 libEGL.so.1 libGLX_mesa.so.0 libfontconfig.so.1
    libxkbcommon-x11.so.0 libdbus-1.so.3)

missing_packages() {
    local known found=() lib
    known="$(ldconfig -p 2>/dev/null || true)"
    command -v Xvfb >/dev/null 2>&1 || found+=(xvfb)
    compgen -G "/usr/lib/*/dri/swrast_dri.so" >/dev/null ||
        compgen -G "/usr/lib/*/dri/llvmpipe_dri.so" >/dev/null || found+=(libgl1-mesa-dri)
    for lib in "${runtime_libs[@]}"; do
        grep -qF "$lib " <<<"$known" || found+=("${deb_of[$lib]:-?$lib}")
    done
    if ((${#plugins[@]})); then
        while IFS= read -r lib; do
            [[ -n "$lib" ]] && found+=("${deb_of[$lib]:-?$lib}")
        done < <(ldd "${plugins[@]}" 2>/dev/null | awk '/not found/ {print $1}' | sort -u)
    fi
    ((${#found[@]})) && printf '%s\n' "${found[@]}" | sort -u
    return 0
}

mapfile -t needed < <(missing_packages)
if ((${#needed[@]} == 0)); then
    exit 0
fi
unknown=()
debs=()
for item in "${needed[@]}"; do
    if [[ "$item" == \?* ]]; then unknown+=("${item#\?}"); else debs+=("$item"); fi
done

runner=()
if [[ "$(id -u)" != 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then runner=(sudo -n); else runner=(none); fi
fi
if ((${#debs[@]})) && command -v apt-get >/dev/null 2>&1 && [[ "${runner[*]:-}" != none ]]; then
    echo "installing system packages for napari's canvas: ${debs[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${runner[@]}" apt-get update -qq >/dev/null
    "${runner[@]}" apt-get install -y -qq --no-install-recommends "${debs[@]}" >/dev/null
    mapfile -t needed < <(missing_packages)
    ((${#needed[@]} == 0)) && exit 0
    debs=()
    unknown=()
    for item in "${needed[@]}"; do
        if [[ "$item" == \?* ]]; then unknown+=("${item#\?}"); else debs+=("$item"); fi
    done
fi

{
    echo "error: napari's Qt/OpenGL canvas cannot run here: system packages are missing."
    ((${#debs[@]})) && echo "  missing Debian packages: ${debs[*]}" &&
        echo "  install them with:  sudo apt-get install -y ${debs[*]}"
    ((${#unknown[@]})) && echo "  libraries not found (no known package): ${unknown[*]}"
    echo "  then run the test command again."
} >&2
exit 3
