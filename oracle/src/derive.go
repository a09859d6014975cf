package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	apiv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	pginstance "github.com/cloudnative-pg/cloudnative-pg/pkg/management/postgres"
	"github.com/cloudnative-pg/cloudnative-pg/pkg/management/postgres/constants"
	"github.com/cloudnative-pg/cloudnative-pg/pkg/specs"
	postgresClient "github.com/cloudnative-pg/cnpg-i/pkg/postgres"
	"github.com/cloudnative-pg/machinery/pkg/image/reference"
	"github.com/cloudnative-pg/machinery/pkg/postgres/version"
	corev1 "k8s.io/api/core/v1"
)

// environmentError is a failure of this machine, not of the input: exit 3.
type environmentError struct{ err error }

func (e environmentError) Error() string { return e.err.Error() }
func (e environmentError) Unwrap() error { return e.err }

// derive runs one Cluster through the operator's packages:
//   - defaulting: (*apiv1.Cluster).Default, as the defaulting webhook calls it;
//   - image and extension resolution into status.pgDataImageInfo (resolve_*.go);
//   - the instance Pod: specs.NewInstance (extension volumes and the postgres container's mounts);
//   - the instance manager's configuration: (*Instance).RefreshConfigurationFilesFromCluster,
//     which writes custom.conf into a scratch PGDATA that is read back;
//   - the postmaster's environment: (*Instance).Startup, whose `pg_ctl` is this program, which
//     records the environment it was given.
func derive(work *workspace, doc clusterDoc, in inputs, inheritedEnv []string) (clusterPlan, error) {
	plan := clusterPlan{
		File:          doc.file,
		Namespace:     namespaceOf(doc.cluster.Namespace),
		Cluster:       doc.cluster.Name,
		Rejections:    []string{},
		UnknownFields: doc.unknownFields,
		NotCovered:    notCovered(),
	}
	ctx := context.Background()
	cluster := doc.cluster.DeepCopy()
	cluster.Namespace = plan.Namespace
	cluster.Default()

	info, err := requestedImageInfo(cluster, in.catalogs)
	if err != nil {
		plan.Rejections = append(plan.Rejections, err.Error())
		return plan, nil
	}
	cluster.Status.Image = info.Image
	cluster.Status.PGDataImageInfo = &info

	pod, err := specs.NewInstance(ctx, *cluster, 1, true)
	if err != nil {
		plan.Rejections = append(plan.Rejections, fmt.Sprintf("building the instance pod: %v", err))
		return plan, nil
	}
	volumes, mounts, err := extensionVolumes(pod)
	if err != nil {
		return plan, err
	}

	pgdata, err := work.newPgData(info.MajorVersion)
	if err != nil {
		return plan, environmentError{err}
	}
	instance := pginstance.NewInstance()
	instance.PgData = pgdata
	// Never nil: a nil Env makes the instance manager use this process's own environment.
	instance.Env = append([]string{}, inheritedEnv...)
	attachCluster(instance, cluster)

	if _, err := instance.RefreshConfigurationFilesFromCluster(
		ctx, cluster, false, postgresClient.OperationType_TYPE_RECONCILE,
	); err != nil {
		plan.Rejections = append(plan.Rejections, fmt.Sprintf("instance manager configuration: %v", err))
		return plan, nil
	}
	params, err := readParameters(filepath.Join(pgdata, constants.PostgresqlCustomConfigurationFile))
	if err != nil {
		return plan, environmentError{err}
	}
	env, err := work.captureEnvironment(instance)
	if err != nil {
		return plan, environmentError{err}
	}

	plan.Accepted = true
	plan.Extensions = resolvedExtensions(cluster)
	plan.Parameters = params
	plan.Volumes = volumes
	plan.Mounts = mounts
	plan.Environment = changedEnvironment(inheritedEnv, env)
	return plan, nil
}

// imageInfoFromImageName restates the controller's getImageInfoFromImage (internal/controller):
// the major version is parsed from the image tag with the machinery functions it calls.
func imageInfoFromImageName(image string) (apiv1.ImageInfo, error) {
	v, err := version.FromTag(reference.New(image).Tag)
	if err != nil {
		return apiv1.ImageInfo{}, fmt.Errorf("cannot parse version from image %s: %w", image, err)
	}
	return apiv1.ImageInfo{Image: image, MajorVersion: int(v.Major())}, nil //nolint:gosec
}

// lookupCatalog restates the catalog lookup of the controller (internal/controller at 1.27 /
// 1.28, pkg/utils/imagecatalog.Get from 1.29, which needs a Kubernetes client): the kind and
// group checks and the namespace rule, against the catalogs given in the input files.
func lookupCatalog(cluster *apiv1.Cluster, catalogs map[string]apiv1.GenericImageCatalog) (apiv1.GenericImageCatalog, error) {
	ref := cluster.Spec.ImageCatalogRef
	switch ref.Kind {
	case apiv1.ClusterImageCatalogKind, apiv1.ImageCatalogKind:
	default:
		return nil, fmt.Errorf("invalid image catalog type: %s", ref.Kind)
	}
	if ref.APIGroup == nil || *ref.APIGroup != apiv1.SchemeGroupVersion.Group {
		return nil, fmt.Errorf("invalid image catalog group")
	}
	catalog, ok := catalogs[catalogKey(ref.Kind, cluster.Namespace, ref.Name)]
	if !ok {
		return nil, fmt.Errorf("catalog %s/%s not found (give its manifest in the input files)", ref.Kind, ref.Name)
	}
	return catalog, nil
}

// extensionVolumes picks the image volumes of the pod and the postgres container's mounts of them.
func extensionVolumes(pod *corev1.Pod) ([]volume, []mount, error) {
	volumes := []volume{}
	imageVolumes := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		if v.Image == nil {
			continue
		}
		imageVolumes[v.Name] = true
		volumes = append(volumes, volume{
			Name:           v.Name,
			ImageReference: v.Image.Reference,
			PullPolicy:     string(v.Image.PullPolicy),
		})
	}
	for _, c := range pod.Spec.Containers {
		if c.Name != specs.PostgresContainerName {
			continue
		}
		mounts := []mount{}
		for _, m := range c.VolumeMounts {
			if imageVolumes[m.Name] {
				mounts = append(mounts, mount{Name: m.Name, MountPath: m.MountPath, ReadOnly: m.ReadOnly})
			}
		}
		return volumes, mounts, nil
	}
	return nil, nil, environmentError{fmt.Errorf("the operator's pod has no %q container", specs.PostgresContainerName)}
}

// readParameters reads the three extension-related GUCs back from the custom.conf the
// instance manager wrote (`name = 'value'` lines, quotes doubled inside values).
func readParameters(path string) (*parameters, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the configuration the instance manager wrote: %w", err)
	}
	values := map[string]string{}
	for _, line := range strings.Split(string(raw), "\n") {
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

// unconditionalEnvironment is set by the instance manager for every postmaster, extensions or
// not; it is left out of the report.
var unconditionalEnvironment = map[string]bool{
	"PG_OOM_ADJUST_FILE":  true,
	"PG_OOM_ADJUST_VALUE": true,
}

// changedEnvironment is every variable of the postmaster's environment that is new or differs
// from the inherited one (LD_LIBRARY_PATH, PATH, extension env), with its full value.
func changedEnvironment(inherited []string, got map[string]string) map[string]string {
	before := map[string]string{}
	for _, kv := range inherited {
		k, v, _ := strings.Cut(kv, "=")
		before[k] = v
	}
	out := map[string]string{}
	for k, v := range got {
		if unconditionalEnvironment[k] {
			continue
		}
		if old, ok := before[k]; !ok || old != v {
			out[k] = v
		}
	}
	return out
}

const pgCtlName = "pg_ctl"

// envCaptureFile is written into the PGDATA passed with -D by the pg_ctl stand-in.
const envCaptureFile = "oracle-postmaster-environ.json"

// capturePgCtlEnvironment is the pg_ctl stand-in: it records its environment and succeeds.
func capturePgCtlEnvironment(args []string) int {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-D" {
			env := os.Environ()
			sort.Strings(env)
			data, err := json.Marshal(env)
			if err == nil {
				err = os.WriteFile(filepath.Join(args[i+1], envCaptureFile), data, 0o600)
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "pg_ctl stand-in: %v\n", err)
				return 1
			}
			return 0
		}
	}
	fmt.Fprintln(os.Stderr, "pg_ctl stand-in: no -D argument")
	return 1
}

// workspace is a scratch directory for the whole run: a bin directory holding the pg_ctl
// stand-in (first on this process's PATH), a socket directory (PGHOST) and one PGDATA per Cluster.
type workspace struct {
	dir string
	n   int
}

func newWorkspace() (*workspace, error) {
	dir, err := os.MkdirTemp("", "cnpg-plan-")
	if err != nil {
		return nil, fmt.Errorf("creating a scratch directory: %w", err)
	}
	w := &workspace{dir: dir}
	self, err := os.Executable()
	if err == nil {
		err = os.MkdirAll(filepath.Join(dir, "bin"), 0o700)
	}
	if err == nil {
		err = os.Symlink(self, filepath.Join(dir, "bin", pgCtlName))
	}
	if err == nil {
		err = os.Setenv("PATH", filepath.Join(dir, "bin"))
	}
	if err == nil {
		err = os.Setenv("PGHOST", filepath.Join(dir, "run"))
	}
	if err != nil {
		w.remove()
		return nil, fmt.Errorf("preparing the scratch directory: %w", err)
	}
	return w, nil
}

func (w *workspace) remove() { _ = os.RemoveAll(w.dir) }

func (w *workspace) newPgData(major int) (string, error) {
	w.n++
	dir := filepath.Join(w.dir, "pgdata-"+strconv.Itoa(w.n))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	return dir, os.WriteFile(filepath.Join(dir, "PG_VERSION"), []byte(strconv.Itoa(major)+"\n"), 0o600)
}

// captureEnvironment runs the instance manager's Startup; its pg_ctl is the stand-in above.
func (w *workspace) captureEnvironment(instance *pginstance.Instance) (map[string]string, error) {
	if err := instance.Startup(); err != nil {
		return nil, fmt.Errorf("running the instance manager's startup with the pg_ctl stand-in: %w", err)
	}
	raw, err := os.ReadFile(filepath.Join(instance.PgData, envCaptureFile))
	if err != nil {
		return nil, fmt.Errorf("the pg_ctl stand-in left no environment: %w", err)
	}
	var env []string
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		out[k] = v
	}
	return out, nil
}
