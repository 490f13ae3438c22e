package convert

import (
	"os"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// spools shares downloaded blobs between the conversions one process runs at
// once (sync runs many), so that a layer two images need at the same moment
// is downloaded once: a run that finds a layer's index already cached looks
// here before downloading the blob again.
// Other processes find a verified blob by its name in this run's work
// directory (Cache.OpenPeer) for as long as the run lasts.
var spools = spoolTable{byDigest: map[v1.Hash]*spool{}}

// spool is a verified blob in a run's work directory, removed when the last
// run holding it lets go.
type spool struct {
	path string
	refs int
}

type spoolTable struct {
	mu       sync.Mutex
	byDigest map[v1.Hash]*spool
}

// add registers a freshly downloaded blob and returns the path to use: the
// one already registered when another run was quicker (path is then
// removed).
func (t *spoolTable) add(digest v1.Hash, path string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s, ok := t.byDigest[digest]; ok {
		s.refs++
		os.Remove(path)
		return s.path
	}
	t.byDigest[digest] = &spool{path: path, refs: 1}
	return path
}

// get takes a reference to a registered blob, if there is one.
func (t *spoolTable) get(digest v1.Hash) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.byDigest[digest]
	if !ok {
		return "", false
	}
	s.refs++
	return s.path, true
}

// release drops a reference; the last one removes the file.
func (t *spoolTable) release(digest v1.Hash) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.byDigest[digest]
	if !ok {
		return
	}
	if s.refs--; s.refs <= 0 {
		os.Remove(s.path)
		delete(t.byDigest, digest)
	}
}
