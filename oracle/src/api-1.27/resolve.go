package main

import (
	"fmt"

	apiv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
)

// requestedImageInfo restates the controller's getRequestedImageInfo (internal/controller)
// before 1.29: image and major version only; extensions are read from the Cluster spec, and
// extensions in a catalog are ignored even where the schema knows them (1.27.4+, 1.28.2+).
func requestedImageInfo(cluster *apiv1.Cluster, catalogs map[string]apiv1.GenericImageCatalog) (apiv1.ImageInfo, error) {
	if cluster.Spec.ImageCatalogRef == nil {
		if cluster.Spec.ImageName == "" {
			return apiv1.ImageInfo{}, fmt.Errorf("ImageName is not defined and no catalog is referenced")
		}
		return imageInfoFromImageName(cluster.Spec.ImageName)
	}
	catalog, err := lookupCatalog(cluster, catalogs)
	if err != nil {
		return apiv1.ImageInfo{}, err
	}
	major := cluster.Spec.ImageCatalogRef.Major
	image, ok := catalog.GetSpec().FindImageForMajor(major)
	if !ok {
		return apiv1.ImageInfo{}, fmt.Errorf("selected major version is not available in the catalog")
	}
	return apiv1.ImageInfo{Image: image, MajorVersion: major}, nil
}

// resolvedExtensions: before 1.29 volumes, GUCs and environment come from the spec list.
func resolvedExtensions(cluster *apiv1.Cluster) []apiv1.ExtensionConfiguration {
	if cluster.Spec.PostgresConfiguration.Extensions == nil {
		return []apiv1.ExtensionConfiguration{}
	}
	return cluster.Spec.PostgresConfiguration.Extensions
}

// notCovered names what the oracle cannot run at this version (see ../README.md).
func notCovered() []string {
	return []string{
		"admission: the validating webhook (internal/webhook) and the CRD schema are not importable; no exported validation of extensions exists before 1.29",
	}
}
