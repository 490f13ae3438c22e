package e2e

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/oci2layers/oci2layers/internal/imagegen"
)

// TestKillRestart kills conversions of "cases" with SIGKILL at random
// moments and checks that the cache only ever holds finished entries, that
// no mksquashfs outlives the converter, and that the next run completes
// with a clean conversion's SIFs, sweeping what the killed runs left.
//
// Five rounds each start from an empty cache, kill two runs and then let
// one finish; a last round kills two runs on the complete cache. Every run
// writes to the same output directory. OCI2LAYERS_E2E_SEED repeats the
// random delays of an earlier run.
func TestKillRestart(t *testing.T) {
	requireBinary(t)
	requireMksquashfs(t)
	addr := startRegistry(t)
	img := standardImage(t, imagegen.Cases)
	ref := addr + "/cases:v1"
	if err := imagegen.Push(t.Context(), ref, img); err != nil {
		t.Fatal(err)
	}
	src := "docker://" + ref
	dir := t.TempDir()

	cleanOut := filepath.Join(dir, "clean-out")
	r := runBin(t, binOptions{}, convertArgs(src, cleanOut, filepath.Join(dir, "clean-cache"))...)
	checkExit(t, r, 0, nil)
	if t.Failed() {
		t.FailNow()
	}
	clean := sifDigests(t, cleanOut)
	span := r.Elapsed
	r = runBin(t, binOptions{}, convertArgs(src, cleanOut, filepath.Join(dir, "clean-cache"))...)
	checkExit(t, r, 0, nil)
	warmSpan := r.Elapsed

	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("OCI2LAYERS_E2E_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("OCI2LAYERS_E2E_SEED: %v", err)
		}
	}
	t.Logf("random delays from seed %d (OCI2LAYERS_E2E_SEED=%d repeats them); "+
		"a clean run takes %s, %s with a warm cache", seed, seed,
		span.Round(time.Millisecond), warmSpan.Round(time.Millisecond))
	rng := rand.New(rand.NewPCG(seed, 0))

	out := filepath.Join(dir, "out")
	const cold = 5
	for round := 1; round <= cold+1; round++ {
		cache := filepath.Join(dir, "cache-"+strconv.Itoa(min(round, cold)))
		name, limit := "cold-"+strconv.Itoa(round), span
		if round > cold {
			name, limit = "warm", warmSpan
		}
		t.Run(name, func(t *testing.T) {
			args := convertArgs(src, out, cache)
			for range 2 {
				delay := time.Duration(rng.Int64N(int64(limit)))
				killAfter(t, delay, cache, args)
				checkFinishedEntries(t, cache)
				checkNoStrayMksquashfs(t, cache)
			}
			r := runBin(t, binOptions{}, args...)
			checkExit(t, r, 0, nil)
			if r.Code != 0 {
				return
			}
			checkContract(t, readResult(t, out), contract{Source: src, Image: img})
			compareSIFs(t, sifDigests(t, out), clean)
			checkNoRunDirs(t, cache)
			checkNoTemps(t, cache)
			checkNoTemps(t, out)
			checkFinishedEntries(t, cache)
		})
	}
}

// killAfter runs the binary with args and sends it SIGKILL after delay,
// unless it has finished by then, in which case it must have succeeded. It
// logs what the kill interrupted: the mksquashfs processes running on cache
// and the work directories left in it.
func killAfter(t *testing.T, delay time.Duration, cache string, args []string) {
	t.Helper()
	cmd := exec.Command(requireBinary(t), args...)
	cmd.Env = hermeticEnv(t)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start oci2layers: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	timer := time.NewTimer(delay)
	defer timer.Stop()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("oci2layers finished before the kill at %s: %v\n%s", delay, err,
				stderr.String())
		}
		t.Logf("oci2layers finished before the kill at %s", delay.Round(time.Millisecond))
	case <-timer.C:
		squashing := len(mksquashfsUsing(cache))
		if err := cmd.Process.Signal(syscall.SIGKILL); errors.Is(err, os.ErrProcessDone) {
			// It ended in the same instant: a completed run, not a kill.
			if err := <-done; err != nil {
				t.Errorf("oci2layers failed just before the kill at %s: %v\n%s", delay, err,
					stderr.String())
			}
			return
		} else if err != nil {
			t.Fatalf("kill oci2layers (pid %d): %v", cmd.Process.Pid, err)
		}
		<-done
		runDirs, _ := filepath.Glob(filepath.Join(cache, "v1", "tmp", "run-*"))
		t.Logf("killed oci2layers (pid %d) after %s, with %d mksquashfs running; "+
			"%d run directories left", cmd.Process.Pid, delay.Round(time.Millisecond),
			squashing, len(runDirs))
	}
}

// checkNoStrayMksquashfs checks that no mksquashfs writing into cache is
// running: a killed converter's children must die with it. Strays are
// killed by pid.
func checkNoStrayMksquashfs(t *testing.T, cache string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		strays := mksquashfsUsing(cache)
		if len(strays) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for pid, argv := range strays {
				t.Errorf("mksquashfs (pid %d) outlived the killed converter: %s", pid, argv)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// mksquashfsUsing returns the running mksquashfs processes that name a path
// under dir in their arguments, by pid.
func mksquashfsUsing(dir string) map[int]string {
	out := map[int]string{}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if filepath.Base(argv[0]) == "mksquashfs" && strings.Contains(string(raw), dir) {
			out[pid] = strings.Join(argv, " ")
		}
	}
	return out
}
