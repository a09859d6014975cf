// Command cnpg-plan is the oracle: it feeds Cluster manifests (and the image catalogs they
// name) to CloudNativePG's own packages, at the exact operator version it was built against,
// and prints what those packages derive for the `postgres` container of an instance.
//
// It is built once per operator version (see ../cnpg-plan); nothing of the operator is copied
// here, every derivation goes through the module's importable packages.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

// Exit codes (the contract, see ../README.md).
const (
	exitOK          = 0
	exitBadInput    = 2
	exitEnvironment = 3
)

// schemaVersion is bumped when the JSON shape changes incompatibly.
const schemaVersion = 1

// usageError is bad input or a bad command line: exit 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func main() {
	// In the instance-manager variant this program is also the pg_ctl the instance manager
	// starts (src/im-run); that run only records its environment.
	if code, ok := runAsStandIn(filepath.Base(os.Args[0]), os.Args[1:]); ok {
		os.Exit(code)
	}
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	opts, err := parseArgs(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cnpg-plan: %v\n", err)
		fmt.Fprint(os.Stderr, usageText)
		return exitBadInput
	}
	if opts.version != "" && opts.version != builtVersion() {
		fmt.Fprintf(os.Stderr,
			"cnpg-plan: this binary is built against CloudNativePG %s, not %s; run it through oracle/cnpg-plan\n",
			builtVersion(), opts.version)
		return exitEnvironment
	}

	out := output{
		Schema:      schemaVersion,
		CnpgVersion: builtVersion(),
		Substituted: substitutions(),
		Clusters:    []clusterPlan{},
	}
	// From here on an interruption is held until the scratch directory exists, then removes it.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	docs, err := readInputs(opts.files)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cnpg-plan: %v\n", err)
		return exitBadInput
	}
	if len(docs.clusters) == 0 {
		fmt.Fprintf(os.Stderr,
			"cnpg-plan: no Cluster (apiVersion postgresql.cnpg.io/v1) in %s; give at least one Cluster manifest\n",
			strings.Join(opts.files, ", "))
		return exitBadInput
	}

	work, err := newWorkspace()
	if err != nil {
		fmt.Fprintf(os.Stderr, "cnpg-plan: %v\n", err)
		return exitEnvironment
	}
	defer work.remove()
	removeOnSignal(work, signals)

	for _, doc := range docs.clusters {
		work.mu.Lock() // an interruption waits for this Cluster's files, then removes them all
		plan, err := deriveGuarded(work, doc, docs, opts.inheritedEnv)
		work.mu.Unlock()
		if err != nil {
			var envErr environmentError
			if errors.As(err, &envErr) {
				fmt.Fprintf(os.Stderr, "cnpg-plan: %s: %v\n", doc.file, err)
				return exitEnvironment
			}
			fmt.Fprintf(os.Stderr, "cnpg-plan: %s: %v\n", doc.file, err)
			return exitBadInput
		}
		out.Clusters = append(out.Clusters, plan)
	}

	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(out); err != nil {
		fmt.Fprintf(os.Stderr, "cnpg-plan: writing the output: %v\n", err)
		return exitEnvironment
	}
	return exitOK
}

type options struct {
	version      string
	files        []string
	inheritedEnv []string
}

const usageText = `usage: cnpg-plan [--cnpg-version V] [--inherited-env K=V]... FILE...
  Prints, as JSON, what CloudNativePG's own packages derive for the postgres container of
  every Cluster in FILE... (multi-document YAML; ImageCatalog / ClusterImageCatalog documents
  in the same files are used for catalog references).
  --inherited-env K=V   the instance manager's own environment variable K (repeatable);
                        LD_LIBRARY_PATH / PATH are appended to it as the operator does
`

func parseArgs(args []string) (options, error) {
	var o options
	for i := 0; i < len(args); i++ {
		a := args[i]
		value := func(name string) (string, error) {
			if v, ok := strings.CutPrefix(a, name+"="); ok {
				return v, nil
			}
			if i+1 >= len(args) {
				return "", usageError{fmt.Sprintf("%s needs a value", name)}
			}
			i++
			return args[i], nil
		}
		switch {
		case a == "--cnpg-version" || strings.HasPrefix(a, "--cnpg-version="):
			v, err := value("--cnpg-version")
			if err != nil {
				return o, err
			}
			o.version = strings.TrimPrefix(v, "v")
		case a == "--inherited-env" || strings.HasPrefix(a, "--inherited-env="):
			v, err := value("--inherited-env")
			if err != nil {
				return o, err
			}
			if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
				return o, usageError{fmt.Sprintf("--inherited-env %q: expected NAME=VALUE", v)}
			}
			o.inheritedEnv = append(o.inheritedEnv, v)
		case a == "-h" || a == "--help":
			return o, usageError{"help requested"}
		case strings.HasPrefix(a, "-") && a != "-":
			return o, usageError{fmt.Sprintf("unknown option %q", a)}
		default:
			o.files = append(o.files, a)
		}
	}
	if len(o.files) == 0 {
		return o, usageError{"no manifest FILE given"}
	}
	return o, nil
}

// deriveGuarded turns a panic in the operator's code into an environment error naming the
// document, so the scratch directory is still removed.
func deriveGuarded(work *workspace, doc clusterDoc, in inputs, inheritedEnv []string) (plan clusterPlan, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = environmentError{fmt.Errorf("document %d, Cluster %q: CloudNativePG %s's code panicked: %v",
				doc.index+1, doc.cluster.Name, builtVersion(), r)}
		}
	}()
	return derive(work, doc, in, inheritedEnv)
}

// removeOnSignal removes the scratch directory when the run is interrupted (exit 130).
func removeOnSignal(work *workspace, signals <-chan os.Signal) {
	go func() {
		<-signals
		work.mu.Lock() // never unlocked: nothing may create files in it any more
		work.remove()
		os.Exit(130)
	}()
}
