#!/usr/bin/env bash
# Converts the built-in demo image, then a variant whose top layer changed,
# and shows that only the changed layer was built again. Offline.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=bin/oci2layers
work=demo
if [ -z "${OCI2LAYERS_CACHE:-}" ]; then
	export OCI2LAYERS_CACHE=$PWD/$work/cache
	rm -rf "$OCI2LAYERS_CACHE" # start cold, so the demo shows what gets built
fi
rm -rf "$work/image" "$work/out"
mkdir -p "$work"

# A static busybox makes the demo runnable under Apptainer; without one the
# conversion is the same, only nothing in the image can be executed.
busybox=$(command -v busybox || true)
if [ -z "$busybox" ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
	scripts/deps.sh busybox:busybox-static && busybox=$(command -v busybox || true)
fi
bbflag=()
if [ -n "$busybox" ] && file -L "$busybox" 2>/dev/null | grep -q "statically linked"; then
	bbflag=(-busybox "$busybox")
elif [ -n "$busybox" ] && ! command -v file >/dev/null; then
	bbflag=(-busybox "$busybox")
else
	echo "(no static busybox: the demo converts, but has no programs to run;" \
		"install busybox-static to get them)"
fi

echo "== generating the demo image (an OCI layout, offline)"
go run ./tools/demoimage -o "$work/image" "${bbflag[@]}"

summary() {
	python3 - "$1" <<'PY' 2>/dev/null || cat "$1"
import json, sys
j = json.load(open(sys.argv[1]))
def row(name, e):
    print(f"   {name:<40} {'reused' if e['reused'] else 'BUILT'}")
row(j['base']['file'], j['base'])
for o in j['overlays']:
    row(o['file'], o)
row(j['config_overlay']['file'], j['config_overlay'])
PY
}

echo
echo "== converting oci:$work/image:demo (cache: $OCI2LAYERS_CACHE)"
"$bin" convert --quiet "oci:$work/image:demo" -o "$work/out/demo"
summary "$work/out/demo/image.json"

echo
echo "== converting oci:$work/image:demo-v2 (only its top layer differs)"
"$bin" convert --quiet "oci:$work/image:demo-v2" -o "$work/out/demo-v2"
summary "$work/out/demo-v2/image.json"

echo
echo "== the same image again: nothing is built"
"$bin" convert --quiet "oci:$work/image:demo-v2" -o "$work/out/demo-v2"
summary "$work/out/demo-v2/image.json"

echo
echo "Run it with Apptainer:  $work/out/demo-v2/run exec cat /etc/os-release"
