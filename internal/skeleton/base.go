package skeleton

// envLoop sources the image's environment scripts in glob (that is, name)
// order; every action script runs it first.
const envLoop = `for script in /.singularity.d/env/*.sh; do
    if [ -f "$script" ]; then
        . "$script"
    fi
done
`

// sourceEnv is the opening of the action scripts.
const sourceEnv = "#!/bin/sh\n\n" + envLoop

// actionExec is /.singularity.d/actions/exec.
const actionExec = sourceEnv + `
exec "$@"
`

// actionRun is /.singularity.d/actions/run.
const actionRun = sourceEnv + `
if test -n "${SINGULARITY_APPNAME:-}"; then

    if test -x "/scif/apps/${SINGULARITY_APPNAME:-}/scif/runscript"; then
        exec "/scif/apps/${SINGULARITY_APPNAME:-}/scif/runscript" "$@"
    elif test -x "/scif/apps/singularity/scif/runscript"; then
        exec "/scif/apps/singularity/scif/runscript" "$@"
    else
        echo "No Apptainer runscript for contained app: ${SINGULARITY_APPNAME:-}"
        exit 1
    fi

elif test -x "/.singularity.d/runscript"; then
    exec "/.singularity.d/runscript" "$@"
else
    echo "No Apptainer runscript found, executing /bin/sh"
    exec /bin/sh "$@"
fi
`

// actionShell is /.singularity.d/actions/shell.
const actionShell = sourceEnv + `
if test -n "$SINGULARITY_SHELL" -a -x "$SINGULARITY_SHELL"; then
    exec $SINGULARITY_SHELL "$@"

    echo "ERROR: Failed running shell as defined by '\$SINGULARITY_SHELL'" 1>&2
    exit 1

elif test -x /bin/bash; then
    SHELL=/bin/bash
    PS1="Apptainer $APPTAINER_NAME:\\w> "
    export SHELL PS1
    exec /bin/bash --norc "$@"
elif test -x /bin/sh; then
    SHELL=/bin/sh
    export SHELL
    exec /bin/sh "$@"
else
    echo "ERROR: /bin/sh does not exist in container" 1>&2
fi
exit 1
`

// actionStart is /.singularity.d/actions/start. It wakes the instance's
// PID 1 before anything else.
const actionStart = `#!/bin/sh

# if we are here start notify PID 1 to continue
# DON'T REMOVE
kill -CONT 1

` + envLoop + `
if test -x "/.singularity.d/startscript"; then
    exec "/.singularity.d/startscript"
fi
`

// actionTest is /.singularity.d/actions/test.
const actionTest = sourceEnv + `
if test -n "${SINGULARITY_APPNAME:-}"; then

    if test -x "/scif/apps/${SINGULARITY_APPNAME:-}/scif/test"; then
        exec "/scif/apps/${SINGULARITY_APPNAME:-}/scif/test" "$@"
    elif test -x "/scif/apps/singularity/scif/test"; then
        exec "/scif/apps/singularity/scif/test" "$@"
    else
        echo "No tests for contained app: ${SINGULARITY_APPNAME:-}"
        exit 1
    fi
elif test -x "/.singularity.d/test"; then
    exec "/.singularity.d/test" "$@"
else
    echo "No test found in container, executing /bin/sh -c true"
    exec /bin/sh -c true
fi
`

// env01Base is /.singularity.d/env/01-base.sh; Apptainer's holds only
// comments.
const env01Base = `#!/bin/sh
`

// env90Environment is /.singularity.d/env/90-environment.sh, where a
// definition file's %environment section would go.
const env90Environment = `#!/bin/sh
# Custom environment shell code should follow
`

// env95Apps is /.singularity.d/env/95-apps.sh: it sets up the SCIF app
// chosen with --app.
const env95Apps = `#!/bin/sh

if test -n "${SINGULARITY_APPNAME:-}"; then

    # The active app should be exported
    export SINGULARITY_APPNAME

    if test -d "/scif/apps/${SINGULARITY_APPNAME:-}/"; then
        SCIF_APPS="/scif/apps"
        SCIF_APPROOT="/scif/apps/${SINGULARITY_APPNAME:-}"
        export SCIF_APPROOT SCIF_APPS
        PATH="/scif/apps/${SINGULARITY_APPNAME:-}:/scif/apps/singularity:$PATH"

        # Automatically add application bin to path
        if test -d "/scif/apps/${SINGULARITY_APPNAME:-}/bin"; then
            PATH="/scif/apps/${SINGULARITY_APPNAME:-}/bin:$PATH"
        elif test -d "/scif/apps/singularity/bin"; then
            PATH="/scif/apps/singularity/bin:$PATH"
        fi

        # Automatically add application lib to LD_LIBRARY_PATH
        if test -d "/scif/apps/${SINGULARITY_APPNAME:-}/lib"; then
            LD_LIBRARY_PATH="/scif/apps/${SINGULARITY_APPNAME:-}/lib:$LD_LIBRARY_PATH"
            export LD_LIBRARY_PATH
        elif test -d "/scif/apps/singularity/lib"; then
            LD_LIBRARY_PATH="/scif/apps/singularity/lib:$LD_LIBRARY_PATH"
            export LD_LIBRARY_PATH
        fi

        # Automatically source environment
        if [ -f "/scif/apps/${SINGULARITY_APPNAME:-}/scif/env/01-base.sh" ]; then
            . "/scif/apps/${SINGULARITY_APPNAME:-}/scif/env/01-base.sh"
        elif [ -f "/scif/apps/singularity/scif/env/01-base.sh" ]; then
            . "/scif/apps/singularity/scif/env/01-base.sh" "$@"
        fi
        if [ -f "/scif/apps/${SINGULARITY_APPNAME:-}/scif/env/90-environment.sh" ]; then
            . "/scif/apps/${SINGULARITY_APPNAME:-}/scif/env/90-environment.sh"
        elif [ -f "/scif/apps/singularity/scif/env/90-environment.sh" ]; then
            . "/scif/apps/singularity/scif/env/90-environment.sh" "$@"
        fi

        export PATH
    else
        echo "Could not locate the container application: ${SINGULARITY_APPNAME}"
        exit 1
    fi
fi
`

// env99Base is /.singularity.d/env/99-base.sh: it makes the libraries
// Apptainer binds into /.singularity.d/libs (e.g. with --nv) visible.
const env99Base = `#!/bin/sh

if [ -z "${LD_LIBRARY_PATH:-}" ]; then
    LD_LIBRARY_PATH="/.singularity.d/libs"
else
    LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/.singularity.d/libs"
fi

if [ -z "${PS1:-}" ]; then
    PS1="Apptainer> "
fi
export LD_LIBRARY_PATH PS1
`

// env99RuntimeVars is /.singularity.d/env/99-runtimevars.sh: it applies the
// PATH the user asked for with --env PATH, APPTAINERENV_PREPEND_PATH or
// APPTAINERENV_APPEND_PATH, after the image's scripts have set theirs.
const env99RuntimeVars = `#!/bin/sh

if [ -n "${SING_USER_DEFINED_PREPEND_PATH:-}" ]; then
	PATH="${SING_USER_DEFINED_PREPEND_PATH}:${PATH}"
fi

if [ -n "${SING_USER_DEFINED_APPEND_PATH:-}" ]; then
	PATH="${PATH}:${SING_USER_DEFINED_APPEND_PATH}"
fi

if [ -n "${SING_USER_DEFINED_PATH:-}" ]; then
	PATH="${SING_USER_DEFINED_PATH}"
fi

unset SING_USER_DEFINED_PREPEND_PATH \
	  SING_USER_DEFINED_APPEND_PATH \
	  SING_USER_DEFINED_PATH

export PATH
`

// defaultRunscript is the runscript of an image with no run configuration;
// [Config] always replaces it.
const defaultRunscript = `#!/bin/sh

echo "There is no runscript defined for this container\n";
`

// defaultStartscript is the startscript: Apptainer starts instances of
// images built from OCI images with nothing to run.
const defaultStartscript = `#!/bin/sh
`

// Paths of the files Config overrides.
const (
	runscriptPath = ".singularity.d/runscript"
	labelsPath    = ".singularity.d/labels.json"
	envDir        = ".singularity.d/env"
	dockerEnvPath = envDir + "/10-docker2singularity.sh"
)

// Base returns the runtime skeleton that goes into base.sif's primary
// partition on top of the image's bottom layers (see the package doc for the
// list). The entries are sorted by path so that a directory comes right
// before its contents, and are the same on every call; each call returns new
// headers the caller may change.
//
// As in Apptainer, directories and symlinks are marked IfMissing, and files
// are not: Apptainer truncates an image's /etc/hosts and /etc/resolv.conf
// and overwrites any /.singularity.d scripts the image has. Directories are
// 0755 (also tmp and var/tmp, as Apptainer makes them), scripts 0755,
// labels.json, hosts and resolv.conf 0644.
func Base() []Entry {
	entries := []Entry{
		dir(".singularity.d", 0o755, true),
		dir(".singularity.d/actions", 0o755, true),
		dir(envDir, 0o755, true),
		dir(".singularity.d/libs", 0o755, true),
		file(".singularity.d/actions/exec", 0o755, actionExec),
		file(".singularity.d/actions/run", 0o755, actionRun),
		file(".singularity.d/actions/shell", 0o755, actionShell),
		file(".singularity.d/actions/start", 0o755, actionStart),
		file(".singularity.d/actions/test", 0o755, actionTest),
		file(envDir+"/01-base.sh", 0o755, env01Base),
		file(envDir+"/90-environment.sh", 0o755, env90Environment),
		file(envDir+"/95-apps.sh", 0o755, env95Apps),
		file(envDir+"/99-base.sh", 0o755, env99Base),
		file(envDir+"/99-runtimevars.sh", 0o755, env99RuntimeVars),
		file(runscriptPath, 0o755, defaultRunscript),
		file(".singularity.d/startscript", 0o755, defaultStartscript),
		file(labelsPath, 0o644, "{}"),

		symlink("singularity", ".singularity.d/runscript", true),
		symlink(".run", ".singularity.d/actions/run", true),
		symlink(".exec", ".singularity.d/actions/exec", true),
		symlink(".test", ".singularity.d/actions/test", true),
		symlink(".shell", ".singularity.d/actions/shell", true),
		symlink("environment", ".singularity.d/env/90-environment.sh", true),
	}
	mountPoints := []string{"dev", "proc", "root", "var", "var/tmp", "tmp", "etc", "sys", "home"}
	for _, name := range mountPoints {
		entries = append(entries, dir(name, 0o755, true))
	}
	entries = append(entries,
		file("etc/hosts", 0o644, ""),
		file("etc/resolv.conf", 0o644, ""),
	)

	sortEntries(entries)
	return entries
}
