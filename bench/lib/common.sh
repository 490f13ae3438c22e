# shellcheck shell=bash
# Helpers shared by the benchmark scripts: messages, the processes and
# directories the run owns, tool checks and the Debian mirror. Sourced by
# bench/run.sh; not meant to be run on its own.

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
warn() { printf '[bench %s] WARNING: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	printf '[bench %s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2
	exit 1
}

# show_log_tail FILE prints the last lines of a log after a failure.
show_log_tail() {
	[[ -s $1 ]] || return 0
	printf -- '--- last lines of %s ---\n' "$1" >&2
	tail -n 25 "$1" >&2
	printf -- '---\n' >&2
}

# Processes this run started, by PID; cleanup stops these and no others.
STARTED_PIDS=()
# Directories this run created and removes on exit.
CLEANUP_DIRS=()

# start_bg LOGFILE CMD... runs CMD in the background and records its PID in
# BG_PID. CMD is exec'd directly, so the PID is the command's own.
start_bg() {
	local logfile=$1
	shift
	"$@" >"$logfile" 2>&1 &
	BG_PID=$!
	STARTED_PIDS+=("$BG_PID")
}

# forget_pid PID drops PID from STARTED_PIDS once it has been waited for.
forget_pid() {
	local p keep=()
	for p in "${STARTED_PIDS[@]}"; do
		[[ $p == "$1" ]] || keep+=("$p")
	done
	STARTED_PIDS=("${keep[@]}")
}

# stop_pid PID sends SIGTERM, waits up to 5 s, then sends SIGKILL.
stop_pid() {
	local pid=$1 _
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local rc=$? pid dir
	trap - EXIT INT TERM
	for pid in "${STARTED_PIDS[@]}"; do
		stop_pid "$pid"
	done
	for dir in "${CLEANUP_DIRS[@]}"; do
		[[ -n $dir && -d $dir ]] && rm -rf -- "$dir"
	done
	if ((rc != 0)); then
		log "failed (exit $rc); logs are in ${LOG_DIR:-bench/_out/logs}"
	fi
	exit "$rc"
}

# need_tools CMD:PACKAGE... installs the Debian package of every missing
# command with apt-get, which must be possible (root and a reachable mirror).
need_tools() {
	local spec cmd pkg missing=()
	for spec in "$@"; do
		cmd=${spec%%:*}
		pkg=${spec#*:}
		if [[ $cmd == /* ]]; then
			[[ -x $cmd ]] || missing+=("$pkg")
		else
			command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
		fi
	done
	((${#missing[@]} == 0)) && return 0

	if ((EUID != 0)); then
		die "missing packages: ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root"
	fi
	log "installing missing packages: ${missing[*]}"
	if ! apt-get update -qq >"$LOG_DIR/apt-get.log" 2>&1 ||
		! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" \
			>>"$LOG_DIR/apt-get.log" 2>&1; then
		show_log_tail "$LOG_DIR/apt-get.log"
		die "apt-get install ${missing[*]} failed"
	fi
}

# debian_mirror prints the Debian archive URL that apt on this machine uses
# for SUITE ($1), read from the deb822 .sources files and then the one-line
# sources.list format. BENCH_MIRROR overrides it.
debian_mirror() {
	local suite=$1 f uri
	if [[ -n ${BENCH_MIRROR:-} ]]; then
		printf '%s\n' "$BENCH_MIRROR"
		return 0
	fi

	for f in /etc/apt/sources.list.d/*.sources; do
		[[ -r $f ]] || continue
		uri=$(awk -v suite="$suite" '
			function flush() {
				if (types ~ /(^| )deb( |$)/ && enabled != "no" &&
				    (" " suites " ") ~ (" " suite " ") && uris != "") {
					split(uris, u, " ")
					for (i in u) if (u[i] ~ /^https?:\/\//) { print u[i]; found = 1; exit }
				}
				types = ""; suites = ""; uris = ""; enabled = ""
			}
			/^[ \t]*#/ { next }
			/^[ \t]*$/ { flush(); next }
			{
				key = tolower($1); sub(/:$/, "", key)
				val = $0; sub(/^[^:]*:[ \t]*/, "", val)
				if (key == "types") types = val
				else if (key == "suites") suites = val
				else if (key == "uris") uris = val
				else if (key == "enabled") enabled = tolower(val)
			}
			END { if (!found) flush() }
		' "$f")
		if [[ -n $uri ]]; then
			printf '%s\n' "${uri%/}"
			return 0
		fi
	done

	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[[ -r $f ]] || continue
		uri=$(awk -v suite="$suite" '
			$1 != "deb" { next }
			{
				i = 2
				if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
				if ($(i + 1) == suite && $i ~ /^https?:\/\//) { print $i; exit }
			}
		' "$f")
		if [[ -n $uri ]]; then
			printf '%s\n' "${uri%/}"
			return 0
		fi
	done
	return 1
}
