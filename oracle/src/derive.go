package main

import (
	"context"
	"fmt"

	apiv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	"github.com/cloudnative-pg/cloudnative-pg/pkg/specs"
	"github.com/cloudnative-pg/machinery/pkg/image/reference"
	"github.com/cloudnative-pg/machinery/pkg/postgres/version"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// environmentError is a failure of this machine, not of the input: exit 3.
type environmentError struct{ err error }

func (e environmentError) Error() string { return e.err.Error() }
func (e environmentError) Unwrap() error { return e.err }

// derive runs one Cluster through the operator's packages:
//   - defaulting: (*apiv1.Cluster).Default, as the defaulting webhook calls it;
//   - image and extension resolution into status.pgDataImageInfo (resolve_*.go);
//   - the instance Pod: specs.NewInstance (extension volumes and the postgres container's mounts);
//   - the instance manager's configuration and the postmaster's environment: deriveInstance
//     (src/im-run: the instance manager's own code; src/im-restated: where that package does
//     not build, a restatement over the exported helpers).
func derive(work *workspace, doc clusterDoc, in inputs, inheritedEnv []string) (clusterPlan, error) {
	plan := clusterPlan{
		File:          doc.file,
		Namespace:     namespaceOf(doc.cluster.Namespace),
		Cluster:       doc.cluster.Name,
		Rejections:    []string{},
		UnknownFields: doc.unknownFields,
		NotCovered:    notCovered(),
	}
	if instanceVariant == "restated" {
		plan.NotCovered = append(plan.NotCovered,
			"instance manager: pkg/management/postgres does not build at this version with the substituted dependency; "+
				"parameters and environment come from a restatement of createPostgresqlConfiguration and buildPostgresEnv "+
				"over the operator's exported packages (checked against the instance manager's own code at 1.30.0 by oracle/check)")
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
	// A running cluster: every instance listed, the first one primary (the instance manager's
	// configuration code reads these, e.g. for synchronized logical decoding slots).
	for i := 1; i <= cluster.Spec.Instances; i++ {
		cluster.Status.InstanceNames = append(cluster.Status.InstanceNames, specs.GetInstanceName(cluster.Name, i))
	}
	cluster.Status.CurrentPrimary = specs.GetInstanceName(cluster.Name, 1)
	cluster.Status.TargetPrimary = cluster.Status.CurrentPrimary

	pod, err := specs.NewInstance(ctx, *cluster, 1, true)
	if err != nil {
		plan.Rejections = append(plan.Rejections, fmt.Sprintf("building the instance pod: %v", err))
		return plan, nil
	}
	volumes, mounts, err := extensionVolumes(pod)
	if err != nil {
		return plan, err
	}
	if problems := validateVolumeNames(volumes); len(problems) > 0 {
		plan.Rejections = append(plan.Rejections, problems...)
		return plan, nil
	}

	params, env, rejection, err := deriveInstance(work, cluster, info.MajorVersion, inheritedEnv)
	if err != nil {
		return plan, err
	}
	if rejection != "" {
		plan.Rejections = append(plan.Rejections, rejection)
		return plan, nil
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

// unconditionalEnvironment is set by the instance manager for every postmaster, extensions or
// not; it is left out of the report.
var unconditionalEnvironment = map[string]bool{
	"PG_OOM_ADJUST_FILE":  true,
	"PG_OOM_ADJUST_VALUE": true,
}

// changedEnvironment is every variable of the postmaster's environment that is new or differs
// from the inherited one (LD_LIBRARY_PATH, PATH, extension env), with its full value.
func changedEnvironment(inherited []string, got map[string]string) map[string]string {
	before := envSliceToMap(inherited)
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

// validateVolumeNames applies to the extension volumes the two checks Kubernetes' pod
// validation makes on volume names (k8s.io/apimachinery's IsDNS1123Label, and uniqueness): a
// pod failing them cannot be created, whatever the operator accepted.
func validateVolumeNames(volumes []volume) []string {
	var problems []string
	seen := map[string]bool{}
	for _, v := range volumes {
		for _, msg := range validation.IsDNS1123Label(v.Name) {
			problems = append(problems, fmt.Sprintf("pod validation (Kubernetes): volume name %q: %s", v.Name, msg))
		}
		if seen[v.Name] {
			problems = append(problems, fmt.Sprintf("pod validation (Kubernetes): volume name %q: Duplicate value", v.Name))
		}
		seen[v.Name] = true
	}
	return problems
}
