package main

import (
	"fmt"
	"runtime/debug"
)

// output is the document printed on stdout (schema 1, see ../README.md).
type output struct {
	Schema      int           `json:"schema"`
	CnpgVersion string        `json:"cnpg_version"`
	Substituted []string      `json:"substituted,omitempty"`
	Clusters    []clusterPlan `json:"clusters"`
}

// clusterPlan is what the operator's packages derive for one Cluster. Derived fields are null
// when the Cluster is rejected.
type clusterPlan struct {
	File          string   `json:"file"`
	Namespace     string   `json:"namespace"`
	Cluster       string   `json:"cluster"`
	Accepted      bool     `json:"accepted"`
	Rejections    []string `json:"rejections"`
	UnknownFields []string `json:"unknown_fields"`
	// Extensions is the resolved list in the operator's own serialisation (what 1.29+ stores
	// in status.pgDataImageInfo.extensions; the spec list before 1.29).
	Extensions  any               `json:"extensions"`
	Parameters  *parameters       `json:"parameters"`
	Volumes     []volume          `json:"volumes"`
	Mounts      []mount           `json:"mounts"`
	Environment map[string]string `json:"environment"`
	NotCovered  []string          `json:"not_covered"`
}

// parameters are the GUCs the instance manager writes that extensions affect; null when the
// instance manager does not write the parameter at all.
type parameters struct {
	ExtensionControlPath   *string `json:"extension_control_path"`
	DynamicLibraryPath     *string `json:"dynamic_library_path"`
	SharedPreloadLibraries *string `json:"shared_preload_libraries"`
}

type volume struct {
	Name           string `json:"name"`
	ImageReference string `json:"image_reference"`
	PullPolicy     string `json:"pull_policy"`
}

type mount struct {
	Name      string `json:"name"`
	MountPath string `json:"mount_path"`
	ReadOnly  bool   `json:"read_only"`
}

const operatorModule = "github.com/cloudnative-pg/cloudnative-pg"

// substitutionReason is set at build time (-ldflags -X) when the version's go.mod replaces a
// dependency of the operator (see ../mod/*.note).
var substitutionReason string

// builtVersion is the operator module version this binary was linked against, read from the
// binary's own build information (not from a flag, so it cannot disagree with the code).
func builtVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == operatorModule {
				return trimV(dep.Version)
			}
		}
	}
	return "unknown"
}

// substitutions lists every dependency replaced in this build's go.mod.
func substitutions() []string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return nil
	}
	var out []string
	for _, dep := range info.Deps {
		if dep.Replace == nil {
			continue
		}
		s := fmt.Sprintf("%s %s => %s", dep.Path, dep.Version, dep.Replace.Version)
		if dep.Replace.Path != dep.Path {
			s = fmt.Sprintf("%s %s => %s %s", dep.Path, dep.Version, dep.Replace.Path, dep.Replace.Version)
		}
		if substitutionReason != "" {
			s += " (" + substitutionReason + ")"
		}
		out = append(out, s)
	}
	return out
}

func trimV(v string) string {
	if len(v) > 0 && v[0] == 'v' {
		return v[1:]
	}
	return v
}
