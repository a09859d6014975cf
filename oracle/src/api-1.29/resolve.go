package main

import (
	"fmt"

	apiv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	"github.com/cloudnative-pg/cloudnative-pg/pkg/utils/extensions"
)

// requestedImageInfo restates the controller's getRequestedImageInfo (internal/controller);
// the extension resolution itself is the operator's exported extensions.ValidateWithoutCatalog
// / extensions.ResolveFromCatalog.
func requestedImageInfo(cluster *apiv1.Cluster, catalogs map[string]apiv1.GenericImageCatalog) (apiv1.ImageInfo, error) {
	if cluster.Spec.ImageCatalogRef == nil {
		if cluster.Spec.ImageName == "" {
			return apiv1.ImageInfo{}, fmt.Errorf("ImageName is not defined and no catalog is referenced")
		}
		info, err := imageInfoFromImageName(cluster.Spec.ImageName)
		if err != nil {
			return info, err
		}
		exts, err := extensions.ValidateWithoutCatalog(cluster)
		if err != nil {
			return apiv1.ImageInfo{}, err
		}
		info.Extensions = exts
		return info, nil
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
	exts, err := extensions.ResolveFromCatalog(cluster, catalog, major)
	if err != nil {
		return apiv1.ImageInfo{}, fmt.Errorf("cannot retrieve extensions for image %s: %w", image, err)
	}
	return apiv1.ImageInfo{Image: image, MajorVersion: major, Extensions: exts}, nil
}

// resolvedExtensions is what volumes, GUCs and environment are built from from 1.29 on.
func resolvedExtensions(cluster *apiv1.Cluster) []apiv1.ExtensionConfiguration {
	if cluster.Status.PGDataImageInfo == nil || cluster.Status.PGDataImageInfo.Extensions == nil {
		return []apiv1.ExtensionConfiguration{}
	}
	return cluster.Status.PGDataImageInfo.Extensions
}

// notCovered names what the oracle cannot run at this version (see ../README.md).
func notCovered() []string {
	return []string{
		"admission: the validating webhook (internal/webhook) and the CRD schema are not importable; rejections come only from the exported resolution functions",
	}
}
