// Package examples checks that the example files in this directory parse:
// the sync files as sync files, the Kubernetes manifests as YAML and the
// Slurm script as bash.
package examples

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/oci2layers/oci2layers/internal/mirror"
)

func TestSyncFile(t *testing.T) {
	cfg, err := mirror.Load("sync.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Images) == 0 {
		t.Error("sync.yaml names no image")
	}
}

func TestSlurmScript(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash to check the script with")
	}
	if out, err := exec.Command(bash, "-n", "slurm-sync.sbatch").CombinedOutput(); err != nil {
		t.Fatalf("bash -n slurm-sync.sbatch: %v\n%s", err, out)
	}
	b, err := os.ReadFile("slurm-sync.sbatch")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"#SBATCH --array=1-",
		`--shard "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT"`, "--cache-from", "--cache-to"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("slurm-sync.sbatch lacks %q", want)
		}
	}
}

// manifest is the part of a Kubernetes object the test reads.
type manifest struct {
	Kind string `yaml:"kind"`
	Data map[string]string
	Spec struct {
		CompletionMode string `yaml:"completionMode"`
		Completions    int    `yaml:"completions"`
		Parallelism    int    `yaml:"parallelism"`
		Template       struct {
			Spec struct {
				Containers []struct {
					Env []struct {
						Name  string `yaml:"name"`
						Value string `yaml:"value"`
					} `yaml:"env"`
					Args []string `yaml:"args"`
				} `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

func TestKubernetesJob(t *testing.T) {
	f, err := os.Open("k8s-sync-job.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	kinds := map[string]manifest{}
	for {
		var m manifest
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("k8s-sync-job.yaml: %v", err)
		}
		kinds[m.Kind] = m
	}
	for _, kind := range []string{"ConfigMap", "PersistentVolumeClaim", "Job"} {
		if _, ok := kinds[kind]; !ok {
			t.Errorf("no %s", kind)
		}
	}

	if _, err := mirror.Parse([]byte(kinds["ConfigMap"].Data["sync.yaml"]),
		"/etc/oci2layers/sync.yaml"); err != nil {
		t.Errorf("the ConfigMap's sync.yaml: %v", err)
	}

	job := kinds["Job"].Spec
	if job.CompletionMode != "Indexed" || job.Completions != job.Parallelism ||
		len(job.Template.Spec.Containers) != 1 {
		t.Fatalf("job spec %+v", job)
	}
	c := job.Template.Spec.Containers[0]
	for _, e := range c.Env {
		if e.Name == "SHARDS" && e.Value != strconv.Itoa(job.Completions) {
			t.Errorf("SHARDS=%s, completions %d", e.Value, job.Completions)
		}
	}
	args := strings.Join(c.Args, " ")
	if !strings.Contains(args, `--shard "$((JOB_COMPLETION_INDEX + 1))/$SHARDS"`) {
		t.Errorf("the container does not pass --shard: %s", args)
	}
}
