package main

import (
	apiv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	pginstance "github.com/cloudnative-pg/cloudnative-pg/pkg/management/postgres"
)

// attachCluster gives the instance manager its Cluster (a field before 1.29).
func attachCluster(instance *pginstance.Instance, cluster *apiv1.Cluster) {
	instance.Cluster = cluster
}
