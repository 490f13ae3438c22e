#!/usr/bin/env bash
# bench/run.sh: time oci2layers against the conventional rebuild
# (skopeo copy + umoci unpack + mksquashfs) on a realistic Debian image served
# by a local registry. See bench/README.md; "bench/run.sh --help" for flags.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
OUT=$BENCH_DIR/_out  # "_" keeps the go tool out of the image trees
LOG_DIR=$OUT/logs

# shellcheck source=bench/lib/common.sh
source "$BENCH_DIR/lib/common.sh"
# shellcheck source=bench/lib/image.sh
source "$BENCH_DIR/lib/image.sh"
# shellcheck source=bench/lib/report.sh
source "$BENCH_DIR/lib/report.sh"

usage() {
	cat <<'EOF'
usage: bash bench/run.sh [--quick] [--reps N] [--rebuild] [--bin PATH]
                         [--no-oci2layers] [--keep]

Builds (once) a Debian bookworm image of four layers plus a variant that
differs only in the top layer, serves both from a local docker-registry, and
times, N times each (median reported):

  conventional, cold        skopeo copy + umoci unpack + mksquashfs of v1
  conventional, top change  the same pipeline on the variant v2
  oci2layers, cold          convert v1 with an empty cache
  oci2layers, unchanged     convert v1 again with the same cache
  oci2layers, top change    convert v2 with the cache warm from v1

Results go to bench/_out/results.txt and bench/_out/results.json.

  --quick      small image (minbase and small layers), 1 repetition unless
               --reps is given; exercises the harness in about a minute
  --reps N     repetitions per case (default 3)
  --rebuild    rebuild the image even if bench/_out has it
  --bin PATH   use this oci2layers binary instead of building ./cmd/oci2layers
  --no-oci2layers
               time the conventional pipeline only
  --keep       keep the scratch directory (bench/_out/tmp.*) for inspection

Environment: BENCH_MIRROR overrides the Debian mirror read from
/etc/apt/sources.list{,.d}. Building the image needs root.
Exit status: 0 when every step ran (targets may still be MISS), 1 otherwise.
EOF
}

MODE=full
REPS=""
REBUILD=0
KEEP=0
BIN=""
NO_O2L=0
while (($# > 0)); do
	case $1 in
	--quick) MODE=quick ;;
	--reps)
		(($# >= 2)) || die "--reps needs a number"
		REPS=$2
		shift
		;;
	--reps=*) REPS=${1#*=} ;;
	--rebuild) REBUILD=1 ;;
	--no-oci2layers) NO_O2L=1 ;;
	--keep) KEEP=1 ;;
	--bin)
		(($# >= 2)) || die "--bin needs a path"
		BIN=$2
		shift
		;;
	--bin=*) BIN=${1#*=} ;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		usage >&2
		die "unknown argument: $1"
		;;
	esac
	shift
done
if [[ -z $REPS ]]; then
	REPS=3
	[[ $MODE == quick ]] && REPS=1
fi
[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "--reps wants a positive integer, not '$REPS'"

trap cleanup EXIT
trap 'warn "line $LINENO: \"$BASH_COMMAND\" exited with status $?"' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$OUT" "$LOG_DIR"
RUN_LOG=$LOG_DIR/run
rm -rf -- "$RUN_LOG"
mkdir -p "$RUN_LOG"
BENCH_START=$(date +%s)

need_tools /usr/bin/time:time jq:jq skopeo:skopeo umoci:umoci \
	docker-registry:docker-registry mksquashfs:squashfs-tools curl:curl
command -v go >/dev/null 2>&1 || die "go is not on PATH; the proxy and oci2layers are built with it"

# --- image -----------------------------------------------------------------

IMG=$OUT/image-$MODE
if ((REBUILD)) || [[ ! -f $IMG/recipe ]] || ! diff -q <(image_recipe "$MODE") "$IMG/recipe" >/dev/null; then
	if [[ -f $IMG/recipe ]] && ((!REBUILD)); then
		log "the image recipe changed; rebuilding $IMG"
	fi
	need_tools debootstrap:debootstrap gzip:gzip tar:tar
	build_image "$MODE" "$IMG"
else
	log "reusing the $MODE image in $IMG (--rebuild to build it again)"
fi
LAYERS_TSV=$IMG/layers.tsv

# --- tools -------------------------------------------------------------------

TMP=$(mktemp -d "$OUT/tmp.XXXXXX")
((KEEP)) || CLEANUP_DIRS+=("$TMP")
STEPS=$TMP/steps.tsv   # case rep step wall user sys maxrss_kb
COUNTS=$TMP/counts.tsv # see bench/lib/report.sh
: >"$STEPS"
: >"$COUNTS"

mkdir -p "$OUT/bin"
log "building bench/cmd/countproxy"
(cd "$ROOT" && go build -o "$OUT/bin/countproxy" ./bench/cmd/countproxy) \
	>"$RUN_LOG/build-countproxy.log" 2>&1 || {
	show_log_tail "$RUN_LOG/build-countproxy.log"
	die "go build ./bench/cmd/countproxy failed"
}

O2L_SKIP=""
if ((NO_O2L)); then
	O2L_SKIP="--no-oci2layers was given"
elif [[ -n $BIN ]]; then
	[[ -x $BIN ]] || die "--bin $BIN is not an executable file"
	BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
elif [[ ! -d $ROOT/cmd/oci2layers ]]; then
	O2L_SKIP="cmd/oci2layers does not exist yet"
else
	log "building ./cmd/oci2layers"
	version=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo dev)
	if (cd "$ROOT" && go build -ldflags "-X main.version=$version" \
		-o "$OUT/bin/oci2layers" ./cmd/oci2layers) \
		>"$RUN_LOG/build-oci2layers.log" 2>&1; then
		BIN=$OUT/bin/oci2layers
	else
		show_log_tail "$RUN_LOG/build-oci2layers.log"
		O2L_SKIP="go build ./cmd/oci2layers failed (see $RUN_LOG/build-oci2layers.log)"
	fi
fi
O2L_VERSION=""
if [[ -z $O2L_SKIP ]]; then
	O2L_VERSION="$("$BIN" version 2>/dev/null | head -n 1 || true) ($BIN)"
else
	warn "skipping the oci2layers cases: $O2L_SKIP"
fi

# --- registry and proxy ------------------------------------------------------

# wait_for SECONDS PID DESCRIPTION TEST... polls TEST until it succeeds,
# failing early if PID has exited.
wait_for() {
	local secs=$1 pid=$2 what=$3 i
	shift 3
	for i in $(seq $((secs * 10))); do
		if "$@"; then return 0; fi
		kill -0 "$pid" 2>/dev/null || die "$what exited during start-up"
		sleep 0.1
	done
	die "$what did not start within $secs s"
}

registry_port() {
	sed -n 's/.*msg="listening on 127\.0\.0\.1:\([0-9]*\)".*/\1/p' "$RUN_LOG/registry.log" | head -n 1
}

mkdir -p "$TMP/registry"
cat >"$TMP/registry.yml" <<EOF
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $TMP/registry
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:0
  secret: oci2layers-bench
EOF
start_bg "$RUN_LOG/registry.log" docker-registry serve "$TMP/registry.yml"
REG_PID=$BG_PID
registry_listening() { [[ -n $(registry_port) ]]; }
wait_for 20 "$REG_PID" "docker-registry (log $RUN_LOG/registry.log)" registry_listening
REG_ADDR=127.0.0.1:$(registry_port)
log "docker-registry (pid $REG_PID) listens on $REG_ADDR"

for tag in v1 v2; do
	log "pushing $tag"
	skopeo copy -q --insecure-policy --dest-tls-verify=false \
		"oci:$IMG/oci:$tag" "docker://$REG_ADDR/bench:$tag" \
		>"$RUN_LOG/push-$tag.log" 2>&1 || {
		show_log_tail "$RUN_LOG/push-$tag.log"
		die "skopeo copy to the registry failed"
	}
done

start_bg "$RUN_LOG/countproxy.log" "$OUT/bin/countproxy" \
	-upstream "http://$REG_ADDR" -addr-file "$TMP/proxy.addr"
PROXY_PID=$BG_PID
wait_for 10 "$PROXY_PID" "countproxy (log $RUN_LOG/countproxy.log)" test -s "$TMP/proxy.addr"
PROXY_ADDR=$(<"$TMP/proxy.addr")
curl -fsS "http://$PROXY_ADDR/v2/" >/dev/null || die "the registry does not answer through the proxy"
log "countproxy (pid $PROXY_PID) listens on $PROXY_ADDR; clients pull through it"

proxy_reset() { curl -fsS -X POST "http://$PROXY_ADDR/_bench/reset"; }
proxy_counts() { curl -fsS "http://$PROXY_ADDR/_bench/counts"; }

# --- measuring ---------------------------------------------------------------

# timed CASE REP STEP CMD... runs CMD under GNU time and appends a row to
# $STEPS. Returns CMD's status; the log is $RUN_LOG/CASE.REP.STEP.log.
# Meanwhile it samples VmHWM, the peak RSS of CMD's own process without
# its children, every 50 ms into OWN_RSS_KB (empty when CMD ended before
# the first sample).
timed() {
	local c=$1 rep=$2 step=$3 tf=$TMP/time.txt rc=0 e u s m tpid child="" k v _
	local lf=$RUN_LOG/$1.$2.$3.log
	shift 3
	OWN_RSS_KB=""

	/usr/bin/time -f '%e %U %S %M' -o "$tf" -- "$@" >"$lf" 2>&1 &
	tpid=$!
	STARTED_PIDS+=("$tpid")
	while kill -0 "$tpid" 2>/dev/null; do
		if [[ -z $child ]]; then
			read -r child _ <"/proc/$tpid/task/$tpid/children" 2>/dev/null || true
			[[ -n $child ]] && STARTED_PIDS+=("$child")
		fi
		if [[ -n $child ]]; then
			{
				while read -r k v _; do
					[[ $k == VmHWM: ]] || continue
					((v > ${OWN_RSS_KB:-0})) && OWN_RSS_KB=$v
					break
				done <"/proc/$child/status"
			} 2>/dev/null || true
		fi
		sleep 0.05
	done
	wait "$tpid" || rc=$?
	forget_pid "$tpid"
	[[ -n $child ]] && forget_pid "$child"

	if ((rc != 0)); then
		show_log_tail "$lf"
		warn "$c (run $rep): $step exited with status $rc; log $lf"
		return "$rc"
	fi
	read -r e u s m < <(tail -n 1 "$tf")
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$c" "$rep" "$step" "$e" "$u" "$s" "$m" >>"$STEPS"
}

# settle flushes dirty pages left by the previous case, so its writeback
# is not charged to the next one, and prints the 1-minute load average.
settle() {
	local load _
	sync
	read -r load _ </proc/loadavg
	printf '%s\n' "$load"
}

UMOCI_UNPACK=(umoci unpack)
((EUID == 0)) || UMOCI_UNPACK+=(--rootless)

# conventional CASE TAG REP: pull, unpack and squash the whole image into
# fresh directories.
conventional() {
	local c=$1 tag=$2 rep=$3 d=$TMP/conv load
	rm -rf -- "$d"
	mkdir -p "$d"
	load=$(settle)
	timed "$c" "$rep" skopeo skopeo copy -q --insecure-policy --src-tls-verify=false \
		"docker://$PROXY_ADDR/bench:$tag" "oci:$d/oci:$tag" || return 1
	timed "$c" "$rep" umoci "${UMOCI_UNPACK[@]}" --image "$d/oci:$tag" "$d/bundle" || return 1
	timed "$c" "$rep" mksquashfs mksquashfs "$d/bundle/rootfs" "$d/out.sqfs" \
		-comp gzip -noappend -no-progress -quiet || return 1
	printf '%s\t%s\t%s\t\t\t\t\t%s\t\n' "$c" "$rep" "$load" \
		"$(stat -c %s "$d/out.sqfs")" >>"$COUNTS"
	rm -rf -- "$d"
}

# convert CASE TAG REP CACHE: one oci2layers run into a fresh output dir,
# with the proxy's counters reset first.
convert() {
	local c=$1 tag=$2 rep=$3 cache=$4 out=$TMP/o2l/$1.$3 counts layer_gets reused load
	proxy_reset || return 1
	load=$(settle)
	timed "$c" "$rep" convert "$BIN" convert --cache "$cache" --plain-http -o "$out" \
		"docker://$PROXY_ADDR/bench:$tag" || return 1

	counts=$(proxy_counts) || return 1
	layer_gets=$(jq -r --rawfile layers "$LAYERS_TSV" '
		($layers | split("\n") | map(split("\t")[2] // empty)) as $l
		| [.blob_digests[] | select(. as $d | $l | index($d))] | length' <<<"$counts")
	reused="?"
	if [[ -f $out/image.json ]]; then
		reused=$(jq -r '[.. | objects | select(has("reused")) | .reused]
			| "\(map(select(. == true)) | length)/\(length)"' "$out/image.json" 2>/dev/null || echo "?")
	fi
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$c" "$rep" "$load" \
		"$(jq -r .blob_gets <<<"$counts")" "$layer_gets" \
		"$(jq -r .blob_bytes <<<"$counts")" "$reused" "$(du -sb "$out" | cut -f1)" \
		"$OWN_RSS_KB" >>"$COUNTS"
}

# Each repetition runs every case, conventional and oci2layers alternating,
# so that load from other work on the machine hits both alike.
FAILED=""
for rep in $(seq "$REPS"); do
	rm -rf -- "$TMP/o2l"
	mkdir -p "$TMP/o2l"
	cache=$TMP/o2l/cache

	log "run $rep/$REPS: conventional, cold (v1)"
	conventional conv-cold v1 "$rep" || { FAILED="conventional pipeline"; break; }
	if [[ -z $O2L_SKIP ]]; then
		log "run $rep/$REPS: oci2layers, cold (v1)"
		convert o2l-cold v1 "$rep" "$cache" || { FAILED="oci2layers convert"; break; }
		log "run $rep/$REPS: oci2layers, unchanged (v1 again)"
		convert o2l-unchanged v1 "$rep" "$cache" || { FAILED="oci2layers convert"; break; }
	fi
	log "run $rep/$REPS: conventional, top-layer change (v2)"
	conventional conv-top v2 "$rep" || { FAILED="conventional pipeline"; break; }
	if [[ -z $O2L_SKIP ]]; then
		log "run $rep/$REPS: oci2layers, top-layer change (v2)"
		convert o2l-top v2 "$rep" "$cache" || { FAILED="oci2layers convert"; break; }
	fi
done

# --- report ------------------------------------------------------------------

write_report "$OUT/results.txt" "$OUT/results.json"
cat "$OUT/results.txt"
cp "$STEPS" "$OUT/steps.tsv"
log "wrote $OUT/results.txt, $OUT/results.json and $OUT/steps.tsv" \
	"in $(($(date +%s) - BENCH_START)) s"
((KEEP)) && log "kept the scratch directory $TMP"

if [[ -n $FAILED ]]; then
	die "the $FAILED failed; results above are partial"
fi
