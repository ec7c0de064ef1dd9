package messages

import (
	"fmt"
	"math"
	"strings"
	"testing"
)

// TestValidateLimits: every refusal row is a spec the validator accepted
// before limits.go (each reached a node: exec, the kernel, the filesystem,
// an HTTP request), and every error names the field and the limit.
func TestValidateLimits(t *testing.T) {
	ok := func() *ServiceSpec { return &ServiceSpec{Name: "web", Image: "demo:v1", Replicas: 1} }
	big := func(n int) string { return strings.Repeat("x", n) }
	manyEnv := func(s *ServiceSpec) {
		s.Env = map[string]string{}
		for i := 0; i < 9; i++ {
			s.Env[fmt.Sprintf("V%d", i)] = big(30 << 10)
		}
	}
	tests := []struct {
		name    string
		mutate  func(*ServiceSpec)
		wantErr string // substring; "" means valid
	}{
		// Accepted: what real services carry.
		{"pem in env", func(s *ServiceSpec) {
			s.Env = map[string]string{"CERT": "-----BEGIN CERTIFICATE-----\r\nMIIB\n\t-----END CERTIFICATE-----\n"}
		}, ""},
		{"env value at the limit", func(s *ServiceSpec) { s.Env = map[string]string{"A": big(MaxEnvValueBytes)} }, ""},
		{"script with newlines", func(s *ServiceSpec) { s.Command = []string{"sh", "-c", "echo a\necho b"} }, ""},
		{"dotted hostname", func(s *ServiceSpec) { s.Hostname = "web-1.example" }, ""},
		{"workdir", func(s *ServiceSpec) { s.Workdir = "/app" }, ""},
		{"uid:gid", func(s *ServiceSpec) { s.User = "1000:1000" }, ""},
		{"user name", func(s *ServiceSpec) { s.User = "www-data" }, ""},
		{"labels", func(s *ServiceSpec) { s.Labels = map[string]string{"com.example/team": "a b", "tier": ""} }, ""},
		{"secret", func(s *ServiceSpec) {
			s.Secrets = []*SecretRef{{SecretName: "db.password", Target: "db_password", Mode: 0o400}, {SecretName: "tls"}}
		}, "secrets are not supported yet"}, // well-formed, so only that

		{"volumes", func(s *ServiceSpec) {
			s.Volumes = []*VolumeMount{{Source: "data", Target: "/data"}, {Type: VolumeMount_TYPE_BIND, Source: "/srv/conf", Target: "/etc/app", ReadOnly: true}, {Type: VolumeMount_TYPE_TMPFS, Target: "/tmp"}}
		}, "volumes are not supported yet"},

		{"http health check", func(s *ServiceSpec) {
			s.HealthCheck = &HealthCheck{Kind: HealthCheck_KIND_HTTP, HttpPath: "/healthz?full=1", HttpHeaders: map[string]string{"X-Probe": "warren\t1", "Authorization": "Bearer abc"}}
		}, ""},
		{"canary steps", func(s *ServiceSpec) {
			s.UpdateConfig = &UpdateConfig{CanarySteps: []uint32{10, 50, 100}, MaxFailureRatio: 0.2}
		}, "canary steps are not supported yet"}, // well-formed, so only that

		// Characters.
		{"NUL in env value", func(s *ServiceSpec) { s.Env = map[string]string{"A": "x\x00y"} }, `environment variable "A" holds a NUL byte`},
		{"escape in env value", func(s *ServiceSpec) { s.Env = map[string]string{"A": "\x1b[2J"} }, "control character U+001B"},
		{"invalid UTF-8 in label", func(s *ServiceSpec) { s.Labels = map[string]string{"a": "\xff"} }, "invalid UTF-8"},
		{"NUL in label key", func(s *ServiceSpec) { s.Labels = map[string]string{"a\x00b": "c"} }, "holds a NUL byte"},
		{"newline in label value", func(s *ServiceSpec) { s.Labels = map[string]string{"a": "b\nc"} }, "control character U+000A"},
		{"= in label key", func(s *ServiceSpec) { s.Labels = map[string]string{"a=b": "c"} }, "holds '=' or white space"},
		{"empty label key", func(s *ServiceSpec) { s.Labels = map[string]string{"": "c"} }, "empty key"},
		{"NUL in command", func(s *ServiceSpec) { s.Command = []string{"sh\x00"} }, "command and args: item 1 holds a NUL byte"},
		{"NUL in args", func(s *ServiceSpec) { s.Command, s.Args = []string{"sh"}, []string{"-c", "x\x00"} }, "item 3 holds a NUL"},
		{"NUL in hostname", func(s *ServiceSpec) { s.Hostname = "web\x00" }, "invalid hostname"},
		{"hostname with underscore", func(s *ServiceSpec) { s.Hostname = "web_1" }, "invalid hostname"},
		{"hostname with empty label", func(s *ServiceSpec) { s.Hostname = "web..example" }, "invalid hostname"},
		{"hostname starting with -", func(s *ServiceSpec) { s.Hostname = "-web" }, "invalid hostname"},
		{"NUL in workdir", func(s *ServiceSpec) { s.Workdir = "/app\x00" }, "workdir holds a NUL byte"},
		{"relative workdir", func(s *ServiceSpec) { s.Workdir = "app" }, "absolute path"},
		{"newline in user", func(s *ServiceSpec) { s.User = "root\n" }, "invalid user"},
		{"user with three parts", func(s *ServiceSpec) { s.User = "a:b:c" }, "invalid user"},
		{"NUL in constraint value", func(s *ServiceSpec) { s.Constraints = []string{"node.labels.zone==a\x00"} }, "constraint 1 holds a NUL byte"},
		{"NUL in grpc service", func(s *ServiceSpec) {
			s.HealthCheck = &HealthCheck{Kind: HealthCheck_KIND_GRPC, GrpcService: "a\x00"}
		}, "gRPC service holds a NUL"},
		{"NUL in exec health check", func(s *ServiceSpec) {
			s.HealthCheck = &HealthCheck{Kind: HealthCheck_KIND_EXEC, ExecCommand: []string{"true\x00"}}
		}, "health check command: item 1 holds a NUL"},

		// Sizes.
		{"env value over 32 KiB", func(s *ServiceSpec) { s.Env = map[string]string{"A": big(MaxEnvValueBytes + 1)} }, "more than the limit of 32 KiB"},
		{"whole env over 256 KiB", manyEnv, "the environment is 276516 bytes in all, more than the limit of 256 KiB"},
		{"env name over 256", func(s *ServiceSpec) { s.Env = map[string]string{"A" + big(256): "1"} }, "more than the limit of 256"},
		{"label key over 253", func(s *ServiceSpec) { s.Labels = map[string]string{big(254): "1"} }, "more than the limit of 253 bytes"},
		{"label value over 4 KiB", func(s *ServiceSpec) { s.Labels = map[string]string{"a": big(4<<10 + 1)} }, "more than the limit of 4 KiB"},
		{"too many labels", func(s *ServiceSpec) {
			s.Labels = map[string]string{}
			for i := 0; i <= MaxLabels; i++ {
				s.Labels[fmt.Sprint("l", i)] = ""
			}
		}, "257 labels is more than the limit of 256"},
		{"command over 128 KiB", func(s *ServiceSpec) { s.Command, s.Args = []string{big(64 << 10)}, []string{big(64 << 10)} }, "command and args is 131074 bytes in all, more than the limit of 128 KiB"},
		{"too many args", func(s *ServiceSpec) { s.Args = make([]string, MaxCommandItems+1) }, "1025 items, more than the limit of 1024"},
		{"hostname over 64", func(s *ServiceSpec) { s.Hostname = big(30) + "." + big(34) }, "invalid hostname"},
		{"hostname label over 63", func(s *ServiceSpec) { s.Hostname = big(64) }, "invalid hostname"},
		{"too many ports", func(s *ServiceSpec) {
			for i := 0; i <= MaxPorts; i++ {
				s.Ports = append(s.Ports, &PortConfig{TargetPort: 80, PublishedPort: uint32(10000 + i)})
			}
		}, "129 ports is more than the limit of 128"},
		{"too many constraints", func(s *ServiceSpec) {
			for i := 0; i <= MaxConstraints; i++ {
				s.Constraints = append(s.Constraints, fmt.Sprintf("node.labels.l%d==a", i))
			}
		}, "65 constraints is more than the limit of 64"},
		{"spec over 1 MiB", func(s *ServiceSpec) {
			// Every label within its limits, the whole beyond MaxSpecBytes.
			s.Labels = map[string]string{}
			for i := 0; i < MaxLabels; i++ {
				s.Labels[fmt.Sprintf("label%03d", i)] = big(MaxLabelValueBytes)
			}
		}, "more than the limit of 1 MiB"},

		// Secret targets: one file name under /run/secrets.
		{"secret target escapes", func(s *ServiceSpec) { s.Secrets = []*SecretRef{{SecretName: "db", Target: "../../etc/shadow"}} }, "must be a plain file name under /run/secrets"},
		{"absolute secret target", func(s *ServiceSpec) { s.Secrets = []*SecretRef{{SecretName: "db", Target: "/etc/shadow"}} }, "plain file name"},
		{"secret target ..", func(s *ServiceSpec) { s.Secrets = []*SecretRef{{SecretName: "db", Target: ".."}} }, "plain file name"},
		{"secret target in a subdir", func(s *ServiceSpec) { s.Secrets = []*SecretRef{{SecretName: "db", Target: "a/b"}} }, "plain file name"},
		{"NUL in secret target", func(s *ServiceSpec) { s.Secrets = []*SecretRef{{SecretName: "db", Target: "x\x00"}} }, "target holds a NUL byte"},
		{"secret name escapes", func(s *ServiceSpec) { s.Secrets = []*SecretRef{{SecretName: "../db"}} }, "invalid secret name"},
		{"secret target twice", func(s *ServiceSpec) {
			s.Secrets = []*SecretRef{{SecretName: "a", Target: "x"}, {SecretName: "b", Target: "x"}}
		}, "is used twice"},
		{"setuid secret", func(s *ServiceSpec) { s.Secrets = []*SecretRef{{SecretName: "db", Mode: 0o4755}} }, "bits beyond 0777"},
		{"too many secrets", func(s *ServiceSpec) {
			for i := 0; i <= MaxSecrets; i++ {
				s.Secrets = append(s.Secrets, &SecretRef{SecretName: fmt.Sprint("s", i)})
			}
		}, "65 secrets is more than the limit of 64"},

		// Volume targets: clean absolute paths.
		{"relative volume target", func(s *ServiceSpec) { s.Volumes = []*VolumeMount{{Source: "data", Target: "data"}} }, "clean absolute path"},
		{"volume target with ..", func(s *ServiceSpec) { s.Volumes = []*VolumeMount{{Source: "data", Target: "/data/../etc"}} }, "clean absolute path"},
		{"volume over /", func(s *ServiceSpec) { s.Volumes = []*VolumeMount{{Source: "data", Target: "/"}} }, "other than /"},
		{"NUL in volume target", func(s *ServiceSpec) { s.Volumes = []*VolumeMount{{Source: "data", Target: "/data\x00"}} }, "target holds a NUL byte"},
		{"volume target twice", func(s *ServiceSpec) {
			s.Volumes = []*VolumeMount{{Source: "a", Target: "/d"}, {Source: "b", Target: "/d"}}
		}, "mounted twice"},
		{"volume name escapes", func(s *ServiceSpec) { s.Volumes = []*VolumeMount{{Source: "../../x", Target: "/d"}} }, "volume name"},
		{"relative bind source", func(s *ServiceSpec) {
			s.Volumes = []*VolumeMount{{Type: VolumeMount_TYPE_BIND, Source: "srv/../..", Target: "/d"}}
		}, "clean absolute host path"},
		{"tmpfs with a source", func(s *ServiceSpec) {
			s.Volumes = []*VolumeMount{{Type: VolumeMount_TYPE_TMPFS, Source: "/etc", Target: "/d"}}
		}, "a tmpfs has no source"},
		{"unknown volume type", func(s *ServiceSpec) { s.Volumes = []*VolumeMount{{Type: 7, Source: "x", Target: "/d"}} }, "volumes[0].type has the unknown value 7"},

		// Health checks: nothing that splits the probe's request.
		{"CRLF in health header", func(s *ServiceSpec) {
			s.HealthCheck = &HealthCheck{Kind: HealthCheck_KIND_HTTP, HttpPath: "/", HttpHeaders: map[string]string{"X-A": "1\r\nX-Evil: 1"}}
		}, `health check header "X-A" holds the control character U+000D`},
		{"NUL in health header", func(s *ServiceSpec) {
			s.HealthCheck = &HealthCheck{Kind: HealthCheck_KIND_HTTP, HttpPath: "/", HttpHeaders: map[string]string{"X-A": "\x00"}}
		}, "holds a NUL byte"},
		{"bad health header name", func(s *ServiceSpec) {
			s.HealthCheck = &HealthCheck{Kind: HealthCheck_KIND_HTTP, HttpPath: "/", HttpHeaders: map[string]string{"X A:": "1"}}
		}, "not an HTTP header name"},
		{"CRLF in health path", func(s *ServiceSpec) {
			s.HealthCheck = &HealthCheck{Kind: HealthCheck_KIND_HTTP, HttpPath: "/x HTTP/1.1\r\nHost: evil\r\n\r\n"}
		}, "holds a space or control character"},
		{"bad escape in health path", func(s *ServiceSpec) {
			s.HealthCheck = &HealthCheck{Kind: HealthCheck_KIND_HTTP, HttpPath: "/%zz"}
		}, "is not a URL path"},

		// Enums and update settings no code path handles.
		{"unknown mode", func(s *ServiceSpec) { s.Mode = 99 }, "mode has the unknown value 99: use one of"},
		{"unknown health kind", func(s *ServiceSpec) { s.HealthCheck = &HealthCheck{Kind: 9} }, "health_check.kind has the unknown value 9"},
		{"unknown restart condition", func(s *ServiceSpec) { s.RestartPolicy = &RestartPolicy{Condition: 42} }, "restart_policy.condition has the unknown value 42"},
		{"failure ratio over 1", func(s *ServiceSpec) { s.UpdateConfig = &UpdateConfig{MaxFailureRatio: 2} }, "update config: max failure ratio 2 must be between 0 and 1"},
		{"NaN failure ratio", func(s *ServiceSpec) { s.RollbackConfig = &UpdateConfig{MaxFailureRatio: float32(math.NaN())} }, "rollback config: max failure ratio NaN"},
		{"falling canary steps", func(s *ServiceSpec) { s.UpdateConfig = &UpdateConfig{CanarySteps: []uint32{50, 10}} }, "must be rising percentages"},
		{"canary over 100", func(s *ServiceSpec) { s.UpdateConfig = &UpdateConfig{CanarySteps: []uint32{150}} }, "must be rising percentages"},
		{"stop grace period that overflows", func(s *ServiceSpec) { s.StopGracePeriodMs = math.MaxInt64 / 1000 }, "stop grace period of 9223372036854775 ms is more than the limit of 30 days"},
		{"restart window over 30 days", func(s *ServiceSpec) { s.RestartPolicy = &RestartPolicy{WindowMs: MaxDurationMs + 1} }, "restart window of"},
		{"health interval over 30 days", func(s *ServiceSpec) {
			s.HealthCheck = &HealthCheck{Kind: HealthCheck_KIND_TCP, IntervalMs: 1 << 50}
		}, "health check interval of"},
		{"expected status not HTTP", func(s *ServiceSpec) {
			s.HealthCheck = &HealthCheck{Kind: HealthCheck_KIND_HTTP, HttpPath: "/", HttpExpectedStatus: 2000}
		}, "expected status 2000 is not an HTTP status"},
		{"negative update delay", func(s *ServiceSpec) { s.UpdateConfig = &UpdateConfig{DelayMs: -1} }, "delays cannot be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ok()
			tt.mutate(s)
			err := ValidateServiceSpec(s)
			if !wantValidation(t, err, tt.wantErr) {
				return
			}
			if len(err.Error()) > 4096 {
				t.Errorf("error is %d bytes: it must quote offending values short", len(err.Error()))
			}
		})
	}
}
