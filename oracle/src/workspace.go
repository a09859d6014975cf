package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// workspace is a scratch directory for the whole run: a bin directory first on this process's
// PATH (for the pg_ctl stand-in), a socket directory (PGHOST) and one PGDATA per Cluster.
// It is removed at exit.
type workspace struct {
	mu  sync.Mutex // held while a Cluster is derived, and by an interruption's cleanup
	dir string
	n   int
}

func newWorkspace() (*workspace, error) {
	dir, err := os.MkdirTemp("", "cnpg-plan-")
	if err != nil {
		return nil, fmt.Errorf("creating a scratch directory: %w", err)
	}
	w := &workspace{dir: dir}
	err = os.MkdirAll(filepath.Join(dir, "bin"), 0o700)
	if err == nil {
		err = os.Setenv("PATH", filepath.Join(dir, "bin"))
	}
	if err == nil {
		err = os.Setenv("PGHOST", filepath.Join(dir, "run"))
	}
	if err == nil {
		err = prepareWorkspace(w)
	}
	if err != nil {
		w.remove()
		return nil, fmt.Errorf("preparing the scratch directory: %w", err)
	}
	return w, nil
}

func (w *workspace) remove() { _ = os.RemoveAll(w.dir) }

// newPgData makes an empty PGDATA holding only PG_VERSION (what the instance manager reads
// the major version from).
func (w *workspace) newPgData(major int) (string, error) {
	w.n++
	dir := filepath.Join(w.dir, "pgdata-"+strconv.Itoa(w.n))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	return dir, os.WriteFile(filepath.Join(dir, "PG_VERSION"), []byte(strconv.Itoa(major)+"\n"), 0o600)
}

// readParameters reads the three extension-related GUCs back from a configuration file in the
// instance manager's format (`name = 'value'` lines, quotes doubled inside values).
func readParameters(path string) (*parameters, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the configuration the instance manager wrote: %w", err)
	}
	return parseParameters(path, string(raw))
}

func parseParameters(path, text string) (*parameters, error) {
	values := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		name, value, ok := strings.Cut(line, " = ")
		if !ok {
			continue
		}
		if len(value) < 2 || value[0] != '\'' || value[len(value)-1] != '\'' {
			return nil, fmt.Errorf("%s: unexpected line %q", path, line)
		}
		values[name] = strings.ReplaceAll(value[1:len(value)-1], "''", "'")
	}
	get := func(name string) *string {
		if v, ok := values[name]; ok {
			return &v
		}
		return nil
	}
	return &parameters{
		ExtensionControlPath:   get("extension_control_path"),
		DynamicLibraryPath:     get("dynamic_library_path"),
		SharedPreloadLibraries: get("shared_preload_libraries"),
	}, nil
}

// envSliceToMap turns NAME=VALUE entries into a map (the last entry of a name wins).
func envSliceToMap(env []string) map[string]string {
	out := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		out[k] = v
	}
	return out
}
