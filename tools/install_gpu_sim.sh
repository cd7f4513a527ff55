#!/bin/sh
# A private software Vulkan device (Mesa 25 lavapipe from Debian bookworm-backports) for
# LiteRT's GPU accelerator (WebGPU/Dawn over Vulkan) on a machine without a GPU: it runs the
# GPU delegate's numerics, at CPU speed. Debian bookworm, amd64, as root (apt-get needs it for
# its private lists and cache). Used by `make gpu-sim`:
#
#   sh tools/install_gpu_sim.sh PREFIX     # then deploy.vulkan finds PREFIX (.gpu-sim)
#   . PREFIX/env.sh                         # for a shell: vulkaninfo, or your own programs
#
# Nothing is installed system-wide and the system's default driver is untouched: a private apt
# configuration under PREFIX/apt (bookworm, -updates, -security, -backports) resolves what this
# machine lacks against its dpkg status (read only), `apt-get download` fetches it and
# `dpkg-deb -x` unpacks it into PREFIX/root. Bookworm's own Mesa 22.3 lavapipe is refused by
# Dawn (no dynamic indexing of uniform arrays), hence backports. Rerunning is cheap.
set -eu

[ $# -eq 1 ] || { echo "usage: $0 PREFIX" >&2; exit 2; }
PREFIX=$1
case $PREFIX in /*) ;; *) PREFIX=$(pwd)/$PREFIX ;; esac
[ "$(id -u)" -eq 0 ] || { echo "$0: run as root (apt-get download needs it)" >&2; exit 1; }
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null ||
    { echo "$0: needs Debian's apt-get and dpkg-deb" >&2; exit 1; }
ARCH=$(dpkg --print-architecture)
[ "$ARCH" = amd64 ] || { echo "$0: only amd64 is supported (this is $ARCH)" >&2; exit 1; }
. /etc/os-release
[ "${VERSION_CODENAME:-}" = bookworm ] ||
    echo "$0: warning: written for Debian bookworm, this is ${VERSION_CODENAME:-unknown}" >&2

MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# Mesa 25 needs libdrm >= 2.4.121: libdrm-amdgpu1 and libdrm-common are pinned to backports
# too, or apt picks bookworm's 2.4.114 on a machine without libdrm and fails.
BPO=bookworm-backports
WANT="mesa-vulkan-drivers/$BPO libdrm2/$BPO libdrm-amdgpu1/$BPO libdrm-common/$BPO libvulkan1"

A=$PREFIX/apt
mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$A/parts" "$A/prefs" \
         "$PREFIX/debs" "$PREFIX/root" "$PREFIX/icd" "$PREFIX/stamps"
cat > "$A/sources.list" <<SOURCES
deb [signed-by=$KEYRING] $MIRROR bookworm main
deb [signed-by=$KEYRING] $MIRROR bookworm-updates main
deb [signed-by=$KEYRING] $SECURITY_MIRROR bookworm-security main
deb [signed-by=$KEYRING] $MIRROR bookworm-backports main
SOURCES
cat > "$A/apt.conf" <<CONF
Dir::Etc::sourcelist "$A/sources.list";
Dir::Etc::sourceparts "$A/parts";
Dir::Etc::preferences "$A/prefs/none";
Dir::Etc::preferencesparts "$A/prefs";
Dir::State::Lists "$A/lists";
Dir::Cache "$A/cache";
Dir::Cache::archives "$A/cache/archives";
APT::Sandbox::User "root";
Acquire::Languages "none";
APT::Install-Recommends "false";
CONF
APT="env APT_CONFIG=$A/apt.conf apt-get -q"

echo "gpu-sim: reading the package lists (bookworm and bookworm-backports)"
$APT update >"$A/update.log" 2>&1 || { tail -5 "$A/update.log" >&2; exit 1; }
# What is missing here: the "Inst package [old] (version suite [arch])" lines of a simulation.
$APT -s install $WANT >"$A/simulate.log" 2>&1 || { tail -5 "$A/simulate.log" >&2; exit 1; }
awk '/^Inst /{v=$3; if (v ~ /^\[/) v=$4; gsub(/[()]/,"",v); print $2"="v}' \
    "$A/simulate.log" > "$PREFIX/packages.txt"

cd "$PREFIX/debs"
while read -r package_version; do
  package=${package_version%%=*}; version=${package_version#*=}
  file_version=$(printf %s "$version" | sed 's/:/%3a/')
  ls "${package}_${file_version}_"*.deb >/dev/null 2>&1 || {
    echo "gpu-sim: fetching $package $version"; $APT download "$package_version" >/dev/null; }
done < "$PREFIX/packages.txt"
for deb in *.deb; do
  [ -e "$deb" ] || continue
  [ -e "$PREFIX/stamps/$deb" ] && continue
  dpkg-deb -x "$deb" "$PREFIX/root"
  : > "$PREFIX/stamps/$deb"
done

LIB=$PREFIX/root/usr/lib/x86_64-linux-gnu
[ -e "$LIB/libvulkan_lvp.so" ] || { echo "$0: libvulkan_lvp.so is missing in $LIB" >&2; exit 1; }
# Mesa's own lvp_icd.json names a bare libvulkan_lvp.so: point at the private one.
API=$(sed -n 's/.*"api_version": *"\([^"]*\)".*/\1/p' \
      "$PREFIX/root/usr/share/vulkan/icd.d/lvp_icd.json" 2>/dev/null || true)
cat > "$PREFIX/icd/lvp_icd.x86_64.json" <<ICD
{ "ICD": { "api_version": "${API:-1.3.0}", "library_path": "$LIB/libvulkan_lvp.so" },
  "file_format_version": "1.0.0" }
ICD
cat > "$PREFIX/env.sh" <<ENV
export LD_LIBRARY_PATH="$LIB:$PREFIX/root/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export VK_ICD_FILENAMES="$PREFIX/icd/lvp_icd.x86_64.json"
export VK_DRIVER_FILES="\$VK_ICD_FILENAMES"
export MESA_SHADER_CACHE_DIR="\${MESA_SHADER_CACHE_DIR:-$PREFIX/shader-cache}"
ENV
missing=$(LD_LIBRARY_PATH=$LIB:$PREFIX/root/lib/x86_64-linux-gnu \
          ldd "$LIB/libvulkan_lvp.so" "$LIB/libvulkan.so.1" | grep 'not found' || true)
[ -z "$missing" ] || { echo "$0: unresolved libraries: $missing" >&2; exit 1; }
echo "gpu-sim: lavapipe installed in $PREFIX ($(wc -l < "$PREFIX/packages.txt") packages)"
