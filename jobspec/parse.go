package jobspec

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Parse decodes a job spec from YAML onto Default(), rejects unknown keys
// (naming their dotted path and line) and validates every value. The
// returned error lists every problem found, one per line.
func Parse(data []byte) (*Spec, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("jobspec: empty document")
		}
		return nil, fmt.Errorf("jobspec: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("jobspec: more than one YAML document; a job spec is one document")
	}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	if doc.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("jobspec: line %d: the document must be a mapping of keys (name, model, ...)", doc.Line)
	}
	if errs := checkKeys(doc, reflect.TypeOf(Spec{}), ""); len(errs) > 0 {
		return nil, fmt.Errorf("jobspec: %w", errors.Join(errs...))
	}
	s := Default()
	if err := doc.Decode(s); err != nil {
		return nil, fmt.Errorf("jobspec: %w", err)
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return s, nil
}

// Marshal renders the spec (defaults included) as YAML that Parse accepts.
func (s *Spec) Marshal() ([]byte, error) {
	out, err := yaml.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("jobspec: marshal: %w", err)
	}
	return out, nil
}

// checkKeys walks a mapping node against the Go type it decodes into and
// reports every key that has no field, with its dotted path, its line and
// the keys that are allowed there. Maps of arbitrary values (adapter_kwargs)
// are not descended into.
func checkKeys(n *yaml.Node, t reflect.Type, path string) []error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return nil // a type error; Decode reports it with its line
		}
		fields := yamlFields(t)
		var errs []error
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			ft, ok := fields[key.Value]
			if !ok {
				errs = append(errs, fmt.Errorf("line %d: unknown key %q; %s accepts: %s",
					key.Line, join(path, key.Value), sectionName(path), strings.Join(sortedKeys(fields), ", ")))
				continue
			}
			errs = append(errs, checkKeys(val, ft, join(path, key.Value))...)
		}
		return errs
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			return nil
		}
		var errs []error
		for i, c := range n.Content {
			errs = append(errs, checkKeys(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))...)
		}
		return errs
	}
	return nil
}

// yamlFields maps each yaml key of struct type t to its field type,
// flattening ",inline" fields.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if strings.Contains(opts, "inline") {
			for k, v := range yamlFields(f.Type) {
				out[k] = v
			}
			continue
		}
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}

func sortedKeys(m map[string]reflect.Type) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func sectionName(path string) string {
	if path == "" {
		return "the top level"
	}
	return path
}
