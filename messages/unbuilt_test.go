package messages

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// TestEverySpecFieldDecided fails when a ServiceSpec field is neither built
// nor refused: add it to specFieldStatus, saying which.
func TestEverySpecFieldDecided(t *testing.T) {
	seen := map[string]bool{}
	var walk func(prefix string, md protoreflect.MessageDescriptor)
	walk = func(prefix string, md protoreflect.MessageDescriptor) {
		fields := md.Fields()
		for i := 0; i < fields.Len(); i++ {
			fd := fields.Get(i)
			path := prefix + string(fd.Name())
			if _, ok := specFieldStatus[path]; ok {
				seen[path] = true
				continue // decided as a whole (e.g. refused with everything under it)
			}
			if fd.Kind() == protoreflect.MessageKind && !fd.IsMap() {
				walk(path+".", fd.Message())
				continue
			}
			t.Errorf("spec field %q is neither built nor refused: add it to specFieldStatus in unbuilt.go", path)
		}
	}
	walk("", (&ServiceSpec{}).ProtoReflect().Descriptor())
	for path := range specFieldStatus {
		if !seen[path] {
			t.Errorf("specFieldStatus names %q, which ServiceSpec does not have", path)
		}
	}
}

// TestUnbuiltFieldsRefused sets each refused field, alone, on a valid spec
// and expects exactly its error; the zero value (and an empty message) is
// accepted, since a client that sends defaults asks for nothing.
func TestUnbuiltFieldsRefused(t *testing.T) {
	valid := func() *ServiceSpec { return &ServiceSpec{Name: "web", Image: "demo:v1", Replicas: 1} }
	tests := []struct {
		name    string
		mutate  func(*ServiceSpec)
		wantErr string // "" means valid
	}{
		{"start-first order is built", func(s *ServiceSpec) {
			s.UpdateConfig = &UpdateConfig{Order: UpdateOrder_UPDATE_ORDER_START_FIRST}
		}, ""},
		{"empty update config", func(s *ServiceSpec) { s.UpdateConfig = &UpdateConfig{} }, ""},
		{"empty rollback config", func(s *ServiceSpec) { s.RollbackConfig = &UpdateConfig{} }, ""},
		{"rolling strategy is the zero value", func(s *ServiceSpec) {
			s.UpdateConfig = &UpdateConfig{Strategy: DeployStrategy_DEPLOY_STRATEGY_ROLLING}
		}, ""},
		{"canary strategy is built", func(s *ServiceSpec) {
			s.UpdateConfig = &UpdateConfig{Strategy: DeployStrategy_DEPLOY_STRATEGY_CANARY, CanaryReplicas: 1, CanaryWeight: 10}
		}, ""},
		{"blue/green is built", func(s *ServiceSpec) {
			s.UpdateConfig = &UpdateConfig{Strategy: DeployStrategy_DEPLOY_STRATEGY_BLUE_GREEN, SwitchManual: true, GraceMs: 60000}
		}, ""},
		{"rolling settings are built", func(s *ServiceSpec) {
			s.UpdateConfig = &UpdateConfig{Parallelism: 2, DelayMs: 5000, MonitorMs: 1, MaxFailureRatio: 0.2, FailureAction: FailureAction_FAILURE_ACTION_PAUSE}
		}, ""},
		{"failure ratio above 1", func(s *ServiceSpec) { s.UpdateConfig = &UpdateConfig{MaxFailureRatio: 1.5} }, "max failure ratio 1.5 is outside 0-1"},
		{"canary weight above 100", func(s *ServiceSpec) { s.UpdateConfig = &UpdateConfig{CanaryWeight: 101} }, "canary weight 101 is outside 0-100"},
		{"negative monitor", func(s *ServiceSpec) { s.UpdateConfig = &UpdateConfig{MonitorMs: -1} }, "cannot be negative"},
		{"canary steps", func(s *ServiceSpec) { s.UpdateConfig = &UpdateConfig{CanarySteps: []uint32{10, 100}} }, "canary steps are not supported yet"},
		{"rollback config", func(s *ServiceSpec) { s.RollbackConfig = &UpdateConfig{Parallelism: 1} }, "rollback config is not supported yet"},
		{"secret", func(s *ServiceSpec) { s.Secrets = []*SecretRef{{SecretName: "db"}} }, "secrets are not supported yet: remove them from the spec"},
		{"volume", func(s *ServiceSpec) { s.Volumes = []*VolumeMount{{Source: "data", Target: "/data"}} }, "volumes are not supported yet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := valid()
			tt.mutate(s)
			err := ValidateServiceSpec(s)
			if wantValidation(t, err, tt.wantErr) && strings.Contains(tt.wantErr, "not supported") && !strings.Contains(err.Error(), "remove") {
				t.Fatalf("error %q does not say what to do", err)
			}
		})
	}
}

// wantValidation checks a ValidateServiceSpec result against the wanted
// error substring ("" means valid), and reports whether an error was
// wanted (and found), so a caller can check more of it.
func wantValidation(t *testing.T, err error, wantErr string) bool {
	t.Helper()
	if wantErr == "" {
		if err != nil {
			t.Fatalf("ValidateServiceSpec: %v", err)
		}
		return false
	}
	if err == nil || !strings.Contains(err.Error(), wantErr) {
		t.Fatalf("ValidateServiceSpec = %v; want an error containing %q", err, wantErr)
	}
	return true
}
