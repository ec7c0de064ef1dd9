package messages

import (
	"strings"
	"testing"
)

func TestValidateServiceSpec(t *testing.T) {
	ok := func() *ServiceSpec { return &ServiceSpec{Name: "web", Image: "demo:v1", Replicas: 3} }
	cases := []struct {
		name    string
		mutate  func(*ServiceSpec)
		wantErr string
	}{
		{"valid", func(*ServiceSpec) {}, ""},
		{"registry with port", func(s *ServiceSpec) { s.Image = "registry.local:5000/team/app:1.2" }, ""},
		{"upper-case name", func(s *ServiceSpec) { s.Name = "Web" }, "invalid service name"},
		{"empty name", func(s *ServiceSpec) { s.Name = "" }, "invalid service name"},
		{"no image", func(s *ServiceSpec) { s.Image = "" }, "no image given"},
		{"bad image", func(s *ServiceSpec) { s.Image = "demo:v1:v2" }, "invalid image reference"},
		{"absurd replicas", func(s *ServiceSpec) { s.Replicas = 1 << 40 }, "more than the limit"},
		{"global with replicas", func(s *ServiceSpec) { s.Mode = ServiceMode_SERVICE_MODE_GLOBAL }, "global service"},
		{"bad env", func(s *ServiceSpec) { s.Env = map[string]string{"1X": "y"} }, "environment variable"},
		{"tiny memory", func(s *ServiceSpec) {
			s.Resources = &ResourceRequirements{Limits: &Resources{MemoryBytes: 1024}}
		}, "6 MiB"},
		{"bad port", func(s *ServiceSpec) { s.Ports = []*PortConfig{{TargetPort: 70000}} }, "invalid port"},
		{"bad constraint", func(s *ServiceSpec) { s.Constraints = []string{"zone=a"} }, "invalid constraint"},
		{"unknown constraint key", func(s *ServiceSpec) { s.Constraints = []string{"node.color==red"} }, "unknown key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := ok()
			tc.mutate(s)
			err := ValidateServiceSpec(s)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestTemplateEqual(t *testing.T) {
	a := &ServiceSpec{Name: "web", Image: "demo:v1", Replicas: 3}
	b := &ServiceSpec{Name: "web", Image: "demo:v1", Replicas: 10}
	c := &ServiceSpec{Name: "web", Image: "demo:v2", Replicas: 3}
	if !TemplateEqual(a, b) || TemplateEqual(a, c) {
		t.Fatal("TemplateEqual must ignore replicas only")
	}
	if a.Replicas != 3 {
		t.Fatal("TemplateEqual mutated its input")
	}
}
