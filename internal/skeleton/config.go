package skeleton

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Config returns the config overlay's entries for an image config, sorted
// like [Base]'s: the directories .singularity.d and .singularity.d/env
// (0755), and .singularity.d/env/10-docker2singularity.sh (0755),
// .singularity.d/runscript (0755) and .singularity.d/labels.json (0644).
// WORKDIR and USER are not used: Apptainer's native runtime ignores them.
//
// 10-docker2singularity.sh exports each ENV variable. PATH is set outright;
// any other variable only when it is unset or empty when the script is
// sourced (export NAME="${NAME:-"value"}"), so that a value the runtime set
// before wins over the image's. An entry without "=" exports the variable
// as it is, empty when unset. As in Apptainer, an entry whose name is not a valid shell name
// (letters, digits and "_", not starting with a digit) cannot be exported
// by sh and is left out.
//
// The runscript runs ENTRYPOINT followed by CMD; arguments given to it
// replace CMD. It behaves as Apptainer's: by default the command line is
// evaluated by the shell once (ENTRYPOINT and CMD elements stay literal,
// the arguments are expanded: "$HOME" becomes the home directory); with
// SINGULARITY_NO_EVAL set (apptainer run --no-eval) nothing is evaluated.
// With neither ENTRYPOINT nor CMD it runs its arguments, or nothing.
//
// labels.json holds the labels as a JSON object with sorted keys and tab
// indents, as Apptainer writes it, and "{}" when there are none.
func Config(cfg *v1.ConfigFile) ([]Entry, error) {
	if cfg == nil {
		return nil, errors.New("make config overlay: nil image config")
	}
	labels, err := labelsJSON(cfg.Config.Labels)
	if err != nil {
		return nil, fmt.Errorf("make config overlay: %w", err)
	}

	entries := []Entry{
		dir(".singularity.d", 0o755, false),
		dir(envDir, 0o755, false),
		file(dockerEnvPath, 0o755, envScript(cfg.Config.Env)),
		file(runscriptPath, 0o755, runscript(cfg.Config.Entrypoint, cfg.Config.Cmd)),
		file(labelsPath, 0o644, labels),
	}
	sortEntries(entries)
	return entries, nil
}

// envScript returns the text of 10-docker2singularity.sh for the ENV list.
func envScript(env []string) string {
	var b strings.Builder
	b.WriteString("#!/bin/sh\n")
	for _, kv := range env {
		name, value, hasValue := strings.Cut(kv, "=")
		if !validName(name) {
			continue
		}
		switch {
		case !hasValue:
			fmt.Fprintf(&b, "export %s=\"${%s:-}\"\n", name, name)
		case name == "PATH":
			fmt.Fprintf(&b, "export %s=%s\n", name, doubleQuote(value))
		default:
			fmt.Fprintf(&b, "export %s=\"${%s:-%s}\"\n", name, name, doubleQuote(value))
		}
	}
	return b.String()
}

// validName reports whether name is a shell variable name.
func validName(name string) bool {
	if name == "" || isDigit(name[0]) {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c != '_' && !isDigit(c) && !('a' <= c && c <= 'z') && !('A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// isDigit reports whether c is an ASCII digit.
func isDigit(c byte) bool {
	return '0' <= c && c <= '9'
}

// doubleQuote returns s in double quotes, with the four characters that keep
// a special meaning there (\ " ` $) escaped, so that sh reads s back
// literally, also inside "${NAME:-...}".
func doubleQuote(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\', '"', '`', '$':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}

// singleQuote returns s in single quotes, each single quote in s written as
// '"'"', so that sh reads s back literally.
func singleQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}

// labelsJSON returns labels as Apptainer writes labels.json.
func labelsJSON(labels map[string]string) (string, error) {
	if len(labels) == 0 {
		return "{}", nil
	}
	text, err := json.MarshalIndent(labels, "", "\t")
	if err != nil {
		return "", fmt.Errorf("encode labels: %w", err)
	}
	return string(text), nil
}
