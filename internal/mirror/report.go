package mirror

import "time"

// Status is what happened to one tag and platform.
type Status string

// The statuses of a report item.
const (
	// Converted: the output directory was (re)written.
	Converted Status = "converted"
	// Unchanged: digest, options and files were as recorded; nothing was
	// fetched.
	Unchanged Status = "unchanged"
	// Failed: Item.Error says why; other images went on.
	Failed Status = "failed"
	// Pending: a dry run would convert it.
	Pending Status = "would-convert"
	// Interrupted: the run was cancelled before it finished.
	Interrupted Status = "interrupted"
)

// Report is what a run did, in the order of the sync file.
type Report struct {
	// File is the sync file, Output its output root.
	File   string `json:"file"`
	Output string `json:"output"`
	// Shard is "I/N" when the run converted shard I of N only.
	Shard string `json:"shard,omitempty"`
	// DryRun is set when nothing was converted, written or removed.
	DryRun bool `json:"dry_run,omitempty"`
	// Started and Seconds say when the run started and how long it took.
	Started time.Time `json:"started"`
	Seconds float64   `json:"seconds"`

	// Converted, Unchanged, Failed, Pending and Interrupted count the
	// images of each status.
	Converted   int `json:"converted"`
	Unchanged   int `json:"unchanged"`
	Failed      int `json:"failed"`
	Pending     int `json:"would_convert,omitempty"`
	Interrupted int `json:"interrupted,omitempty"`

	// Images has one item per tag and platform, plus one per image entry
	// whose tags could not be listed.
	Images []Item `json:"images"`
	// Pruned lists the output directories prune removed (or, in a dry run,
	// would remove).
	Pruned []Pruned `json:"pruned,omitempty"`
}

// Item is one tag and platform.
type Item struct {
	// Source is HOST/REPOSITORY:TAG (HOST/REPOSITORY for an entry whose
	// tags could not be listed), split into Registry, Repository and Tag.
	Source     string `json:"source"`
	Registry   string `json:"registry"`
	Repository string `json:"repository"`
	Tag        string `json:"tag,omitempty"`
	// Platform is os/arch[/variant].
	Platform string `json:"platform,omitempty"`
	// Dir is the output directory, relative to Report.Output.
	Dir string `json:"dir,omitempty"`
	// Status is what happened; Error says why it failed.
	Status Status `json:"status"`
	// Reason says why it was converted: new, digest changed, options
	// changed or output incomplete.
	Reason string `json:"reason,omitempty"`
	// Digest is the tag's digest (HEAD); PreviousDigest what the last
	// conversion recorded.
	Digest         string `json:"digest,omitempty"`
	PreviousDigest string `json:"previous_digest,omitempty"`
	// ManifestDigest is the platform manifest's digest, as in image.json.
	ManifestDigest string `json:"manifest_digest,omitempty"`
	// Built and Reused count the output's files made now and taken from the
	// cache.
	Built  int `json:"built,omitempty"`
	Reused int `json:"reused,omitempty"`
	// Seconds is how long the conversion took.
	Seconds float64 `json:"seconds,omitempty"`
	Error   string  `json:"error,omitempty"`
}

// Pruned is one output directory prune handled.
type Pruned struct {
	// Dir is the output directory, relative to Report.Output.
	Dir string `json:"dir"`
	// Source is the HOST/REPOSITORY:TAG last converted into it.
	Source string `json:"source"`
	// Removed is false in a dry run, and when files sync did not write kept
	// the directory (Note says which).
	Removed bool   `json:"removed"`
	Note    string `json:"note,omitempty"`
}

// OK reports whether every image was converted or unchanged.
func (r *Report) OK() bool { return r.Failed == 0 && r.Interrupted == 0 }

// count fills in the totals from the items.
func (r *Report) count() {
	r.Converted, r.Unchanged, r.Failed, r.Pending, r.Interrupted = 0, 0, 0, 0, 0
	for _, it := range r.Images {
		switch it.Status {
		case Converted:
			r.Converted++
		case Unchanged:
			r.Unchanged++
		case Failed:
			r.Failed++
		case Pending:
			r.Pending++
		case Interrupted:
			r.Interrupted++
		}
	}
}
