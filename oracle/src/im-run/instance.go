package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	apiv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	pginstance "github.com/cloudnative-pg/cloudnative-pg/pkg/management/postgres"
	"github.com/cloudnative-pg/cloudnative-pg/pkg/management/postgres/constants"
	postgresClient "github.com/cloudnative-pg/cnpg-i/pkg/postgres"
)

// instanceVariant names how parameters and environment were derived (see not_covered).
const instanceVariant = "instance-manager"

// deriveInstance runs the instance manager's own code on a scratch PGDATA:
//   - (*Instance).RefreshConfigurationFilesFromCluster, as the instance reconciler calls it
//     (preserveUserSettings false, operation RECONCILE), writes custom.conf, read back here;
//   - (*Instance).Startup runs `pg_ctl` with the environment the postmaster gets; the pg_ctl
//     found first on PATH is this program (runAsStandIn), which records that environment.
func deriveInstance(work *workspace, cluster *apiv1.Cluster, major int, inheritedEnv []string) (
	*parameters, map[string]string, string, error,
) {
	pgdata, err := work.newPgData(major)
	if err != nil {
		return nil, nil, "", environmentError{err}
	}
	instance := pginstance.NewInstance()
	instance.PgData = pgdata
	// Never nil: a nil Env makes the instance manager use this process's own environment.
	instance.Env = append([]string{}, inheritedEnv...)
	attachCluster(instance, cluster)

	if _, err := instance.RefreshConfigurationFilesFromCluster(
		context.Background(), cluster, false, postgresClient.OperationType_TYPE_RECONCILE,
	); err != nil {
		return nil, nil, fmt.Sprintf("instance manager configuration: %v", err), nil
	}
	params, err := readParameters(filepath.Join(pgdata, constants.PostgresqlCustomConfigurationFile))
	if err != nil {
		return nil, nil, "", environmentError{err}
	}

	if err := instance.Startup(); err != nil {
		return nil, nil, "", environmentError{
			fmt.Errorf("running the instance manager's startup with the pg_ctl stand-in: %w", err)}
	}
	raw, err := os.ReadFile(filepath.Join(pgdata, envCaptureFile))
	if err != nil {
		return nil, nil, "", environmentError{fmt.Errorf("the pg_ctl stand-in left no environment: %w", err)}
	}
	var env []string
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, nil, "", environmentError{err}
	}
	return params, envSliceToMap(env), "", nil
}

const pgCtlName = "pg_ctl"

// envCaptureFile is written into the PGDATA passed with -D by the pg_ctl stand-in.
const envCaptureFile = "oracle-postmaster-environ.json"

// prepareWorkspace links this program as pg_ctl into the workspace's bin directory.
func prepareWorkspace(w *workspace) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	return os.Symlink(self, filepath.Join(w.dir, "bin", pgCtlName))
}

// runAsStandIn is the pg_ctl stand-in: it records its environment into PGDATA and succeeds.
func runAsStandIn(name string, args []string) (int, bool) {
	if name != pgCtlName {
		return 0, false
	}
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
				return 1, true
			}
			return 0, true
		}
	}
	fmt.Fprintln(os.Stderr, "pg_ctl stand-in: no -D argument")
	return 1, true
}
