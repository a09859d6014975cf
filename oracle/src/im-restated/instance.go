package main

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"

	apiv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	"github.com/cloudnative-pg/cloudnative-pg/pkg/postgres"
	"github.com/cloudnative-pg/cloudnative-pg/pkg/postgres/plugin"
	"github.com/cloudnative-pg/cloudnative-pg/pkg/postgres/replication"
	"github.com/cloudnative-pg/cloudnative-pg/pkg/utils"
	"github.com/cloudnative-pg/cloudnative-pg/pkg/utils/extensions"
	postgresClient "github.com/cloudnative-pg/cnpg-i/pkg/postgres"
	"github.com/cloudnative-pg/machinery/pkg/envmap"
)

// instanceVariant names how parameters and environment were derived (see not_covered).
const instanceVariant = "restated"

// deriveInstance, for versions whose pkg/management/postgres does not build here (1.30.1: it
// needs machinery v0.6.0, which the proxy does not serve), restates the two unexported
// instance-manager functions over the operator's exported packages:
//   - createPostgresqlConfiguration: the same ConfigurationInfo, then the operator's
//     plugin.CreatePostgresqlConfigurationWithPlugins and postgres.CreatePostgresqlConfFile;
//   - buildPostgresEnv: the operator's extensions.CollectLibraryPaths / CollectBinPaths /
//     AppendPaths / SetEnvVars in the same order.
//
// oracle/check proves the restatement against the instance-manager variant at 1.30.0.
func deriveInstance(_ *workspace, cluster *apiv1.Cluster, major int, inheritedEnv []string) (
	*parameters, map[string]string, string, error,
) {
	ctx := context.Background()
	info := postgres.ConfigurationInfo{
		Settings:                         postgres.CnpgConfigurationSettings,
		MajorVersion:                     major,
		UserSettings:                     cluster.Spec.PostgresConfiguration.Parameters,
		IncludingSharedPreloadLibraries:  true,
		AdditionalSharedPreloadLibraries: cluster.Spec.PostgresConfiguration.AdditionalLibraries,
		IsReplicaCluster:                 cluster.IsReplica(),
		IsWalArchivingDisabled:           utils.IsWalArchivingDisabled(&cluster.ObjectMeta),
		IsAlterSystemEnabled:             cluster.Spec.PostgresConfiguration.EnableAlterSystem,
		SynchronousStandbyNames:          replication.GetSynchronousStandbyNames(ctx, cluster),
		IncludingMandatory:               true,
		ClusterName:                      cluster.Name,
	}
	for _, tablespace := range cluster.Spec.Tablespaces {
		if tablespace.Temporary {
			info.TemporaryTablespaces = append(info.TemporaryTablespaces, tablespace.Name)
		}
	}
	sort.Strings(info.TemporaryTablespaces)
	var exts []apiv1.ExtensionConfiguration
	if cluster.Status.PGDataImageInfo != nil {
		exts = cluster.Status.PGDataImageInfo.Extensions
	}
	for _, extension := range exts {
		info.AdditionalExtensions = append(info.AdditionalExtensions, postgres.AdditionalExtensionConfiguration{
			MountPath:            filepath.Join(postgres.ExtensionsBaseDirectory, extension.Name),
			ExtensionControlPath: extension.ExtensionControlPath,
			DynamicLibraryPath:   extension.DynamicLibraryPath,
		})
	}
	if cluster.IsReplica() && cluster.Spec.ReplicaCluster.MinApplyDelay != nil {
		info.RecoveryMinApplyDelay = cluster.Spec.ReplicaCluster.MinApplyDelay.Duration
	}
	if cluster.Spec.ReplicationSlots != nil && cluster.Spec.ReplicationSlots.HighAvailability != nil &&
		cluster.Spec.ReplicationSlots.HighAvailability.GetEnabled() &&
		cluster.Spec.ReplicationSlots.HighAvailability.SynchronizeLogicalDecoding {
		slots := make([]string, 0, len(cluster.Status.InstanceNames))
		for _, instanceName := range cluster.Status.InstanceNames {
			if instanceName != cluster.Status.CurrentPrimary {
				slots = append(slots, cluster.GetSlotNameFromInstanceName(instanceName))
			}
		}
		info.SynchronizedStandbySlots = slots
	}
	config, err := plugin.CreatePostgresqlConfigurationWithPlugins(ctx, info, postgresClient.OperationType_TYPE_RECONCILE)
	if err != nil {
		return nil, nil, fmt.Sprintf("instance manager configuration: %v", err), nil
	}
	file, _ := postgres.CreatePostgresqlConfFile(config)
	params, err := parseParameters("the restated configuration", file)
	if err != nil {
		return nil, nil, "", environmentError{err}
	}

	envMap, err := envmap.Parse(inheritedEnv)
	if err != nil {
		return nil, nil, "", environmentError{err}
	}
	envMap["PG_OOM_ADJUST_FILE"] = "/proc/self/oom_score_adj"
	envMap["PG_OOM_ADJUST_VALUE"] = "0"
	if cluster.Status.PGDataImageInfo != nil {
		if paths := extensions.CollectLibraryPaths(exts, postgres.ExtensionsBaseDirectory); len(paths) > 0 {
			envMap["LD_LIBRARY_PATH"] = extensions.AppendPaths(envMap["LD_LIBRARY_PATH"], paths)
		}
		if paths := extensions.CollectBinPaths(exts, postgres.ExtensionsBaseDirectory); len(paths) > 0 {
			envMap["PATH"] = extensions.AppendPaths(envMap["PATH"], paths)
		}
		extensions.SetEnvVars(exts, envMap, postgres.ExtensionsBaseDirectory)
	}
	return params, envSliceToMap(envMap.StringSlice()), "", nil
}

func prepareWorkspace(*workspace) error { return nil }

func runAsStandIn(string, []string) (int, bool) { return 0, false }
