package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"

	apiv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// clusterDoc is one Cluster document as the operator's Go types read it.
type clusterDoc struct {
	file    string
	index   int // document index within the file, from 0
	cluster apiv1.Cluster
	// unknownFields are the JSON paths this operator version's types do not know (the API
	// server prunes them; the operator never sees them).
	unknownFields []string
}

type inputs struct {
	clusters []clusterDoc
	// catalogs by "Kind/namespace/name" (namespace empty for ClusterImageCatalog).
	catalogs map[string]apiv1.GenericImageCatalog
}

func catalogKey(kind, namespace, name string) string {
	if kind == apiv1.ClusterImageCatalogKind {
		namespace = ""
	}
	return kind + "/" + namespace + "/" + name
}

type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// readInputs reads every YAML document of every file. Documents of other kinds are skipped;
// a file that cannot be read or parsed is bad input (exit 2), named in the error.
func readInputs(files []string) (inputs, error) {
	in := inputs{catalogs: map[string]apiv1.GenericImageCatalog{}}
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			return in, fmt.Errorf("cannot read manifest %s: %w", file, err)
		}
		docs, err := splitDocuments(raw)
		if err != nil {
			return in, fmt.Errorf("%s: not valid YAML: %w", file, err)
		}
		for i, doc := range docs {
			if err := readDocument(&in, file, i, doc); err != nil {
				return in, err
			}
		}
	}
	return in, nil
}

func splitDocuments(raw []byte) ([][]byte, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	var docs [][]byte
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		docs = append(docs, doc)
	}
}

func readDocument(in *inputs, file string, index int, doc []byte) error {
	where := fmt.Sprintf("%s (document %d)", file, index+1)
	data, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return fmt.Errorf("%s: not valid YAML: %w", where, err)
	}
	if string(bytes.TrimSpace(data)) == "null" {
		return nil
	}
	var meta typeMeta
	if err := kjson.UnmarshalCaseSensitivePreserveInts(data, &meta); err != nil {
		return fmt.Errorf("%s: a Kubernetes object must be a YAML mapping with apiVersion and kind: %w", where, err)
	}
	if group, _, _ := strings.Cut(meta.APIVersion, "/"); group != apiv1.SchemeGroupVersion.Group {
		return nil
	}
	if meta.APIVersion != apiv1.SchemeGroupVersion.String() {
		return fmt.Errorf("%s: apiVersion %q is not served by CloudNativePG; use %s",
			where, meta.APIVersion, apiv1.SchemeGroupVersion.String())
	}
	switch meta.Kind {
	case apiv1.ClusterKind:
		var c clusterDoc
		c.file, c.index = file, index
		unknown, err := decode(data, &c.cluster)
		if err != nil {
			return fmt.Errorf("%s: the Cluster does not match CloudNativePG %s's types: %w", where, builtVersion(), err)
		}
		c.unknownFields = unknown
		in.clusters = append(in.clusters, c)
	case apiv1.ImageCatalogKind:
		var cat apiv1.ImageCatalog
		if _, err := decode(data, &cat); err != nil {
			return fmt.Errorf("%s: the ImageCatalog does not match CloudNativePG %s's types: %w", where, builtVersion(), err)
		}
		in.catalogs[catalogKey(meta.Kind, namespaceOf(cat.Namespace), cat.Name)] = &cat
	case apiv1.ClusterImageCatalogKind:
		var cat apiv1.ClusterImageCatalog
		if _, err := decode(data, &cat); err != nil {
			return fmt.Errorf("%s: the ClusterImageCatalog does not match CloudNativePG %s's types: %w", where, builtVersion(), err)
		}
		in.catalogs[catalogKey(meta.Kind, "", cat.Name)] = &cat
	}
	return nil
}

var quotedField = regexp.MustCompile(`^unknown field "(.*)"$`)

// decode reads data into v the way the API machinery does (case-sensitive, ints preserved)
// and returns the fields v's types do not know. Duplicate keys were refused by YAMLToJSONStrict.
func decode(data []byte, v any) ([]string, error) {
	strict, err := kjson.UnmarshalStrict(data, v, kjson.DisallowUnknownFields)
	if err != nil {
		return nil, err
	}
	unknown := []string{}
	for _, e := range strict {
		msg := e.Error()
		if m := quotedField.FindStringSubmatch(msg); m != nil {
			msg = m[1]
		}
		unknown = append(unknown, msg)
	}
	sort.Strings(unknown)
	return unknown, nil
}

func namespaceOf(ns string) string {
	if ns == "" {
		return "default"
	}
	return ns
}
