# shellcheck shell=bash
# Building the benchmark images. Sourced by bench/run.sh after common.sh.
#
# build_image MODE DIR leaves an OCI layout in DIR/oci with two tags that
# share every layer but the last:
#
#   1. base  debootstrap --variant=minbase bookworm (no apt lists or caches,
#            no device nodes, no hostname or resolv.conf, as in Docker images)
#   2. pkgs  full:  apt-get install $FULL_PACKAGES in a chroot
#            quick: a few MB of generated files, links and symlinks
#   3. dels  whiteouts for everything in /usr/share/doc and /usr/share/man,
#            and /usr/share/locale made opaque, keeping only de/ and adding
#            README.bench
#   4. app   /app and a changed /etc/motd; v1 and v2 differ only here
#
# Layers 1, 2 and 4 are diffs computed by umoci repack; layer 3 is a tar
# written here, because umoci never emits opaque-directory markers. All
# layers are gzip-compressed with OCI media types. DIR/layers.tsv lists the
# layers with their compressed and uncompressed sizes, and DIR/recipe
# records what was built; run.sh rebuilds when the recipe changes.
#
# The build works in DIR.tmp and renames it to DIR at the end, so DIR exists
# only when the image is complete. Needs root (debootstrap, chroot).

# About 270 MB installed, which brings the image to about 395 MB.
FULL_PACKAGES="python3 python3-minimal libpython3-stdlib python3-numpy \
python3-pip python3-yaml python3-requests python3-babel python3-jinja2 \
git curl ca-certificates openssh-client less"

# image_recipe MODE prints the description the image is rebuilt against.
image_recipe() {
	local pkgs=""
	[[ $1 == full ]] && pkgs=$FULL_PACKAGES
	printf 'recipe 1\nmode %s\nsuite bookworm minbase\npackages %s\n' "$1" \
		"$(tr -s ' \n' ' ' <<<"$pkgs")"
}

# chroot_run ROOTFS CMD... runs CMD in ROOTFS with a clean environment.
chroot_run() {
	local root=$1
	shift
	chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root LC_ALL=C DEBIAN_FRONTEND=noninteractive "$@"
}

# strip_build_leftovers ROOTFS removes what a Docker image does not carry.
strip_build_leftovers() {
	local r=$1
	find "$r/dev" -mindepth 1 -delete
	rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin
	rm -f "$r"/var/cache/apt/archives/*.deb "$r/etc/hostname" \
		"$r/etc/resolv.conf" "$r/usr/sbin/policy-rc.d"
}

# prepare_chroot ROOTFS gives the chroot what apt-get needs for one layer;
# strip_build_leftovers takes it away again before the layer is packed.
prepare_chroot() {
	local r=$1 dev name major minor
	cp /etc/resolv.conf "$r/etc/resolv.conf"
	printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d"
	chmod 0755 "$r/usr/sbin/policy-rc.d"
	for dev in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
		IFS=: read -r name major minor <<<"$dev"
		mknod -m 0666 "$r/dev/$name" c "$major" "$minor"
	done
}

build_base_layer() {
	local w=$1 oci=$1/oci
	local r=$w/bundle/rootfs

	umoci init --layout "$oci"
	umoci new --image "$oci:empty"
	umoci unpack --image "$oci:empty" "$w/bundle"
	mkdir -p "$OUT/debs"
	debootstrap --variant=minbase --cache-dir="$OUT/debs" bookworm "$r" "$MIRROR"

	chroot_run "$r" apt-get clean
	strip_build_leftovers "$r"
	umoci repack --refresh-bundle --image "$oci:base" \
		--history.created_by "debootstrap --variant=minbase bookworm" "$w/bundle"
}

build_packages_layer() {
	local w=$1 mode=$2 oci=$1/oci
	local r=$w/bundle/rootfs i

	if [[ $mode == full ]]; then
		prepare_chroot "$r"
		chroot_run "$r" apt-get -q update
		# shellcheck disable=SC2086 # word splitting of the package list
		chroot_run "$r" apt-get -q install -y --no-install-recommends $FULL_PACKAGES
		chroot_run "$r" apt-get clean
		strip_build_leftovers "$r"
	else
		mkdir -p "$r/opt/bench/data" "$r/opt/bench/text"
		for i in $(seq -w 1 150); do
			head -c 16384 /dev/urandom >"$r/opt/bench/data/blob$i"
			cp "$r/usr/share/common-licenses/GPL-3" "$r/opt/bench/text/gpl$i"
		done
		ln "$r/opt/bench/data/blob001" "$r/opt/bench/data/hardlink"
		ln -s ../text/gpl001 "$r/opt/bench/data/symlink"
	fi
	umoci repack --refresh-bundle --image "$oci:pkgs" \
		--history.created_by "packages ($mode)" "$w/bundle"
}

# build_deletions_layer writes layer 3 as a tar: an empty regular file
# .wh.NAME deletes NAME, and .wh..wh..opq makes its directory opaque.
build_deletions_layer() {
	local w=$1 oci=$1/oci
	local r=$w/bundle/rootfs st=$w/dels d e

	for d in usr/share/doc usr/share/man; do
		mkdir -p "$st/$d"
		for e in "$r/$d"/*; do
			[[ -e $e || -L $e ]] || continue
			: >"$st/$d/.wh.${e##*/}"
		done
	done
	mkdir -p "$st/usr/share/locale"
	: >"$st/usr/share/locale/.wh..wh..opq"
	if [[ -d $r/usr/share/locale/de ]]; then
		cp -a "$r/usr/share/locale/de" "$st/usr/share/locale/"
	fi
	printf 'Only German translations are kept.\n' >"$st/usr/share/locale/README.bench"
	chmod 0755 "$st/usr" "$st/usr/share" "$st/usr/share/doc" \
		"$st/usr/share/man" "$st/usr/share/locale"
	chmod 0644 "$st/usr/share/locale/README.bench"
	find "$st" -name '.wh.*' -exec chmod 0644 {} +

	tar -C "$st" --sort=name --owner=0 --group=0 --numeric-owner \
		--mtime=@1700000000 --format=pax \
		--pax-option=delete=atime,delete=ctime -cf "$w/dels.tar" usr
	umoci raw add-layer --image "$oci:pkgs" --tag dels \
		--history.created_by "rm -rf /usr/share/doc/* /usr/share/man/*; opaque /usr/share/locale" \
		"$w/dels.tar"
	umoci config --image "$oci:dels" --no-history \
		--config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		--config.env PYTHONUNBUFFERED=1 \
		--config.entrypoint /usr/bin/python3 --config.cmd /app/app.py \
		--config.workingdir /app --config.label org.opencontainers.image.title=bench
}

# write_app ROOTFS VERSION writes the files of layer 4.
write_app() {
	local r=$1 v=$2
	mkdir -p "$r/app"
	printf 'VERSION = "%s"\n\nif __name__ == "__main__":\n    print("bench app", VERSION)\n' \
		"$v" >"$r/app/app.py"
	printf '%s\n' "$v" >"$r/app/VERSION"
	head -c 262144 /dev/urandom >"$r/app/model.bin"
	printf 'oci2layers benchmark image, app %s\n' "$v" >"$r/etc/motd"
}

build_app_layers() {
	local w=$1 oci=$1/oci

	rm -rf "$w/bundle"
	umoci unpack --image "$oci:dels" "$w/bundle"
	# Without --refresh-bundle both repacks diff against the dels tag.
	write_app "$w/bundle/rootfs" v1
	umoci repack --image "$oci:v1" --history.created_by "app v1" "$w/bundle"
	write_app "$w/bundle/rootfs" v2
	umoci repack --image "$oci:v2" --history.created_by "app v2" "$w/bundle"
	umoci gc --layout "$oci"
}

# describe_layers OCI TAG... prints one line per layer of each tag:
# tag, index, digest, media type, compressed and uncompressed bytes.
describe_layers() {
	local oci=$1 tag mdigest i digest mt size usize
	shift
	for tag in "$@"; do
		mdigest=$(jq -r --arg t "$tag" '.manifests[]
			| select(.annotations["org.opencontainers.image.ref.name"] == $t)
			| .digest' "$oci/index.json")
		[[ -n $mdigest ]] || die "tag $tag missing from $oci"
		i=0
		while IFS=$'\t' read -r digest mt size; do
			usize=$(gzip -dc "$oci/blobs/sha256/${digest#sha256:}" | wc -c)
			printf '%s\t%d\t%s\t%s\t%s\t%s\n' "$tag" "$i" "$digest" "$mt" "$size" "$usize"
			i=$((i + 1))
		done < <(jq -r '.layers[] | [.digest, .mediaType, .size] | @tsv' \
			"$oci/blobs/sha256/${mdigest#sha256:}")
	done
}

build_image() {
	local mode=$1 dir=$2 w=$2.tmp blog=$LOG_DIR/image-build-$1.log start rc
	start=$(date +%s)
	((EUID == 0)) || die "building the image needs root (debootstrap, chroot)"
	MIRROR=$(debian_mirror bookworm) ||
		die "no Debian bookworm mirror in /etc/apt/sources.list{,.d}; set BENCH_MIRROR=URL"

	rm -rf -- "$w" "$dir"
	mkdir -p "$w"
	CLEANUP_DIRS+=("$w")
	log "building the $mode image in $dir (mirror $MIRROR; log $blog)"

	# A separate statement, not "( ... ) || die": errexit is ignored inside
	# any command whose status an || or && tests.
	exec 3>&2
	set +e
	(
		set -e
		log "layer 1: debootstrap --variant=minbase bookworm" 2>&3
		build_base_layer "$w"
		log "layer 2: packages ($mode)" 2>&3
		build_packages_layer "$w" "$mode"
		log "layer 3: deletions and an opaque directory" 2>&3
		build_deletions_layer "$w"
		log "layer 4: app v1 and v2" 2>&3
		build_app_layers "$w"
	) >"$blog" 2>&1
	rc=$?
	set -e
	exec 3>&-
	if ((rc != 0)); then
		show_log_tail "$blog"
		die "image build failed; see $blog"
	fi

	describe_layers "$w/oci" v1 v2 >"$w/layers.tsv"
	image_recipe "$mode" >"$w/recipe"
	rm -rf -- "$w/bundle" "$w/dels" "$w/dels.tar"
	mv -- "$w" "$dir"
	log "built the $mode image in $(($(date +%s) - start)) s"
}
