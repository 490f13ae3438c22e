package convert

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"

	"github.com/oci2layers/oci2layers/internal/atomicfile"
	"github.com/oci2layers/oci2layers/internal/sifwriter"
)

// lowerFiles reads single files out of cached SIFs, for hard links whose
// target only a lower layer has. unsquashfs cannot read at an offset, so each
// SIF's partition is copied once to a temporary squashfs file.
type lowerFiles struct {
	dir string

	mu    sync.Mutex
	files map[string]string // SIF path -> squashfs copy
}

func newLowerFiles(dir string) *lowerFiles {
	return &lowerFiles{dir: dir, files: map[string]string{}}
}

func (l *lowerFiles) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.files {
		os.Remove(p)
	}
}

// open streams the file at path (relative to the image root) from the SIF.
func (l *lowerFiles) open(ctx context.Context, sif, path string) (io.ReadCloser, error) {
	sqfs, err := l.squashfs(sif)
	if err != nil {
		return nil, err
	}
	// TODO: unsquashfs reads its arguments as wildcard patterns, so a name
	// with *, ? or [ fails to copy up; a Go squashfs reader would avoid it.
	cmd := exec.CommandContext(ctx, "unsquashfs", "-cat", sqfs, path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start unsquashfs: %w", err)
	}
	return &catReader{ReadCloser: out, cmd: cmd, stderr: &stderr}, nil
}

func (l *lowerFiles) squashfs(sif string) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p, ok := l.files[sif]; ok {
		return p, nil
	}
	part, _, err := sifwriter.Partition(sif)
	if err != nil {
		return "", err
	}
	defer part.Close()
	f, err := os.CreateTemp(l.dir, atomicfile.TempPrefix+"lower-*.sqfs")
	if err != nil {
		return "", err
	}
	_, err = io.Copy(f, part)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("copy partition of %s: %w", sif, err)
	}
	l.files[sif] = f.Name()
	return f.Name(), nil
}

// catReader waits for unsquashfs when closed and reports its failure.
type catReader struct {
	io.ReadCloser
	cmd    *exec.Cmd
	stderr *bytes.Buffer
}

func (c *catReader) Close() error {
	io.Copy(io.Discard, c.ReadCloser)
	if err := c.cmd.Wait(); err != nil {
		return fmt.Errorf("unsquashfs -cat: %w: %s", err, bytes.TrimSpace(c.stderr.Bytes()))
	}
	return nil
}
