package skeleton

import (
	"fmt"
	"strings"
)

// noEvalHead opens the branch of the runscript taken under --no-eval.
const noEvalHead = `
# When SINGULARITY_NO_EVAL set, use OCI compatible behavior that does
# not evaluate resolved CMD / ENTRYPOINT / ARGS through the shell, and
# does not modify expected quoting behavior of args.
if [ -n "$SINGULARITY_NO_EVAL" ]; then
`

// evalTail is the default branch of the runscript: the words of
// ENTRYPOINT and CMD (quoted in OCI_ENTRYPOINT and OCI_CMD) or ENTRYPOINT
// and the arguments (quoted here, not escaped) go through eval once.
//
// Apptainer's has two more blocks before the last if, for ENTRYPOINT only
// and CMD only, whose result the last if always overwrites; and it runs
// "set" without "--", which prints every shell variable when there is no
// ENTRYPOINT, CMD or argument. The --no-eval branch falls through to here
// in that case too, as "exec" with no command returns.
const evalTail = `
# Standard Apptainer behavior evaluates CMD / ENTRYPOINT / ARGS
# combination through shell before exec, and requires special quoting
# due to concatenation of CMDLINE_ARGS.
CMDLINE_ARGS=""
# prepare command line arguments for evaluation
for arg in "$@"; do
    CMDLINE_ARGS="${CMDLINE_ARGS} \"$arg\""
done

# ENTRYPOINT and CMD - run ENTRYPOINT with CMD as default args
# override with user provided args
if [ $# -gt 0 ]; then
    SINGULARITY_OCI_RUN="${OCI_ENTRYPOINT} ${CMDLINE_ARGS}"
else
    SINGULARITY_OCI_RUN="${OCI_ENTRYPOINT} ${OCI_CMD}"
fi

# Evaluate shell expressions first and set arguments accordingly,
# then execute final command as first container process
eval "set -- ${SINGULARITY_OCI_RUN}"
exec "$@"
`

// runscript returns the text of /.singularity.d/runscript for an image's
// ENTRYPOINT and CMD.
func runscript(entrypoint, cmd []string) string {
	var b strings.Builder
	b.WriteString("#!/bin/sh\n")
	fmt.Fprintf(&b, "OCI_ENTRYPOINT=%s\n", singleQuote(evalWords(entrypoint)))
	fmt.Fprintf(&b, "OCI_CMD=%s\n", singleQuote(evalWords(cmd)))
	writeNoEval(&b, entrypoint, cmd)
	b.WriteString(evalTail)
	return b.String()
}

// writeNoEval writes the --no-eval branch of the runscript, which puts the
// elements of ENTRYPOINT and CMD in front of the arguments with "set --"
// and runs the result as it is.
func writeNoEval(b *strings.Builder, entrypoint, cmd []string) {
	b.WriteString(noEvalHead)

	b.WriteString(`    # ENTRYPOINT only - run entrypoint plus args
    if [ -z "$OCI_CMD" ] && [ -n "$OCI_ENTRYPOINT" ]; then
`)
	writePrepend(b, entrypoint, 8)
	b.WriteString(`        exec "$@"
    fi

    # CMD only - run CMD or override with args
    if [ -n "$OCI_CMD" ] && [ -z "$OCI_ENTRYPOINT" ]; then
`)
	if len(cmd) > 0 {
		b.WriteString("        if [ $# -eq 0 ]; then\n")
		writePrepend(b, cmd, 12)
		b.WriteString("        fi\n")
	}
	b.WriteString(`        exec "$@"
    fi

    # ENTRYPOINT and CMD - run ENTRYPOINT with CMD as default args
    # override with user provided args
`)
	switch {
	case len(entrypoint) > 0:
		b.WriteString("    if [ $# -gt 0 ]; then\n")
		writePrepend(b, entrypoint, 8)
		b.WriteString("    else\n")
		writePrepend(b, cmd, 8)
		writePrepend(b, entrypoint, 8)
		b.WriteString("    fi\n")
	case len(cmd) > 0:
		b.WriteString("    if [ $# -eq 0 ]; then\n")
		writePrepend(b, cmd, 8)
		b.WriteString("    fi\n")
	}
	b.WriteString("    exec \"$@\"\nfi\n")
}

// writePrepend writes, indented, the "set --" lines that put words in
// front of the positional parameters, last word first.
func writePrepend(b *strings.Builder, words []string, indent int) {
	pad := strings.Repeat(" ", indent)
	for i := len(words) - 1; i >= 0; i-- {
		fmt.Fprintf(b, "%sset -- %s \"$@\"\n", pad, singleQuote(words[i]))
	}
}

// evalWords returns words double-quoted and joined with spaces, so that
// eval "set -- WORDS" sets them as positional parameters literally.
func evalWords(words []string) string {
	quoted := make([]string, len(words))
	for i, w := range words {
		quoted[i] = doubleQuote(w)
	}
	return strings.Join(quoted, " ")
}
