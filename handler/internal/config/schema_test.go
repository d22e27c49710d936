package config

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// schemaPath is the published JSON Schema of the connections file, which
// the examples name in "$schema" for editors to complete and check them.
const schemaPath = "../../../schema/connections.schema.json"

func loadSchema(t *testing.T) map[string]any {
	t.Helper()
	data, err := os.ReadFile(schemaPath)
	if err != nil {
		t.Fatal(err)
	}
	var s map[string]any
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatalf("%s: %v", schemaPath, err)
	}
	checkKeywords(t, "#", s)
	return s
}

// schemaKeywords are the JSON Schema keywords validate implements; the
// schema may use no other, so that what validate accepts is what an
// editor accepts.
var schemaKeywords = []string{
	"$schema", "$id", "title", "description", "type", "enum", "pattern",
	"properties", "additionalProperties", "required", "items", "minItems",
}

func checkKeywords(t *testing.T, at string, s map[string]any) {
	t.Helper()
	for k, v := range s {
		if !slices.Contains(schemaKeywords, k) {
			t.Errorf("schema %s: keyword %q is not implemented by the test's validator", at, k)
		}
		switch k {
		case "properties":
			for name, sub := range v.(map[string]any) {
				checkKeywords(t, at+"/properties/"+name, sub.(map[string]any))
			}
		case "items", "additionalProperties":
			if sub, ok := v.(map[string]any); ok {
				checkKeywords(t, at+"/"+k, sub)
			}
		}
	}
}

// jsonKind is the JSON Schema type name of a value decoded by encoding/json.
func jsonKind(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case bool:
		return "boolean"
	case float64:
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return "null"
}

// validate checks v against schema s, for the keywords of schemaKeywords,
// and returns one line per violation.
func validate(s map[string]any, v any, at string) []string {
	var out []string
	if ty, ok := s["type"]; ok {
		types := schemaTypes(ty)
		if !slices.Contains(types, jsonKind(v)) {
			return []string{fmt.Sprintf("%s: found %s, want %s", at, jsonKind(v), strings.Join(types, " or "))}
		}
	}
	if enum, ok := s["enum"].([]any); ok && !slices.Contains(enum, v) {
		out = append(out, fmt.Sprintf("%s: %v is not one of %v", at, v, enum))
	}
	if p, ok := s["pattern"].(string); ok {
		if str, isStr := v.(string); isStr && !regexp.MustCompile(p).MatchString(str) {
			out = append(out, fmt.Sprintf("%s: %q does not match %s", at, str, p))
		}
	}
	switch v := v.(type) {
	case map[string]any:
		props, _ := s["properties"].(map[string]any)
		for _, k := range slices.Sorted(maps.Keys(v)) {
			if sub, ok := props[k]; ok {
				out = append(out, validate(sub.(map[string]any), v[k], at+"."+k)...)
				continue
			}
			switch extra := s["additionalProperties"].(type) {
			case bool:
				if !extra {
					out = append(out, fmt.Sprintf("%s: unknown property %q", at, k))
				}
			case map[string]any:
				out = append(out, validate(extra, v[k], at+"."+k)...)
			}
		}
		if req, ok := s["required"].([]any); ok {
			for _, k := range req {
				if _, ok := v[k.(string)]; !ok {
					out = append(out, fmt.Sprintf("%s: %q is required", at, k))
				}
			}
		}
	case []any:
		if n, ok := s["minItems"].(float64); ok && float64(len(v)) < n {
			out = append(out, fmt.Sprintf("%s: %d items, want at least %v", at, len(v), n))
		}
		if items, ok := s["items"].(map[string]any); ok {
			for i, item := range v {
				out = append(out, validate(items, item, fmt.Sprintf("%s[%d]", at, i))...)
			}
		}
	}
	return out
}

func schemaTypes(ty any) []string {
	if s, ok := ty.(string); ok {
		return []string{s}
	}
	var out []string
	for _, s := range ty.([]any) {
		out = append(out, s.(string))
	}
	return out
}

// The schema's parts the tests look at.
func fileProps(s map[string]any) map[string]any { return s["properties"].(map[string]any) }

func connectionSchema(s map[string]any) map[string]any {
	return fileProps(s)["connections"].(map[string]any)["items"].(map[string]any)
}

func connectionProps(s map[string]any) map[string]any {
	return connectionSchema(s)["properties"].(map[string]any)
}

// probeContexts are connections in which every field can be accepted: one
// refreshing, one jwt_bearer (clientAuth none, a subject), one signing
// client assertions (signingKey, signingAlg, assertionAudience).
var probeContexts = []map[string]any{
	{"name": "probe", "tokenUrl": "https://example.com/token", "clientAuth": "basic"},
	{"name": "probe", "grant": "jwt_bearer", "tokenUrl": "https://example.com/token", "clientAuth": "none", "assertionSubject": "user"},
	{"name": "probe", "grant": "client_credentials", "tokenUrl": "https://example.com/token", "clientAuth": "private_key_jwt"},
}

// probe parses ctx with field set to v and returns the problems reported
// at field (or inside it).
func probe(t *testing.T, ctx map[string]any, field string, v any) []Problem {
	t.Helper()
	conn := maps.Clone(ctx)
	conn[field] = v
	data, err := json.Marshal(map[string]any{"connections": []any{conn}})
	if err != nil {
		t.Fatal(err)
	}
	var p parser
	p.parse(data)
	var at []Problem
	for _, pr := range p.problems {
		if pr.Field == field || strings.HasPrefix(pr.Field, field+".") || strings.HasPrefix(pr.Field, field+"[") {
			at = append(at, pr)
		}
	}
	return at
}

// acceptedKinds are the JSON types the validator reads field as: a value of
// every other kind is refused with "found <kind>;".
func acceptedKinds(t *testing.T, field string) []string {
	samples := []any{"x", true, 1.0, []any{}, map[string]any{}, nil}
	var kinds []string
	for _, v := range samples {
		raw, _ := json.Marshal(v)
		refused := false
		for _, pr := range probe(t, probeContexts[0], field, v) {
			if strings.HasPrefix(pr.Message, "found "+describe(raw)+";") {
				refused = true
			}
		}
		if !refused {
			kinds = append(kinds, jsonKind(v))
		}
	}
	slices.Sort(kinds)
	return kinds
}

// accepted reports whether some probe context takes s as field's value.
func accepted(t *testing.T, field, s string) bool {
	for _, ctx := range probeContexts {
		if len(probe(t, ctx, field, s)) == 0 {
			return true
		}
	}
	return false
}

var messageToken = regexp.MustCompile(`[A-Za-z0-9_-]+`)

// TestSchemaMatchesFieldTable holds schema/connections.schema.json to the
// validator, probing it rather than a hand-kept list so that a field added
// to the table (connectionFields, fieldSpecs) fails here until the schema
// has it: the same properties, each the JSON types the validator reads,
// and an enum exactly where the validator takes a closed set of strings.
func TestSchemaMatchesFieldTable(t *testing.T) {
	s := loadSchema(t)

	if got, want := slices.Sorted(maps.Keys(fileProps(s))), slices.Sorted(slices.Values(topLevelFields)); !slices.Equal(got, want) {
		t.Errorf("the schema's top-level properties are %v; the validator's are %v", got, want)
	}
	props := connectionProps(s)
	if got, want := slices.Sorted(maps.Keys(props)), slices.Sorted(slices.Values(connectionFields)); !slices.Equal(got, want) {
		t.Errorf("the schema's connection properties are %v; the validator's are %v", got, want)
	}
	for _, f := range append([]fieldSpec{nameField}, fieldSpecs...) {
		if _, ok := props[f.field]; !ok {
			t.Errorf("fieldSpecs checks %q, which the schema lacks", f.field)
		}
	}
	if connectionSchema(s)["additionalProperties"] != false || s["additionalProperties"] != false {
		t.Error("the schema must refuse unknown properties, as the validator does")
	}
	secrets := props["secrets"].(map[string]any)
	if got, want := slices.Sorted(maps.Keys(secrets["properties"].(map[string]any))), slices.Sorted(slices.Values(secretFields)); !slices.Equal(got, want) {
		t.Errorf("the schema's secrets are %v; the validator's are %v", got, want)
	}
	if req := connectionSchema(s)["required"]; !slices.Equal(req.([]any), []any{"name"}) {
		t.Errorf("a connection's required properties are %v; the validator requires only name", req)
	}

	for _, field := range connectionFields {
		prop, ok := props[field].(map[string]any)
		if !ok {
			continue // reported above
		}
		t.Run(field, func(t *testing.T) {
			want := acceptedKinds(t, field)
			got := slices.Sorted(slices.Values(schemaTypes(prop["type"])))
			if !slices.Equal(got, want) {
				t.Errorf("schema type %v; the validator reads %v", got, want)
			}
			if !slices.Contains(want, "string") || field == "name" {
				return
			}
			// Candidates for a closed set: the words of the message
			// refusing a value that nothing accepts, and the schema's enum.
			var msg string
			for _, ctx := range probeContexts {
				for _, pr := range probe(t, ctx, field, "zzz") {
					msg += " " + pr.Message
				}
			}
			enum, hasEnum := prop["enum"].([]any)
			if hasEnum {
				if accepted(t, field, "zzz") {
					t.Fatalf("schema has an enum, but the validator accepts %q", "zzz")
				}
				candidates := messageToken.FindAllString(msg, -1)
				for _, v := range enum {
					candidates = append(candidates, v.(string))
				}
				var takes []any
				for _, c := range slices.Compact(slices.Sorted(slices.Values(candidates))) {
					if accepted(t, field, c) {
						takes = append(takes, c)
					}
				}
				if got := slices.Sorted(slices.Values(stringsOf(enum))); !slices.Equal(got, stringsOf(takes)) {
					t.Errorf("schema enum %v; the validator takes %v", got, takes)
				}
				return
			}
			// No enum: the validator must not treat the field as a closed
			// set, which its did-you-mean on a near miss would show.
			for _, c := range messageToken.FindAllString(msg, -1) {
				if !accepted(t, field, c) {
					continue
				}
				for _, ctx := range probeContexts {
					for _, pr := range probe(t, ctx, field, c+c[len(c)-1:]) {
						if strings.Contains(pr.Message, "did you mean") {
							t.Errorf("the validator suggests a value for %q (%s); the schema gives it no enum", c+c[len(c)-1:], pr.Message)
						}
					}
				}
			}
		})
	}
}

func stringsOf(vs []any) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.(string)
	}
	return out
}

// TestSchemaPatternsMatchTheValidator compares the schema's patterns with
// the functions the validator applies.
func TestSchemaPatternsMatchTheValidator(t *testing.T) {
	s := loadSchema(t)
	props := connectionProps(s)
	secretPattern := regexp.MustCompile(props["secrets"].(map[string]any)["properties"].(map[string]any)["clientSecret"].(map[string]any)["pattern"].(string))
	tests := []struct {
		name    string
		pattern string
		valid   func(string) bool
		samples []string
	}{
		{"name", props["name"].(map[string]any)["pattern"].(string), broker.ValidConnectionName,
			[]string{"xero", "a", "a-1", "1a", "-a", "Xero", "x_y", "", strings.Repeat("a", 63), strings.Repeat("a", 64)}},
		{"secrets", secretPattern.String(), broker.ValidSecretName,
			[]string{"a", "A-b-1", "1a", "a_b", "", strings.Repeat("a", 127), strings.Repeat("a", 128)}},
		{"signingKey", props["signingKey"].(map[string]any)["pattern"].(string), broker.ValidSecretName,
			[]string{"k", "key-1", "9k", strings.Repeat("k", 128)}},
	}
	for _, tt := range tests {
		re := regexp.MustCompile(tt.pattern)
		for _, sample := range tt.samples {
			if got, want := re.MatchString(sample), tt.valid(sample); got != want {
				t.Errorf("%s: pattern %s matches %q: %v; the validator: %v", tt.name, tt.pattern, sample, got, want)
			}
		}
	}
}

// exampleFiles are the connections files the repository ships, each with
// the JSON path of its connections file inside it.
var exampleFiles = []struct {
	path string
	at   []string
}{
	{"../../../examples/every-kind.json", nil},
	{"../../../examples/connections.json", nil},
	{"../../../infra/main.parameters.json", []string{"parameters", "connections", "value"}},
}

// TestExamplesMatchSchema validates the shipped examples against the
// schema, and checks that the validator accepts them too and that the
// example's "$schema" names the published file.
func TestExamplesMatchSchema(t *testing.T) {
	s := loadSchema(t)
	for _, ex := range exampleFiles {
		t.Run(filepath.Base(ex.path), func(t *testing.T) {
			data, err := os.ReadFile(ex.path)
			if err != nil {
				t.Fatal(err)
			}
			var doc any
			if err := json.Unmarshal(data, &doc); err != nil {
				t.Fatal(err)
			}
			for _, k := range ex.at {
				doc = doc.(map[string]any)[k]
			}
			for _, v := range validate(s, doc, "$") {
				t.Error(v)
			}
			file, _ := json.Marshal(doc)
			if _, err := ParseConnections(file); err != nil {
				t.Errorf("the validator refuses the example: %v", err)
			}
			if ex.at != nil {
				return
			}
			ref, _ := doc.(map[string]any)[schemaField].(string)
			if ref == "" {
				t.Fatalf("the example has no %q", schemaField)
			}
			abs, _ := filepath.Abs(filepath.Join(filepath.Dir(ex.path), ref))
			want, _ := filepath.Abs(schemaPath)
			if abs != want {
				t.Errorf("the example's $schema %q resolves to %s, not the published %s", ref, abs, want)
			}
		})
	}
}

// TestSchemaRefusesWhatTheValidatorRefuses is the schema validator's own
// test: mistakes of kind, name and value that the handler's validator
// refuses are refused by the schema too.
func TestSchemaRefusesWhatTheValidatorRefuses(t *testing.T) {
	s := loadSchema(t)
	tests := []struct {
		name, file string
		want       string
	}{
		{"accepted", `{"$schema": "x", "connections": [{"name": "xero", "provider": "xero", "keepWarm": false}]}`, ""},
		{"unknown field", `{"connections": [{"name": "xero", "provider": "xero", "tokenURL": "https://x"}]}`, `unknown property "tokenURL"`},
		{"unknown top-level", `{"connection": []}`, `unknown property "connection"`},
		{"missing connections", `{}`, `"connections" is required`},
		{"empty connections", `{"connections": []}`, "want at least 1"},
		{"missing name", `{"connections": [{"provider": "xero"}]}`, `"name" is required`},
		{"bad name", `{"connections": [{"name": "Xero"}]}`, "does not match"},
		{"unknown provider", `{"connections": [{"name": "x", "provider": "xeroo"}]}`, "is not one of"},
		{"unknown grant", `{"connections": [{"name": "x", "grant": "password"}]}`, "is not one of"},
		{"boolean in quotes", `{"connections": [{"name": "x", "keepWarm": "false"}]}`, "found string, want boolean"},
		{"null boolean", `{"connections": [{"name": "x", "standby": null}]}`, "found null, want boolean"},
		{"scope not a string", `{"connections": [{"name": "x", "scopes": [1]}]}`, "found number, want string"},
		{"unknown secret", `{"connections": [{"name": "x", "secrets": {"password": "p"}}]}`, `unknown property "password"`},
		{"param not a string", `{"connections": [{"name": "x", "params": {"a": 1}}]}`, "found number, want string"},
		{"empty allowedCallers", `{"connections": [{"name": "x", "allowedCallers": []}]}`, "want at least 1"},
		{"$schema not a string", `{"$schema": 1, "connections": [{"name": "x"}]}`, "found number, want string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var doc any
			if err := json.Unmarshal([]byte(tt.file), &doc); err != nil {
				t.Fatal(err)
			}
			got := strings.Join(validate(s, doc, "$"), "\n")
			if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
				t.Errorf("schema says %q; want %q", got, tt.want)
			}
			// The handler's validator refuses each of these too (the kind
			// and name mistakes with its own did-you-mean), except the
			// first, which it accepts.
			_, err := ParseConnections([]byte(tt.file))
			if (err == nil) != (tt.want == "") {
				t.Errorf("the handler's validator: %v", err)
			}
		})
	}
}
