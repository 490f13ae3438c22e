// Package mirror keeps a tree of converted images in step with registries:
// it is what `oci2layers sync -f sync.yaml` runs.
//
// A sync file names the images, how to pick their tags and where each
// tag's output directory goes:
//
//	output: /scratch/sif            # relative: to this file's directory
//	path: "{registry}/{repo}/{tag}" # output directory template
//	platforms: [linux/amd64]        # default: linux/<this machine>
//	plain_http: false               # loopback and test registries
//	insecure_skip_tls_verify: false
//	allow_foreign_layers: false
//	base_layers: 1                  # as convert's --base-layers
//	max_overlays: 24                # as convert's --max-overlays
//	compression: gzip               # gzip, zstd, lz4 or xz
//	images:
//	  - registry: 127.0.0.1:5000    # default docker.io
//	    repository: library/python
//	    tags: ["3.12-slim", "3.11-slim"]
//	    plain_http: true            # overrides the top level's
//	  - repository: library/debian
//	    tag_regex: "^bookworm-[0-9]+$"
//	  - registry: ghcr.io
//	    repository: org/app
//	    newest_semver: 3
//	    path: "apps/{repo}/{tag}"
//
// Every image entry needs a repository and exactly one tag selector: tags
// (these tags), tag_regex (the registry's tags this RE2 expression
// matches) or newest_semver (the N highest MAJOR.MINOR.PATCH tags, a
// leading "v" allowed; pre-releases and other tags are ignored). An entry
// may override every top-level setting but output. The file is checked
// strictly: an unknown or repeated key, a value of the wrong type, a bad
// tag, expression, platform or template is an error naming its line, and
// every such error is reported.
//
// The path template's placeholders are {registry}, {repo}, {tag},
// {platform} (os-arch[-variant]), {os} and {arch} (arch[-variant]). Each
// value becomes a safe path component: bytes other than letters, digits,
// '.', '_' and '-' become '_' (so 127.0.0.1:5000 gives 127.0.0.1_5000, as a
// colon would break Apptainer's --overlay FILE:ro), {repo} keeps its slashes
// as directories. A template is relative and has no "." or ".." component;
// the expanded path must lie strictly inside the output root. A template
// without {tag} is refused when more than one tag may be selected, one
// without {platform} (or {os} and {arch}) when several platforms are
// converted. Two tags whose paths are the same both fail, and so does a tag
// whose path lies inside another's.
//
// A run lists the tags of the entries that select by expression or version,
// then asks the registry for each tag's digest with HEAD (once per tag,
// whatever its platforms). A tag whose digest and options are those the
// state file recorded for its directory, and whose image.json and files are
// all there, is unchanged: nothing more is asked for it. The others are
// converted, Options.Jobs at a time, each pinned to the digest HEAD gave
// (docker://HOST/REPO:TAG@DIGEST), through one shared cache: a layer two
// images share is built once, and fetched once unless the conversion that
// did not download it takes its build lock first (convert keeps no
// downloaded blob for other conversions). A failure is reported in its
// item and does not stop the others. For a multi-platform image the digest
// is the index's, so a change to any platform converts each platform of the
// tag again, its unchanged layers taken from the cache. Credentials come
// from the Docker config, as for convert.
//
// The state file, StateFile in the output root, maps each output directory
// to the tag, platform, options and digests of its last conversion, and
// says whether sync created the directory. It is rewritten atomically after
// every conversion, so a killed run loses nothing finished; a lock file
// beside it keeps two syncs off one root. With Options.Prune, a recorded
// directory this run no longer produces (its tag is gone from the registry,
// no longer selected, or its entry left the file) loses the files a
// conversion writes, then the directory and the parents sync made for it
// if that leaves them empty. Nothing sync did not create is removed, and
// nothing of a repository whose tags could not be listed.
//
// With Options.Shard (`sync --shard I/N`) a run converts shard I of N: the
// tags with fnv64a(REGISTRY/REPOSITORY:TAG) mod N == I-1, every platform
// of a tag together (see Shard). Every shard lists tags and checks output
// paths for the whole file, so N shards partition exactly what one
// unsharded run would convert. Each shard keeps its own state file,
// .oci2layers-sync.I-of-N.json, and lock, .oci2layers-sync.I-of-N.lock,
// beside the unsharded ones, and holds the unsharded lock shared: shards
// of one count run side by side on one root (on a shared file system too,
// where it supports flock across machines), never beside an unsharded sync
// or a second run of the same shard. Prune removes only outputs recorded by
// this shard whose tag is in it. The state is per shard count: after N
// changes, the new shards find no record, convert every tag again (layers
// come from the cache) into directories that exist already, and so do not
// consider them theirs to prune.
package mirror
