package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/oci2layers/oci2layers/internal/cache"
)

func keyOf(s string) v1.Hash {
	sum := sha256.Sum256([]byte(s))
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

func TestParseAge(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{in: "0s"},
		{in: "720h", want: 720 * time.Hour},
		{in: "30d", want: 30 * 24 * time.Hour},
		{in: "1d12h", want: 36 * time.Hour},
		{in: "0d", want: 0},
		{in: "90m", want: 90 * time.Minute},
		{in: "-1h", wantErr: true},
		{in: "d", wantErr: true},
		{in: "1.5d", wantErr: true},
		{in: "soon", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseAge(tt.in)
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("parseAge(%q) error = %v, want an error: %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("parseAge(%q) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}

// TestCacheExitCodes runs the cache commands in-process on a small cache and
// checks their exit codes.
func TestCacheExitCodes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	c, err := cache.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	// 20 keys: two of them start with the same hex digit.
	first := map[byte]int{}
	shared := ""
	for i := range 20 {
		d := keyOf(fmt.Sprint(i)).Hex[0]
		if first[d]++; first[d] == 2 {
			shared = string(d)
		}
		err := c.Put(cache.Layer, keyOf(fmt.Sprint(i)), func(w *os.File) error {
			_, err := fmt.Fprint(w, i)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	damaged := filepath.Join(dir, "v1", "layers", "sha256", keyOf("0").Hex+".sif")

	tests := []struct {
		name string
		args []string
		want int
	}{
		{"ls", []string{"cache", "ls", "--cache", dir}, exitOK},
		{"du json", []string{"cache", "du", "--cache", dir, "--json"}, exitOK},
		{"verify clean", []string{"cache", "verify", "--cache", dir}, exitOK},
		{"no command", []string{"cache"}, exitUsage},
		{"unknown command", []string{"cache", "prune"}, exitUsage},
		{"missing cache", []string{"cache", "ls", "--cache", dir + "-none"}, exitFailure},
		{"bad age", []string{"cache", "gc", "--cache", dir, "--older-than", "soon"}, exitUsage},
		{"rm no key", []string{"cache", "rm", "--cache", dir}, exitUsage},
		{"rm bad key", []string{"cache", "rm", "--cache", dir, "tag"}, exitUsage},
		{"rm empty key", []string{"cache", "rm", "--cache", dir, "sha256:"}, exitUsage},
		{"rm ambiguous", []string{"cache", "rm", "--cache", dir, shared}, exitUsage},
		{"rm absent", []string{"cache", "rm", "--cache", dir, "layers/" + keyOf("x").Hex},
			exitNotFound},
		{"rm", []string{"cache", "rm", "--cache", dir, keyOf("1").Hex[:16]}, exitOK},
		{"damage", nil, 0},
		{"verify damaged", []string{"cache", "verify", "--cache", dir}, exitVerify},
		{"verify repair", []string{"cache", "verify", "--cache", dir, "--repair"}, exitOK},
		{"verify repaired", []string{"cache", "verify", "--cache", dir}, exitOK},
		{"gc", []string{"cache", "gc", "--cache", dir, "--older-than", "0s"}, exitOK},
	}
	for _, tt := range tests {
		if tt.args == nil {
			if err := os.WriteFile(damaged, []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if got := run(t.Context(), tt.args, &stdout, &stderr); got != tt.want {
				t.Errorf("%q: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", tt.args, got, tt.want,
					stdout.String(), stderr.String())
			}
		})
	}
}
