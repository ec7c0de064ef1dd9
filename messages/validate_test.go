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

// TestImageRef: the validator uses the parser the runtime pulls with, so
// the references it once accepted and the runtime refused are refused here
// (runtime's TestImageRefAgreement checks both sides on one table).
func TestImageRef(t *testing.T) {
	const hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct {
		in, want string // want "" means refused
	}{
		{"demo:v1", "docker.io/library/demo:v1"},
		{"demo", "docker.io/library/demo:latest"},
		{"registry.local:5000/team/app:1.2", "registry.local:5000/team/app:1.2"},
		{"demo@sha256:" + hex64, "docker.io/library/demo@sha256:" + hex64},
		{"demo:v1@sha256:" + hex64, "docker.io/library/demo@sha256:" + hex64},
		{"ghcr.io/acme/demo", "ghcr.io/acme/demo:latest"},
		// Accepted by the old pattern, refused by the runtime.
		{hex64, ""},
		{"0:0:0", ""},
		{strings.Repeat("a", 256), ""},
		{"registry.local:5000/" + strings.Repeat("a", 256) + ":v1", ""},
		{"registry.local:5000/" + strings.Repeat("a", 255) + ":v1", "registry.local:5000/" + strings.Repeat("a", 255) + ":v1"},
		// Refused by both.
		{"", ""},
		{"Demo:V1", ""},
		{"demo:v1:v2", ""},
		{"demo:v1\x00", ""},
		{" demo:v1", ""},
	}
	for _, tt := range tests {
		t.Run(short(tt.in), func(t *testing.T) {
			got, err := NormalizeImageRef(tt.in)
			verr := ValidateImageRef(tt.in)
			if (err == nil) != (verr == nil) {
				t.Fatalf("NormalizeImageRef and ValidateImageRef disagree: %v vs %v", err, verr)
			}
			if tt.want == "" {
				if err == nil {
					t.Fatalf("NormalizeImageRef(%q) = %q; want an error", tt.in, got)
				}
				if tt.in != "" && !strings.Contains(err.Error(), "invalid image reference") {
					t.Errorf("error %q does not say the reference is invalid", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("NormalizeImageRef(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}
