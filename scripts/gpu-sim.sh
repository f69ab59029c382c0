#!/usr/bin/env bash
# Software GPU for the `litert-gpu` target: Mesa's lavapipe (Vulkan on the CPU), Mesa >= 25.
#
#   scripts/gpu-sim.sh [DEST]          (default DEST: .cache/gpu-sim; `make gpu-sim` runs this)
#
# LiteRT's GPU accelerator is WebGPU (Dawn) over Vulkan. Dawn needs features that Mesa 22's
# lavapipe (Debian bookworm) lacks ("No adapters found"); bookworm-backports has Mesa 25.
# Nothing is installed system-wide and no root is needed: apt runs with a private sources list,
# state and cache, resolves against the system's installed packages (so only what this machine
# lacks is fetched: mesa-vulkan-drivers, the Vulkan loader, the newer libdrm it needs, ...),
# and `dpkg-deb -x` unpacks the .debs into DEST/root. DEST/lvp_icd.json points the Vulkan loader
# at the unpacked driver; DEST/gpu-sim.json records the packages and versions (runtime/gpu_sim.py
# reads it) and is the stamp: a second run is a no-op. `rm -rf DEST` and rerun to refresh.
#
# Environment: GPU_SIM_MIRROR / GPU_SIM_SECURITY_MIRROR override the Debian mirrors (default:
# the ones in /etc/apt/sources*, else deb.debian.org); GPU_SIM_SUITE the suite Mesa comes from
# (default: <codename>-backports); GPU_SIM_DPKG_STATUS the dpkg status file apt resolves against
# (default: this system's; another one shows what a barer machine would fetch).
set -euo pipefail

DEST=${1:-.cache/gpu-sim}
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)
RECORD="$DEST/gpu-sim.json"
say() { echo "gpu-sim: $*"; }
die() { echo "gpu-sim: ERROR: $*" >&2; exit 1; }

if [ -f "$RECORD" ] && [ -f "$DEST/lvp_icd.json" ]; then
  lib=$(sed -n 's/.*"library_path": *"\([^"]*\)".*/\1/p' "$DEST/lvp_icd.json")
  if [ -n "$lib" ] && [ -f "$lib" ]; then
    say "up to date ($(sed -n 's/.*"mesa": *"\([^"]*\)".*/Mesa \1/p' "$RECORD") in $DEST)"
    exit 0
  fi
  say "$DEST is stale (driver moved or incomplete); setting it up again"
fi

for tool in apt-get dpkg-deb dpkg ldd; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found: this setup needs a Debian-based system (apt, dpkg)"
done
[ -r /etc/os-release ] && . /etc/os-release
CODENAME=${VERSION_CODENAME:-}
[ -n "$CODENAME" ] || die "cannot tell the Debian release (no VERSION_CODENAME in /etc/os-release)"
ARCH=$(dpkg --print-architecture)
SUITE=${GPU_SIM_SUITE:-$CODENAME-backports}

# the Debian mirror this machine already uses (deb822 "URIs:" or one-line "deb URI suite ...")
mirrors() {
  { cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs: *//p' | tr ' ' '\n'
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
      | sed -n 's/^deb \(\[[^]]*\] \)\?\([^ ]*\) .*/\2/p'; } | sed 's|/*$||'
}
MIRROR=${GPU_SIM_MIRROR:-$(mirrors | grep -E '/debian$' | head -n1 || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY=${GPU_SIM_SECURITY_MIRROR:-$(mirrors | grep -E '/debian-security$' | head -n1 || true)}
SECURITY=${SECURITY:-http://deb.debian.org/debian-security}

APT="$DEST/apt"
rm -rf "$APT" "$DEST/debs" "$DEST/root" "$RECORD" "$DEST/lvp_icd.json" "$DEST/env.sh"
mkdir -p "$APT/state/lists/partial" "$APT/cache/archives/partial" "$DEST/debs" "$DEST/root"
KEY=/usr/share/keyrings/debian-archive-keyring.gpg
OPT=""; [ -f "$KEY" ] && OPT="[signed-by=$KEY] "
cat > "$APT/sources.list" <<EOF
deb ${OPT}$MIRROR $CODENAME main
deb ${OPT}$MIRROR $CODENAME-updates main
deb ${OPT}$SECURITY $CODENAME-security main
EOF
case "$SUITE" in "$CODENAME"|"$CODENAME-updates") ;; *) echo "deb ${OPT}$MIRROR $SUITE main" >> "$APT/sources.list";; esac
APT_OPTS=(-o "Dir::State=$APT/state" -o "Dir::State::status=${GPU_SIM_DPKG_STATUS:-/var/lib/dpkg/status}"
          -o "Dir::Cache=$APT/cache" -o "Dir::Etc::SourceList=$APT/sources.list"
          -o "Dir::Etc::SourceParts=/dev/null" -o "Debug::NoLocking=1" -o "APT::Get::List-Cleanup=0")
# as root apt drops to the _apt user for downloads, which cannot write into this folder
[ "$(id -u)" = 0 ] && APT_OPTS+=(-o "APT::Sandbox::User=root")

say "apt-get update (private lists: $MIRROR $CODENAME, $CODENAME-updates, $SUITE; $SECURITY)"
apt-get "${APT_OPTS[@]}" -q update >"$APT/update.log" 2>&1 \
  || { cat "$APT/update.log" >&2; die "apt-get update failed (network or mirror problem; log above)"; }
grep -qE '^E: |^W: (Failed to fetch|Some index files failed)' "$APT/update.log" && { cat "$APT/update.log" >&2; \
  die "apt-get update could not fetch every list (above); the driver cannot be resolved reliably"; }

# What installing the driver would add to this system: only those packages are fetched.
apt-get "${APT_OPTS[@]}" -s -q --no-install-recommends install "mesa-vulkan-drivers/$SUITE" libvulkan1 \
  >"$APT/simulate.log" 2>&1 \
  || { cat "$APT/simulate.log" >&2; die "apt cannot resolve mesa-vulkan-drivers from $SUITE (log above)"; }
mapfile -t PKGS < <(sed -n 's/^Inst \([^ ]*\) \(\[[^]]*\] \)\?(\([^ ]*\) .*/\1=\3/p' "$APT/simulate.log")
# the driver and the loader always come from here, even where the system has (older) copies
printf '%s\n' "${PKGS[@]}" | grep -q '^mesa-vulkan-drivers[:=]' || PKGS+=("mesa-vulkan-drivers/$SUITE")
printf '%s\n' "${PKGS[@]}" | grep -q '^libvulkan1[:=]' || PKGS+=("libvulkan1")

say "apt-get download ${PKGS[*]}"
(cd "$DEST/debs" && apt-get "${APT_OPTS[@]}" -q download "${PKGS[@]}") >"$APT/download.log" 2>&1 \
  || { cat "$APT/download.log" >&2; die "apt-get download failed (log above)"; }
for deb in "$DEST"/debs/*.deb; do dpkg-deb -x "$deb" "$DEST/root"; done

LVP=$(find "$DEST/root" -name libvulkan_lvp.so -print -quit)
[ -n "$LVP" ] || die "the downloaded mesa-vulkan-drivers has no libvulkan_lvp.so"
LIBDIR=$(dirname "$LVP")
LOADER="$LIBDIR/libvulkan.so.1"
# every folder the packages put libraries in (usr/lib/<triplet>, but also lib/<triplet>, e.g. libexpat1)
LIBPATH=$(find "$DEST/root" -name '*.so*' -printf '%h\n' | sort -u | paste -sd:)
[ -e "$LOADER" ] || die "the downloaded libvulkan1 has no libvulkan.so.1"
MESA=$(dpkg-deb -f "$(ls "$DEST"/debs/mesa-vulkan-drivers_*.deb)" Version)
MAJOR=${MESA%%.*}; MAJOR=${MAJOR#*:}
[ "$MAJOR" -ge 25 ] 2>/dev/null || die "mesa-vulkan-drivers $MESA from $SUITE is older than 25: LiteRT's WebGPU accelerator (Dawn) finds no adapter on it"
MISSING=$(LD_LIBRARY_PATH="$LIBPATH" ldd "$LVP" "$LOADER" | grep 'not found' || true)
[ -z "$MISSING" ] || die "libraries the driver needs are missing: $(echo "$MISSING" | awk '{print $1}' | sort -u | xargs)"

API=$(sed -n 's/.*"api_version": *"\([^"]*\)".*/\1/p' "$DEST/root/usr/share/vulkan/icd.d/lvp_icd.json")
cat > "$DEST/lvp_icd.json" <<EOF
{
    "file_format_version": "1.0.0",
    "ICD": {"library_path": "$LVP", "api_version": "${API:-1.3.0}"}
}
EOF
cat > "$DEST/env.sh" <<EOF
# source this to use the software GPU outside the SDK (vulkaninfo, LiteRT's benchmark tool, ...)
export VK_ICD_FILENAMES="$DEST/lvp_icd.json" VK_DRIVER_FILES="$DEST/lvp_icd.json"
export LD_LIBRARY_PATH="$LIBPATH\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
EOF
{
  echo "{"
  echo "  \"schema\": \"edgesdk.gpu-sim/1\","
  echo "  \"driver\": \"lavapipe\","
  echo "  \"mesa\": \"$MESA\","
  echo "  \"icd\": \"$DEST/lvp_icd.json\","
  echo "  \"driver_library\": \"$LVP\","
  echo "  \"loader\": \"$LOADER\","
  echo "  \"libdir\": \"$LIBDIR\","
  echo "  \"libdirs\": [\"${LIBPATH//:/\", \"}\"],"
  echo "  \"suite\": \"$SUITE\","
  echo "  \"mirror\": \"$MIRROR\","
  echo "  \"created_at\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
  echo "  \"packages\": {"
  n=0; debs=("$DEST"/debs/*.deb)
  for deb in "${debs[@]}"; do
    n=$((n + 1)); sep=","; [ "$n" = "${#debs[@]}" ] && sep=""
    echo "    \"$(dpkg-deb -f "$deb" Package)\": \"$(dpkg-deb -f "$deb" Version)\"$sep"
  done
  echo "  }"
  echo "}"
} > "$RECORD.tmp"
mv "$RECORD.tmp" "$RECORD"
rm -rf "$APT/cache" "$APT/state"   # the lists are 10 MB and only needed to resolve
say "lavapipe from Mesa $MESA ready in $DEST ($(cd "$DEST/debs" && ls | sed 's/_[^_]*$//' | xargs))"
