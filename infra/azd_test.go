package infra

// Deploying without Go or make: azure.yaml for azd up, and the release zip
// that make package builds for infra/README.md's az commands. azure.yaml is
// read line by line (the module has no YAML parser, and these few keys are
// flat strings).

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestAzureYAML(t *testing.T) {
	t.Parallel()
	src := readText(t, filepath.Join(repoRoot, "azure.yaml"))
	keys := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^\s*(\w+): (\S.*)$`).FindAllStringSubmatch(src, -1) {
		if _, dup := keys[m[1]]; !dup {
			keys[m[1]] = strings.TrimSpace(m[2])
		}
	}
	makefile := readText(t, filepath.Join(repoRoot, "Makefile"))
	tests := []struct {
		key, want, why string
	}{
		{"provider", "bicep", "the templates are Bicep"},
		{"path", "infra", "main.bicep is in infra/"},
		{"module", "main", "infra/main.bicep"},
		{"host", "function", "a function app"},
		{"language", "custom", "azd's go is the Flex Go worker (a binary named app, no function folders); custom deploys the package as built"},
		{"dist", "dist/tokenrefresher.zip", "the package make package writes and the release carries; a .zip is deployed as it is, keeping the handler's mode"},
		{"project", ".", "the repository root, where the Makefile and the release's dist/ are"},
	}
	for _, tt := range tests {
		if keys[tt.key] != tt.want {
			t.Errorf("azure.yaml: %s is %q, want %q (%s)", tt.key, keys[tt.key], tt.want, tt.why)
		}
	}
	if !strings.Contains(makefile, "-out $(DIST)/tokenrefresher.zip") || !regexp.MustCompile(`(?m)^DIST := dist$`).MatchString(makefile) {
		t.Error("Makefile: make package no longer writes dist/tokenrefresher.zip, which azure.yaml deploys")
	}
	out := regexp.MustCompile(`^\$\{(\w+)\}$`).FindStringSubmatch(keys["resourceName"])
	if out == nil || loadTemplates(t)["main.bicep"].find("output", out[1]) == nil {
		t.Errorf("azure.yaml: resourceName %q is not ${<an output of main.bicep>}", keys["resourceName"])
	} else if out[1] != "functionAppName" {
		t.Errorf("azure.yaml: resourceName is the output %s, want functionAppName", out[1])
	}
	if !strings.Contains(src, "prepackage:") || !strings.Contains(src, "make package") {
		t.Error("azure.yaml: no prepackage hook running make package from a clone")
	}
	if m := regexp.MustCompile(`azd: ">= (\d+)\.(\d+)`).FindStringSubmatch(src); m == nil || m[1] == "0" || (m[1] == "1" && len(m[2]) < 2) {
		t.Error("azure.yaml: requiredVersions.azd must be >= 1.20.0, where language custom arrived")
	}
}

// TestReleaseHasWhatDeployingNeeds: make package's release holds azure.yaml,
// the templates and every file they load, the package, and the guides; and
// infra/README.md's release commands use only what it holds.
func TestReleaseHasWhatDeployingNeeds(t *testing.T) {
	t.Parallel()
	makefile := readText(t, filepath.Join(repoRoot, "Makefile"))
	m := regexp.MustCompile(`(?s)\nRELEASE_FILES := (.*?[^\\])\n`).FindStringSubmatch(makefile)
	if m == nil {
		t.Fatal("Makefile: no RELEASE_FILES")
	}
	files := strings.Fields(strings.ReplaceAll(m[1], "\\\n", " "))
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(repoRoot, f)); err != nil {
			t.Errorf("Makefile: RELEASE_FILES lists %s: %v", f, err)
		}
	}
	inRelease := func(path string) bool {
		return path == "dist/tokenrefresher.zip" || slices.ContainsFunc(files, func(f string) bool { return path == f || strings.HasPrefix(path, f+"/") })
	}
	for _, need := range []string{"azure.yaml", "infra/main.bicep", "infra/main.parameters.json", "README.md", "adf/factory.bicep"} {
		if !inRelease(need) {
			t.Errorf("the release lacks %s", need)
		}
	}
	// Every file a template loads.
	load := regexp.MustCompile(`load(?:Text|Json)Content\('([^']+)'\)`)
	for name, f := range loadTemplates(t) {
		for _, l := range load.FindAllStringSubmatch(f.src, -1) {
			p := filepath.ToSlash(filepath.Join("infra", filepath.Dir(name), l[1]))
			if !inRelease(p) {
				t.Errorf("%s loads %s, which the release lacks", name, p)
			}
		}
	}
	if !strings.Contains(makefile, "-dir $(DIST)/release -out $(DIST)/tokenrefresher-release.zip") {
		t.Error("Makefile: make package no longer writes dist/tokenrefresher-release.zip")
	}
	// The release section's commands.
	readme := readText(t, "README.md")
	i := strings.Index(readme, "### Deploy from the release")
	if i < 0 {
		t.Fatal(`infra/README.md has no "### Deploy from the release"`)
	}
	section := readme[i:]
	section = section[:strings.Index(section[4:], "\n### ")+4]
	used := regexp.MustCompile(`(?:--template-file |--src |@)((?:infra|adf|dist)/[\w./-]+)`).FindAllStringSubmatch(section, -1)
	if len(used) < 3 {
		t.Fatalf("infra/README.md's release section uses %d files; want the template, its parameters and the package", len(used))
	}
	for _, u := range used {
		if !inRelease(u[1]) {
			t.Errorf("infra/README.md's release section uses %s, which the release lacks", u[1])
		}
	}
	for _, block := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(section, -1) {
		if regexp.MustCompile(`(?m)^\s*(make|go) `).MatchString(block[1]) {
			t.Error("infra/README.md's release section runs make or go; the release is for deploying without them")
		}
	}
	// Every relative link in a guide the release ships leads to a file the
	// release ships: a reader of the unpacked zip has no repository.
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	for _, f := range files {
		err := filepath.WalkDir(filepath.Join(repoRoot, f), func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".md") {
				return err
			}
			rel, _ := filepath.Rel(repoRoot, path)
			for _, m := range link.FindAllStringSubmatch(readText(t, path), -1) {
				target, _, _ := strings.Cut(m[1], "#")
				if target == "" || strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				p := filepath.ToSlash(filepath.Join(filepath.Dir(rel), target))
				if !inRelease(p) {
					t.Errorf("%s links to %s, which the release lacks", filepath.ToSlash(rel), p)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
