package e2e

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// registryBin is Debian's build of the distribution 2.x registry.
const registryBin = "/usr/bin/docker-registry"

const registryConfig = `version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
`

// startRegistry runs docker-registry on a free loopback port with its
// storage in a temporary directory, waits until /v2/ answers and returns its
// host:port. Cleanup kills the process.
func startRegistry(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(registryBin); err != nil {
		t.Skipf("no %s: install the docker-registry package", registryBin)
	}
	dir := t.TempDir()

	// Another process may take the free port before the registry binds it;
	// a fresh port on the next attempt fixes that.
	var errs []error
	for attempt := range 3 {
		addr, err := freeAddr()
		if err != nil {
			t.Fatalf("find free port: %v", err)
		}
		err = tryRegistry(t, dir, attempt, addr)
		if err == nil {
			return addr
		}
		errs = append(errs, err)
	}
	t.Fatalf("start registry: %v", errors.Join(errs...))
	return ""
}

func tryRegistry(t *testing.T, dir string, attempt int, addr string) error {
	t.Helper()
	storage := filepath.Join(dir, fmt.Sprintf("storage-%d", attempt))
	cfg := filepath.Join(dir, fmt.Sprintf("config-%d.yml", attempt))
	yml := fmt.Appendf(nil, registryConfig, storage, addr)
	if err := os.WriteFile(cfg, yml, 0o644); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	logPath := filepath.Join(dir, fmt.Sprintf("registry-%d.log", attempt))
	log, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("create log: %w", err)
	}

	cmd := exec.Command(registryBin, "serve", cfg)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = registryEnv()
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("run %s: %w", registryBin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	if err := waitReady(addr, exited); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		log.Close()
		out, _ := os.ReadFile(logPath)
		return fmt.Errorf("registry on %s: %w\n%s", addr, err, out)
	}

	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		log.Close()
		if t.Failed() {
			out, _ := os.ReadFile(logPath)
			t.Logf("registry log:\n%s", tail(string(out), 40))
		}
	})
	return nil
}

// registryEnv is the environment without REGISTRY_* variables, which would
// override the config file.
func registryEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REGISTRY_") {
			env = append(env, kv)
		}
	}
	return env
}

// waitReady polls http://addr/v2/ until it answers 200, the process exits or
// ten seconds pass.
func waitReady(addr string, exited <-chan error) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /v2/: %s", resp.Status)
		}
		select {
		case werr := <-exited:
			return fmt.Errorf("exited early: %v", werr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after 10s: %w", err)
		}
	}
}

// freeAddr returns a loopback host:port nothing listens on right now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
