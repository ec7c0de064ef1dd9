package messages

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"

	"github.com/distribution/reference"
	"google.golang.org/protobuf/proto"
)

// MaxReplicas bounds a replicated service: more than this on a small or edge
// cluster is a typo, and refusing it keeps one command from flooding the log.
const MaxReplicas = 10000

// MeshPeerFormat is the MeshPeer record format managers write (see
// netmesh.PeerFormat, which must match).
const MeshPeerFormat = 1

var (
	nameRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	// portNameRe: an IANA-style service name, the label of a port's SRV
	// record (_NAME._tcp.service.warren).
	portNameRe = regexp.MustCompile(`^[a-z]([a-z0-9-]{0,13}[a-z0-9])?$`)
	envRe      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// NewID returns a random 24-hex-digit id for services and tasks.
func NewID() string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

// ValidateServiceName checks a service name is a DNS label, since it becomes
// one (web.warren).
func ValidateServiceName(name string) error {
	if !nameRe.MatchString(name) {
		return fmt.Errorf("invalid service name %q: use 1-63 lower-case letters, digits and '-', starting and ending with a letter or digit", name)
	}
	return nil
}

// ValidateImageRef checks an image reference is well formed (it does not
// check that the image exists), with the parser the runtime pulls with.
func ValidateImageRef(ref string) error {
	_, err := NormalizeImageRef(ref)
	return err
}

// NormalizeImageRef parses ref with the rules Docker and containerd use
// (github.com/distribution/reference) and returns containerd's canonical
// name: "demo:v1" -> "docker.io/library/demo:v1", "demo" ->
// "docker.io/library/demo:latest"; a digest is kept, a tag beside a digest
// dropped. It is Warren's one image-reference parser: the validator and the
// runtime both call it, so a reference the api accepts is one the runtime
// can pull (a hand-written pattern here once accepted a bare 64-hex id,
// "0:0:0" and names over 255 characters that the runtime then refused).
func NormalizeImageRef(ref string) (string, error) {
	if strings.TrimSpace(ref) == "" {
		return "", fmt.Errorf("no image given: pass --image NAME[:TAG], e.g. --image demo:v1")
	}
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", fmt.Errorf("invalid image reference %s: %v: expected NAME[:TAG][@DIGEST] in lower case, a repository path of at most %d characters, e.g. demo:v1 or registry.local:5000/team/app:1.2", short(ref), err, reference.RepositoryNameTotalLengthMax)
	}
	return named.String(), nil
}

// ValidateServiceSpec checks everything a spec can get wrong on its own and
// returns every problem at once, each saying what to fix.
func ValidateServiceSpec(s *ServiceSpec) error {
	if s == nil {
		return fmt.Errorf("no service spec given")
	}
	var errs []string
	add := func(err error) {
		if err != nil {
			errs = append(errs, err.Error())
		}
	}
	add(ValidateServiceName(s.Name))
	add(ValidateImageRef(s.Image))
	if s.Mode == ServiceMode_SERVICE_MODE_REPLICATED && s.Replicas > MaxReplicas {
		errs = append(errs, fmt.Sprintf("replicas %d is more than the limit of %d: scale to a smaller number", s.Replicas, MaxReplicas))
	}
	if s.Mode == ServiceMode_SERVICE_MODE_GLOBAL && s.Replicas != 0 {
		errs = append(errs, "a global service runs one task per node: drop --replicas or use --mode replicated")
	}
	for k := range s.Env {
		if !envRe.MatchString(k) {
			errs = append(errs, fmt.Sprintf("invalid environment variable name %q: use letters, digits and '_', not starting with a digit", k))
		}
	}
	if r := s.GetResources(); r != nil {
		for _, x := range []*Resources{r.Limits, r.Reservations} {
			if x.GetMemoryBytes() < 0 || x.GetNanoCpus() < 0 {
				errs = append(errs, "resources cannot be negative")
			}
		}
		if l := r.GetLimits().GetMemoryBytes(); l != 0 && l < 6<<20 {
			errs = append(errs, fmt.Sprintf("memory limit %d bytes is below the 6 MiB runc needs: raise --limit-memory", l))
		}
	}
	errs = append(errs, validateUpdateConfig(s.GetUpdateConfig())...)
	if rp := s.GetRestartPolicy(); rp != nil && (rp.DelayMs < 0 || rp.MaxDelayMs < 0 || rp.WindowMs < 0) {
		errs = append(errs, "restart delays cannot be negative")
	}
	seen := map[string]bool{}
	for _, p := range s.Ports {
		if p.TargetPort == 0 || p.TargetPort > 65535 || p.PublishedPort > 65535 {
			errs = append(errs, fmt.Sprintf("invalid port %d:%d: ports are 1-65535", p.PublishedPort, p.TargetPort))
		}
		if p.Name != "" && !portNameRe.MatchString(p.Name) {
			errs = append(errs, fmt.Sprintf("invalid port name %q: use lowercase letters, digits and inner hyphens, at most 15 (it labels the DNS SRV record), e.g. http", p.Name))
		}
		if p.Protocol != "" && p.Protocol != "tcp" && p.Protocol != "udp" {
			errs = append(errs, fmt.Sprintf("invalid protocol %q: use tcp or udp", p.Protocol))
		}
		k := fmt.Sprintf("%s/%d", p.Protocol, p.PublishedPort)
		if p.PublishedPort != 0 && seen[k] {
			errs = append(errs, fmt.Sprintf("port %d is published twice", p.PublishedPort))
		}
		seen[k] = true
	}
	for _, c := range s.Constraints {
		if _, _, _, err := ParseConstraint(c); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if hc := s.GetHealthCheck(); hc != nil {
		if hc.IntervalMs < 0 || hc.TimeoutMs < 0 || hc.StartPeriodMs < 0 {
			errs = append(errs, "health check durations cannot be negative")
		}
		if hc.Port > 65535 {
			errs = append(errs, fmt.Sprintf("invalid health check port %d", hc.Port))
		}
		if hc.Kind == HealthCheck_KIND_EXEC && len(hc.ExecCommand) == 0 {
			errs = append(errs, "an exec health check needs a command")
		}
		if hc.Kind == HealthCheck_KIND_HTTP && !strings.HasPrefix(hc.HttpPath, "/") {
			errs = append(errs, fmt.Sprintf("health check path %q must start with /", hc.HttpPath))
		}
	}
	// Refused until something honours them (unbuilt.go): a secret accepted
	// and never mounted would look protected and be missing.
	errs = append(errs, refuseUnbuilt(s)...)
	errs = append(errs, validateIsolation(s)...)
	errs = append(errs, validateLimits(s)...)
	if err := ValidatePublishedPorts(s, DefaultReservedPorts()); err != nil {
		errs = append(errs, err.Error())
	}
	if s.StopGracePeriodMs < 0 {
		errs = append(errs, "stop grace period cannot be negative")
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid service spec: %s", strings.Join(errs, "; "))
	}
	return nil
}

// ParseConstraint splits "node.labels.zone==a" into key, operator and value.
func ParseConstraint(c string) (key, op, value string, err error) {
	// Split at the first operator, so values may contain "==" or "!=".
	i, j := strings.Index(c, "=="), strings.Index(c, "!=")
	switch {
	case i < 0 && j < 0:
		return "", "", "", fmt.Errorf("invalid constraint %q: expected KEY==VALUE or KEY!=VALUE, e.g. node.labels.zone==a", c)
	case i < 0 || (j >= 0 && j < i):
		i, op = j, "!="
	default:
		op = "=="
	}
	key, value = strings.TrimSpace(c[:i]), strings.TrimSpace(c[i+2:])
	if key == "" || value == "" {
		return "", "", "", fmt.Errorf("invalid constraint %q: expected KEY==VALUE or KEY!=VALUE, e.g. node.labels.zone==a", c)
	}
	switch {
	case key == "node.id", key == "node.hostname", key == "node.role", key == "node.platform.arch", key == "node.platform.os",
		strings.HasPrefix(key, "node.labels.") && len(key) > len("node.labels."):
		return key, op, value, nil
	}
	return "", "", "", fmt.Errorf("invalid constraint %q: unknown key %q (use node.id, node.hostname, node.role, node.platform.arch, node.platform.os or node.labels.<name>)", c, key)
}

// TemplateEqual reports whether two specs run the same containers, that is
// whether they differ in nothing but replica count and how updates roll
// (scaling, or changing the update settings, replaces nothing).
func TemplateEqual(a, b *ServiceSpec) bool {
	if a == nil || b == nil {
		return a == b
	}
	x, y := proto.Clone(a).(*ServiceSpec), proto.Clone(b).(*ServiceSpec)
	x.Replicas, y.Replicas = 0, 0
	x.UpdateConfig, y.UpdateConfig = nil, nil
	x.RollbackConfig, y.RollbackConfig = nil, nil
	return proto.Equal(x, y)
}

// MaxCanaryReplicas bounds the canary tasks a deployment runs beside the
// stable ones.
const MaxCanaryReplicas = 100

// validateUpdateConfig checks how a deployment rolls.
func validateUpdateConfig(u *UpdateConfig) []string {
	if u == nil {
		return nil
	}
	var errs []string
	if u.DelayMs < 0 || u.MonitorMs < 0 || u.GraceMs < 0 {
		errs = append(errs, "update delay, monitor and grace periods cannot be negative")
	}
	if u.MaxFailureRatio < 0 || u.MaxFailureRatio > 1 {
		errs = append(errs, fmt.Sprintf("max failure ratio %g is outside 0-1: give the share of new tasks that may fail, e.g. 0.2", u.MaxFailureRatio))
	}
	if u.CanaryWeight > 100 {
		errs = append(errs, fmt.Sprintf("canary weight %d is outside 0-100: give the canary's percentage of requests, e.g. --weight 10", u.CanaryWeight))
	}
	if u.CanaryReplicas > MaxCanaryReplicas {
		errs = append(errs, fmt.Sprintf("canary replicas %d is more than the limit of %d", u.CanaryReplicas, MaxCanaryReplicas))
	}
	if u.Parallelism > MaxReplicas {
		errs = append(errs, fmt.Sprintf("update parallelism %d is more than the limit of %d: 0 updates every task at once", u.Parallelism, MaxReplicas))
	}
	return errs
}
