# shellcheck shell=bash
# The results table, the target checks and the JSON file. Sourced by
# bench/run.sh, whose variables it reads: STEPS, COUNTS, LAYERS_TSV, MODE,
# REPS, O2L_SKIP, O2L_VERSION, FAILED.
#
# Inputs, tab-separated:
#   STEPS   case rep step wall_s user_s sys_s maxrss_kb   (one per process)
#   COUNTS  case rep load1 blob_gets layer_gets blob_bytes reused out_bytes
#           own_rss_kb
#           (one per finished run: load1 is the 1-minute load average when
#           the run started; conventional runs leave the counts, reused and
#           own_rss_kb empty and give the squashfs size as out_bytes)

CASES="conv-cold conv-top o2l-cold o2l-unchanged o2l-top"

case_label() {
	case $1 in
	conv-cold) echo "conventional, cold (v1)" ;;
	conv-top) echo "conventional, top-layer change (v2)" ;;
	o2l-cold) echo "oci2layers, cold (v1)" ;;
	o2l-unchanged) echo "oci2layers, unchanged (v1 again)" ;;
	o2l-top) echo "oci2layers, top-layer change (v2)" ;;
	esac
}

# case_baseline CASE names the conventional case CASE is compared with.
case_baseline() {
	case $1 in
	o2l-cold | o2l-unchanged) echo conv-cold ;;
	o2l-top) echo conv-top ;;
	esac
}

# summarize prints one line per case: case runs wall cpu rss_mb, where wall
# and cpu are medians over the finished runs of the per-run sums over steps
# and rss_mb is the largest step RSS of any run. With "steps" as $1 it
# prints the same per case and step instead.
summarize() {
	awk -F'\t' -v by="${1:-case}" '
		function median(a, n,    i, j, t) {
			for (i = 2; i <= n; i++) {
				t = a[i]
				for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]
				a[j + 1] = t
			}
			return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
		}
		FILENAME == ARGV[1] { done[$1 SUBSEP $2] = 1; next }
		!(($1 SUBSEP $2) in done) { next }
		{
			g = by == "steps" ? $1 "\t" $3 : $1
			k = g SUBSEP $2
			if (!(k in wall)) { n[g]++; run[g, n[g]] = k }
			wall[k] += $4; cpu[k] += $5 + $6
			if ($7 > rss[g]) rss[g] = $7
			if (!(g in seen)) { seen[g] = 1; order[++ng] = g }
		}
		END {
			for (i = 1; i <= ng; i++) {
				g = order[i]
				for (j = 1; j <= n[g]; j++) { w[j] = wall[run[g, j]]; c[j] = cpu[run[g, j]] }
				printf "%s\t%d\t%.3f\t%.3f\t%.1f\n", g, n[g], median(w, n[g]),
					median(c, n[g]), rss[g] / 1024
			}
		}
	' "$COUNTS" "$STEPS"
}

# field CASE COLUMN prints one column (2 runs, 3 wall, 4 cpu, 5 rss) of the
# summary line for CASE, or nothing.
field() { awk -F'\t' -v c="$1" -v k="$2" '$1 == c { print $k }' <<<"$SUMMARY"; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b > 0) printf "%.4f", a / b }'; }

# check NAME OK DETAIL appends a target line and its JSON.
check() {
	local verdict=$2
	TARGET_LINES+=("$(printf '  %-4s  %s' "$verdict" "$3")")
	TARGET_JSON+=("$(jq -nc --arg n "$1" --arg r "$verdict" --arg d "$3" \
		'{name: $n, result: $r, detail: $d}')")
}

le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && a + 0 <= b + 0) }'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && a + 0 < b + 0) }'; }

evaluate_targets() {
	local r_cold r_top w_unch gets rss own skip=""
	TARGET_LINES=()
	TARGET_JSON=()
	[[ -n $O2L_SKIP ]] && skip="SKIP"
	[[ -z $skip && -z $(field o2l-top 2) ]] && skip="FAIL"

	r_cold=$(ratio "$(field o2l-cold 3)" "$(field conv-cold 3)")
	r_top=$(ratio "$(field o2l-top 3)" "$(field conv-top 3)")
	w_unch=$(field o2l-unchanged 3)
	gets=$(awk -F'\t' '$1 == "o2l-unchanged" && $4 > m { m = $4 } END { print m + 0 }' "$COUNTS")
	rss=$(awk -F'\t' '$1 ~ /^o2l-/ { print $5 }' <<<"$SUMMARY" | sort -g | tail -n 1)
	own=$(awk -F'\t' '$1 ~ /^o2l-/ && $9 > m { m = $9 } END { if (m) printf "%.1f", m / 1024 }' "$COUNTS")

	if [[ -n $skip ]]; then
		check cold_ratio "$skip" "cold: oci2layers / conventional <= 0.80"
		check top_change_ratio "$skip" "top-layer change: oci2layers / conventional <= 0.02 (1/50)"
		check unchanged "$skip" "unchanged: < 0.20 s with 0 blob GETs"
		check peak_rss "$skip" "peak RSS of oci2layers < 200 MB"
		return
	fi
	check cold_ratio "$(le "$r_cold" 0.8 && echo PASS || echo MISS)" \
		"cold: oci2layers / conventional = $r_cold (target <= 0.80)"
	check top_change_ratio "$(le "$r_top" 0.02 && echo PASS || echo MISS)" \
		"top-layer change: oci2layers / conventional = $r_top (target <= 0.02, i.e. 1/50)"
	check unchanged "$( (lt "$w_unch" 0.2 && ((gets == 0))) && echo PASS || echo MISS)" \
		"unchanged: $w_unch s, $gets blob GETs in the worst run (target < 0.20 s and 0)"
	check peak_rss "$(lt "$rss" 200 && echo PASS || echo MISS)" \
		"peak RSS of oci2layers with its children: $rss MB, largest over its runs (target < 200 MB)"
	TARGET_LINES+=("        the oci2layers process alone: ${own:-?} MB (VmHWM sampled every 50 ms)")
}

image_line() {
	awk -F'\t' '
		$1 == "v1" { n++; c += $5; u += $6 }
		$1 == "v2" { last = $5; lastu = $6 }
		END {
			printf "image: %d layers, %.1f MB compressed, %.1f MB uncompressed (v1);", n, c / 1e6, u / 1e6
			printf " v2 differs only in the top layer (%.2f MB compressed)\n", last / 1e6
		}
	' "$LAYERS_TSV"
}

# load_line reports the load average seen at the start of the runs and
# warns when other work competed for the CPUs.
load_line() {
	awk -F'\t' -v cpus="$(nproc)" '
		{ if (n == 0 || $3 < lo) lo = $3; if ($3 > hi) hi = $3; n++ }
		END {
			if (n == 0) exit
			printf "load average (1 min) at the start of runs: %.2f to %.2f", lo, hi
			if (hi > cpus) printf "; WARNING: above the %d CPUs, other work competed and times are inflated", cpus
			printf "\n"
		}
	' "$COUNTS"
}

write_text() {
	local c label wall cpu rss base r runs
	printf 'oci2layers benchmark: %s image, %s run(s) per case, %s\n' "$MODE" "$REPS" \
		"$(date -u '+%Y-%m-%d %H:%M UTC')"
	image_line
	printf 'host: %s CPUs, Linux %s; oci2layers: %s\n' "$(nproc)" "$(uname -r)" \
		"${O2L_VERSION:-none}"
	load_line
	echo

	printf '%-38s %5s %9s %9s %12s %16s\n' case runs "wall s" "CPU s" "peak RSS MB" "vs conventional"
	for c in $CASES; do
		label=$(case_label "$c")
		runs=$(field "$c" 2)
		if [[ -z $runs ]]; then
			if [[ $c == o2l-* && -n $O2L_SKIP ]]; then
				printf '%-38s skipped: %s\n' "$label" "$O2L_SKIP"
			else
				printf '%-38s no finished run\n' "$label"
			fi
			continue
		fi
		wall=$(field "$c" 3)
		cpu=$(field "$c" 4)
		rss=$(field "$c" 5)
		r="-"
		base=$(case_baseline "$c")
		[[ -n $base ]] && r=$(ratio "$wall" "$(field "$base" 3)")
		printf '%-38s %5s %9.2f %9.2f %12.1f %16s\n' "$label" "$runs" "$wall" "$cpu" "$rss" "${r:--}"
	done

	printf '\ntargets (PASS/MISS; the exit status does not depend on them)\n'
	printf '%s\n' "${TARGET_LINES[@]}"

	cat <<'EOF'

notes
  wall and CPU are medians over runs; CPU is user+sys of the process and the
  children it waited for (mksquashfs under oci2layers); peak RSS is the
  largest of any run.
  conventional = skopeo copy, then umoci unpack, then mksquashfs -comp gzip,
  into fresh directories: wall and CPU are the sums of the three steps, peak
  RSS is the largest single step.
  "vs conventional" is wall-time ratio; the unchanged case is compared with
  the cold conventional pipeline, which is what rebuilding costs.
  The page cache is not dropped: the registry's blobs were just pushed and
  are served from memory. Registry and proxy CPU is not counted in any case;
  every pull goes through the counting proxy.
EOF

	printf '\nsteps (median wall s, median CPU s, peak RSS MB)\n'
	summarize steps | awk -F'\t' '{ printf "  %-14s %-11s %9.2f %9.2f %9.1f\n", $1, $2, $4, $5, $6 }'

	printf '\nper run (load average at start; blob GETs through the proxy, of them'
	printf ' layers, MB received;\n  overlays reused; output MB; peak RSS of the'
	printf ' oci2layers process alone)\n'
	awk -F'\t' '
		$4 == "" { printf "  %-14s run %s: load %s; squashfs %.1f MB\n", $1, $2, $3, $8 / 1e6; next }
		{
			printf "  %-14s run %s: load %s; %s blob GETs (%s layers), %.1f MB; reused %s;",
				$1, $2, $3, $4, $5, $6 / 1e6, $7
			printf " output %.1f MB; own RSS %s\n", $8 / 1e6, $9 == "" ? "-" : sprintf("%.1f MB", $9 / 1024)
		}
	' "$COUNTS"
}

write_json() {
	jq -n \
		--arg mode "$MODE" --argjson reps "$REPS" --arg date "$(date -u +%FT%TZ)" \
		--arg cpus "$(nproc)" --arg kernel "$(uname -r)" --arg bin "${O2L_VERSION:-}" \
		--arg skip "$O2L_SKIP" --arg failed "$FAILED" \
		--rawfile summary <(printf '%s\n' "$SUMMARY") \
		--rawfile steps "$STEPS" --rawfile counts "$COUNTS" --rawfile layers "$LAYERS_TSV" \
		--argjson targets "[$(IFS=,; echo "${TARGET_JSON[*]}")]" '
		def rows($s): $s | split("\n") | map(select(length > 0) | split("\t"));
		def num: if . == "" or . == null then null else tonumber end;
		{
			mode: $mode, reps: $reps, date: $date,
			host: {cpus: ($cpus | tonumber), kernel: $kernel},
			oci2layers: (if $bin == "" then null else $bin end),
			skipped: (if $skip == "" then null else $skip end),
			failed: (if $failed == "" then null else $failed end),
			image: [rows($layers)[] | {tag: .[0], index: (.[1] | num), digest: .[2],
				media_type: .[3], compressed: (.[4] | num), uncompressed: (.[5] | num)}],
			cases: ((rows($summary) | map({key: .[0], value: (.[2] | num)}) | from_entries) as $wall
				| [rows($summary)[] | {case: .[0], runs: (.[1] | num),
				wall_s: (.[2] | num), cpu_s: (.[3] | num), peak_rss_mb: (.[4] | num),
				vs_conventional: ({"o2l-cold": "conv-cold", "o2l-unchanged": "conv-cold",
					"o2l-top": "conv-top"}[.[0]] as $b
					| if $b == null or $wall[$b] == null or $wall[$b] == 0 then null
					  else (.[2] | num) / $wall[$b] end)}]),
			runs: [rows($counts)[] | {case: .[0], run: (.[1] | num), load1: (.[2] | num),
				blob_gets: (.[3] | num), layer_gets: (.[4] | num), blob_bytes: (.[5] | num),
				reused: (if .[6] == "" then null else .[6] end), output_bytes: (.[7] | num),
				own_rss_kb: (.[8] | num)}],
			steps: [rows($steps)[] | {case: .[0], run: (.[1] | num), step: .[2],
				wall_s: (.[3] | num), user_s: (.[4] | num), sys_s: (.[5] | num),
				max_rss_kb: (.[6] | num)}],
			targets: $targets
		}'
}

# write_report TXT JSON writes both result files.
write_report() {
	SUMMARY=$(summarize)
	evaluate_targets
	write_text >"$1"
	write_json >"$2"
}
