package messages

import (
	"fmt"
	"golang.org/x/net/http/httpguts"
	"math"
	"net/url"
	"path"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Limits on what a ServiceSpec may hold. Everything in a spec reaches some
// node: the runtime's exec (env, command), the kernel (hostname), the
// filesystem (secret and volume targets), an HTTP request (health headers)
// or the raft log and every worker's assignment set (all of it). Each limit
// is the smaller of what the receiving end accepts and what a real service
// needs, after Docker and Kubernetes where they have one.
const (
	// MaxSpecBytes bounds a whole encoded spec. A worker receives every
	// task of its node in one assignment set, and remoting refuses messages
	// over 16 MiB: at 1 MiB a set of specs stays far from it, and a spec
	// this large is data that belongs in a secret, a volume or the image.
	MaxSpecBytes = 1 << 20

	// MaxEnvNameBytes, MaxEnvValueBytes and MaxEnvBytes bound environment
	// variables. execve refuses one string over 128 KiB (MAX_ARG_STRLEN) and
	// all of argv+envp over a quarter of the stack limit (2 MiB by default);
	// a 32 KiB value holds a certificate chain.
	MaxEnvNameBytes  = 256
	MaxEnvValueBytes = 32 << 10
	MaxEnvBytes      = 256 << 10 // every NAME=VALUE together

	// MaxCommandBytes bounds command and args together (and a health
	// check's exec command), well inside execve's limits.
	MaxCommandBytes = 128 << 10
	// MaxCommandItems bounds the number of command and args entries.
	MaxCommandItems = 1024

	// MaxLabels, MaxLabelKeyBytes and MaxLabelValueBytes bound service
	// labels: a key as long as a DNS name (Kubernetes' prefix), a value of
	// 4 KiB (containerd's limit on a label).
	MaxLabels          = 256
	MaxLabelKeyBytes   = 253
	MaxLabelValueBytes = 4 << 10

	// MaxHostnameBytes is the kernel's limit on a hostname (__NEW_UTS_LEN);
	// a DNS label is at most 63.
	MaxHostnameBytes      = 64
	MaxHostnameLabelBytes = 63

	// MaxPathBytes bounds workdir and volume paths (PATH_MAX);
	// MaxFileNameBytes a secret's file name (NAME_MAX).
	MaxPathBytes     = 4096
	MaxFileNameBytes = 255

	// Counts: each port is nft rules on every node, each secret and volume a
	// mount, each constraint a filter run for every node at placement.
	MaxPorts            = 128
	MaxSecrets          = 64
	MaxVolumes          = 64
	MaxConstraints      = 64
	MaxConstraintBytes  = 1024
	MaxHealthHeaders    = 32
	MaxHealthHeaderByte = 8 << 10 // every name and value together
	MaxHealthPathBytes  = 2048
	MaxCanarySteps      = 100
	MaxNameBytes        = 253 // secret and volume names, grpc service names

	// MaxDurationMs bounds every duration in a spec (30 days): nodes turn
	// them into time.Duration, which overflows to a negative wait past
	// 292 years of milliseconds, and anything near that is a typo.
	MaxDurationMs = 30 * 24 * 3600 * 1000
)

// lineBreaks are the control characters env values and arguments may hold.
const lineBreaks = "\t\n\r"

var (
	// userRe: a user name or uid, optionally :group or :gid, as useradd
	// accepts them (at most 32 characters each).
	userRe = regexp.MustCompile(`^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,31}(:[A-Za-z0-9_.][A-Za-z0-9_.-]{0,31})?$`)
	// hostLabelRe: one label of an RFC 1123 host name.
	hostLabelRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$`)
	// objectNameRe: a secret or volume name, as Docker accepts them.
	objectNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
)

// badChar returns a description of the first character of s that has no
// place in a spec string, or "". NUL cannot cross execve or a C string and
// truncates what the kernel or runc sees; other control characters (and
// invalid UTF-8) only ever hide something from the person reading the spec
// back. allow lists the control characters the field may hold: env values
// and arguments carry tab and line breaks (a PEM certificate, a script), an
// HTTP header value only tab.
func badChar(s string, allow string) string {
	for i, r := range s {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD"):
			return fmt.Sprintf("invalid UTF-8 at byte %d", i)
		case r == 0:
			return fmt.Sprintf("a NUL byte at byte %d", i)
		case r < utf8.RuneSelf && strings.ContainsRune(allow, r):
		case unicode.IsControl(r):
			return fmt.Sprintf("the control character %U at byte %d", r, i)
		}
	}
	return ""
}

// checkText adds an error when s holds a character badChar refuses or is
// longer than max bytes (0: no length limit here).
func checkText(errs *[]string, field, s string, max int) {
	if c := badChar(s, ""); c != "" {
		*errs = append(*errs, fmt.Sprintf("%s holds %s: remove it (control characters and NUL are not allowed)", field, c))
	}
	if max > 0 && len(s) > max {
		*errs = append(*errs, fmt.Sprintf("%s is %d bytes, more than the limit of %s", field, len(s), bytesLimit(max)))
	}
}

// bytesLimit prints a byte limit the way people think of it.
func bytesLimit(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// short quotes s for an error, cut to a readable length.
func short(s string) string {
	if len(s) > 40 {
		return fmt.Sprintf("%q…", s[:40])
	}
	return fmt.Sprintf("%q", s)
}

// validateLimits checks sizes, characters and paths of every spec field
// that reaches a node, and returns one message per problem.
func validateLimits(s *ServiceSpec) []string {
	var errs []string
	if n := proto.Size(s); n > MaxSpecBytes {
		errs = append(errs, fmt.Sprintf("the spec is %d bytes encoded, more than the limit of %s: move large data (env values, command) into a secret, a volume or the image", n, bytesLimit(MaxSpecBytes)))
	}
	errs = append(errs, checkEnums(s.ProtoReflect(), "")...)
	checkEnv(&errs, s.Env)
	checkLabels(&errs, s.Labels)
	checkCommand(&errs, "command and args", append(append([]string(nil), s.Command...), s.Args...),
		"put long scripts in the image or a volume")
	checkHostname(&errs, s.Hostname)
	if s.Workdir != "" {
		checkText(&errs, "workdir", s.Workdir, MaxPathBytes)
		if !path.IsAbs(s.Workdir) {
			errs = append(errs, fmt.Sprintf("workdir %s must be an absolute path in the container, e.g. /app", short(s.Workdir)))
		}
	}
	if s.User != "" && !userRe.MatchString(s.User) {
		errs = append(errs, fmt.Sprintf("invalid user %s: use NAME, UID, NAME:GROUP or UID:GID (letters, digits, '_', '.', '-'; at most 32 each), e.g. 1000:1000", short(s.User)))
	}
	if len(s.Ports) > MaxPorts {
		errs = append(errs, fmt.Sprintf("%d ports is more than the limit of %d: publish a range through fewer services or a proxy", len(s.Ports), MaxPorts))
	}
	if len(s.Constraints) > MaxConstraints {
		errs = append(errs, fmt.Sprintf("%d constraints is more than the limit of %d", len(s.Constraints), MaxConstraints))
	}
	for i, c := range s.Constraints {
		checkText(&errs, fmt.Sprintf("constraint %d", i+1), c, MaxConstraintBytes)
	}
	checkSecrets(&errs, s.Secrets)
	checkVolumes(&errs, s.Volumes)
	checkHealthCheck(&errs, s.HealthCheck)
	checkDurations(&errs, s)
	if st := s.GetHealthCheck().GetHttpExpectedStatus(); st != 0 && (st < 100 || st > 599) {
		errs = append(errs, fmt.Sprintf("health check expected status %d is not an HTTP status: use 100-599, or 0 for any 2xx/3xx", st))
	}
	checkUpdateConfig(&errs, "update config", s.UpdateConfig)
	checkUpdateConfig(&errs, "rollback config", s.RollbackConfig)
	return errs
}

// checkEnums refuses enum values the spec's schema does not define: proto3
// enums are open, so a peer may send any number, and a switch on the value
// would then fall through to a default nobody chose.
func checkEnums(m protoreflect.Message, prefix string) []string {
	var errs []string
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := prefix + string(fd.Name())
		switch {
		case fd.Kind() == protoreflect.EnumKind && !fd.IsList() && !fd.IsMap():
			if fd.Enum().Values().ByNumber(v.Enum()) == nil {
				errs = append(errs, fmt.Sprintf("%s has the unknown value %d: use one of %s", name, v.Enum(), enumNames(fd.Enum())))
			}
		case fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap():
			errs = append(errs, checkEnums(v.Message(), name+".")...)
		case fd.Kind() == protoreflect.MessageKind && fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				errs = append(errs, checkEnums(l.Get(i).Message(), fmt.Sprintf("%s[%d].", name, i))...)
			}
		}
		return true
	})
	return errs
}

func enumNames(ed protoreflect.EnumDescriptor) string {
	var names []string
	vs := ed.Values()
	for i := 0; i < vs.Len(); i++ {
		names = append(names, string(vs.Get(i).Name()))
	}
	return strings.Join(names, ", ")
}

func checkEnv(errs *[]string, env map[string]string) {
	total := 0
	for k, v := range env {
		total += len(k) + len(v) + 2 // "=" and the terminating NUL execve counts
		if len(k) > MaxEnvNameBytes {
			*errs = append(*errs, fmt.Sprintf("environment variable name %s is %d bytes, more than the limit of %d", short(k), len(k), MaxEnvNameBytes))
		}
		if c := badChar(v, lineBreaks); c != "" {
			*errs = append(*errs, fmt.Sprintf("environment variable %s holds %s in its value: remove it (a value cannot carry NUL or control characters other than tab and line breaks)", short(k), c))
		}
		if len(v) > MaxEnvValueBytes {
			*errs = append(*errs, fmt.Sprintf("environment variable %s is %d bytes, more than the limit of %s: pass large values as a secret or a volume", short(k), len(v), bytesLimit(MaxEnvValueBytes)))
		}
	}
	if total > MaxEnvBytes {
		*errs = append(*errs, fmt.Sprintf("the environment is %d bytes in all, more than the limit of %s: pass large values as a secret or a volume", total, bytesLimit(MaxEnvBytes)))
	}
}

func checkLabels(errs *[]string, labels map[string]string) {
	if len(labels) > MaxLabels {
		*errs = append(*errs, fmt.Sprintf("%d labels is more than the limit of %d", len(labels), MaxLabels))
	}
	for k, v := range labels {
		switch {
		case k == "":
			*errs = append(*errs, "a label has an empty key: give every label a KEY=VALUE")
		case strings.ContainsAny(k, "= \t"):
			*errs = append(*errs, fmt.Sprintf("label key %s holds '=' or white space: use letters, digits, '.', '-', '_' and '/'", short(k)))
		}
		checkText(errs, "label key "+short(k), k, MaxLabelKeyBytes)
		checkText(errs, "label "+short(k)+"'s value", v, MaxLabelValueBytes)
	}
}

// checkCommand bounds an argv: its items hold no NUL (execve cannot pass
// one) and together stay within MaxCommandBytes.
func checkCommand(errs *[]string, field string, argv []string, hint string) {
	total := 0
	for i, a := range argv {
		total += len(a) + 1
		if c := badChar(a, lineBreaks); c != "" {
			*errs = append(*errs, fmt.Sprintf("%s: item %d holds %s: remove it (NUL and control characters other than tab and line breaks are not allowed)", field, i+1, c))
		}
	}
	if len(argv) > MaxCommandItems {
		*errs = append(*errs, fmt.Sprintf("%s has %d items, more than the limit of %d: %s", field, len(argv), MaxCommandItems, hint))
	}
	if total > MaxCommandBytes {
		*errs = append(*errs, fmt.Sprintf("%s is %d bytes in all, more than the limit of %s: %s", field, total, bytesLimit(MaxCommandBytes), hint))
	}
}

// checkHostname wants a DNS name the kernel accepts as a hostname.
func checkHostname(errs *[]string, h string) {
	if h == "" {
		return
	}
	ok := len(h) <= MaxHostnameBytes
	for _, l := range strings.Split(h, ".") {
		ok = ok && len(l) <= MaxHostnameLabelBytes && hostLabelRe.MatchString(l)
	}
	if !ok {
		*errs = append(*errs, fmt.Sprintf("invalid hostname %s: use a DNS name of letters, digits, '-' and '.', at most %d characters in all and %d between dots, e.g. web-1", short(h), MaxHostnameBytes, MaxHostnameLabelBytes))
	}
}

func checkSecrets(errs *[]string, secrets []*SecretRef) {
	if len(secrets) > MaxSecrets {
		*errs = append(*errs, fmt.Sprintf("%d secrets is more than the limit of %d", len(secrets), MaxSecrets))
	}
	targets := map[string]bool{}
	for i, sr := range secrets {
		if sr == nil {
			*errs = append(*errs, fmt.Sprintf("secret %d is empty: name the secret", i+1))
			continue
		}
		if len(sr.SecretName) > MaxNameBytes || !objectNameRe.MatchString(sr.SecretName) {
			*errs = append(*errs, fmt.Sprintf("invalid secret name %s: use letters, digits, '_', '.' and '-', starting with a letter or digit, at most %d", short(sr.SecretName), MaxNameBytes))
		}
		target := sr.Target
		if target == "" {
			target = sr.SecretName // the file is named after the secret
		}
		// The target is one file name under /run/secrets: a '/' or '..'
		// would let a spec write a file anywhere the runtime's mount can
		// reach (../../etc/shadow).
		switch {
		case strings.Contains(target, "/"), target == ".", target == "..":
			*errs = append(*errs, fmt.Sprintf("secret %s: target %s must be a plain file name under /run/secrets, without '/' or '..', e.g. db_password", short(sr.SecretName), short(target)))
		default:
			checkText(errs, fmt.Sprintf("secret %s's target", short(sr.SecretName)), target, MaxFileNameBytes)
		}
		if targets[target] {
			*errs = append(*errs, fmt.Sprintf("secret target %s is used twice: give each secret its own file name", short(target)))
		}
		targets[target] = true
		if sr.Mode&^0o777 != 0 {
			*errs = append(*errs, fmt.Sprintf("secret %s: mode %#o has bits beyond 0777 (setuid, setgid, sticky or garbage): use permission bits only, e.g. 0400", short(sr.SecretName), sr.Mode))
		}
	}
}

func checkVolumes(errs *[]string, vols []*VolumeMount) {
	if len(vols) > MaxVolumes {
		*errs = append(*errs, fmt.Sprintf("%d volumes is more than the limit of %d", len(vols), MaxVolumes))
	}
	targets := map[string]bool{}
	for i, v := range vols {
		if v == nil {
			*errs = append(*errs, fmt.Sprintf("volume %d is empty: give a target", i+1))
			continue
		}
		field := fmt.Sprintf("volume %d", i+1)
		checkText(errs, field+" target", v.Target, MaxPathBytes)
		checkText(errs, field+" source", v.Source, MaxPathBytes)
		if !path.IsAbs(v.Target) || path.Clean(v.Target) != v.Target || v.Target == "/" {
			*errs = append(*errs, fmt.Sprintf("%s: target %s must be a clean absolute path in the container other than /, without '..' or '//', e.g. /data", field, short(v.Target)))
		}
		if targets[v.Target] {
			*errs = append(*errs, fmt.Sprintf("%s: target %s is mounted twice: give each volume its own target", field, short(v.Target)))
		}
		targets[v.Target] = true
		switch v.Type {
		case VolumeMount_TYPE_VOLUME:
			if len(v.Source) > MaxNameBytes || !objectNameRe.MatchString(v.Source) {
				*errs = append(*errs, fmt.Sprintf("%s: volume name %s: use letters, digits, '_', '.' and '-', starting with a letter or digit, at most %d", field, short(v.Source), MaxNameBytes))
			}
		case VolumeMount_TYPE_BIND:
			if !path.IsAbs(v.Source) || path.Clean(v.Source) != v.Source {
				*errs = append(*errs, fmt.Sprintf("%s: bind source %s must be a clean absolute host path, e.g. /srv/data", field, short(v.Source)))
			}
		case VolumeMount_TYPE_TMPFS:
			if v.Source != "" {
				*errs = append(*errs, fmt.Sprintf("%s: a tmpfs has no source: drop %s", field, short(v.Source)))
			}
		}
	}
}

func checkHealthCheck(errs *[]string, hc *HealthCheck) {
	if hc == nil {
		return
	}
	if hc.HttpPath != "" {
		// The path goes into a request line: CR/LF there would split the
		// request (header injection) and a space or NUL breaks it.
		if c := badChar(hc.HttpPath, ""); c != "" || strings.ContainsAny(hc.HttpPath, " ") {
			*errs = append(*errs, fmt.Sprintf("health check path %s holds a space or control character: percent-encode it (e.g. %%20)", short(hc.HttpPath)))
		} else if u, err := url.ParseRequestURI(hc.HttpPath); err != nil || u.Host != "" || u.Scheme != "" {
			*errs = append(*errs, fmt.Sprintf("health check path %s is not a URL path: use e.g. /healthz or /status?full=1", short(hc.HttpPath)))
		}
		if len(hc.HttpPath) > MaxHealthPathBytes {
			*errs = append(*errs, fmt.Sprintf("health check path is %d bytes, more than the limit of %d", len(hc.HttpPath), MaxHealthPathBytes))
		}
	}
	if len(hc.HttpHeaders) > MaxHealthHeaders {
		*errs = append(*errs, fmt.Sprintf("%d health check headers is more than the limit of %d", len(hc.HttpHeaders), MaxHealthHeaders))
	}
	total := 0
	for k, v := range hc.HttpHeaders {
		total += len(k) + len(v)
		if !httpguts.ValidHeaderFieldName(k) {
			*errs = append(*errs, fmt.Sprintf("health check header name %s is not an HTTP header name: use letters, digits and '-', e.g. X-Probe", short(k)))
		}
		// Header values may hold tab but never CR, LF or NUL (RFC 9110
		// 5.5): those would inject headers into the probe request.
		if c := badChar(v, "\t"); c != "" {
			*errs = append(*errs, fmt.Sprintf("health check header %s holds %s: remove it (CR, LF and NUL would inject into the request)", short(k), c))
		}
	}
	if total > MaxHealthHeaderByte {
		*errs = append(*errs, fmt.Sprintf("health check headers are %d bytes in all, more than the limit of %s", total, bytesLimit(MaxHealthHeaderByte)))
	}
	checkCommand(errs, "health check command", hc.ExecCommand, "run a script from the image instead")
	checkText(errs, "health check gRPC service", hc.GrpcService, MaxNameBytes)
}

// checkDurations bounds every duration of a spec by MaxDurationMs.
func checkDurations(errs *[]string, s *ServiceSpec) {
	hc, rp := s.GetHealthCheck(), s.GetRestartPolicy()
	uc, rc := s.GetUpdateConfig(), s.GetRollbackConfig()
	for _, d := range []struct {
		field string
		ms    int64
	}{
		{"stop grace period", s.StopGracePeriodMs},
		{"health check interval", hc.GetIntervalMs()},
		{"health check timeout", hc.GetTimeoutMs()},
		{"health check start period", hc.GetStartPeriodMs()},
		{"restart delay", rp.GetDelayMs()},
		{"restart max delay", rp.GetMaxDelayMs()},
		{"restart window", rp.GetWindowMs()},
		{"update delay", uc.GetDelayMs()},
		{"update monitor", uc.GetMonitorMs()},
		{"rollback delay", rc.GetDelayMs()},
		{"rollback monitor", rc.GetMonitorMs()},
	} {
		if d.ms > MaxDurationMs {
			*errs = append(*errs, fmt.Sprintf("%s of %d ms is more than the limit of 30 days", d.field, d.ms))
		}
	}
}

func checkUpdateConfig(errs *[]string, field string, uc *UpdateConfig) {
	if uc == nil {
		return
	}
	if uc.DelayMs < 0 || uc.MonitorMs < 0 {
		*errs = append(*errs, field+": delays cannot be negative")
	}
	if r := float64(uc.MaxFailureRatio); math.IsNaN(r) || r < 0 || r > 1 {
		*errs = append(*errs, fmt.Sprintf("%s: max failure ratio %v must be between 0 and 1", field, uc.MaxFailureRatio))
	}
	if len(uc.CanarySteps) > MaxCanarySteps {
		*errs = append(*errs, fmt.Sprintf("%s: %d canary steps is more than the limit of %d", field, len(uc.CanarySteps), MaxCanarySteps))
	}
	prev := uint32(0)
	for _, p := range uc.CanarySteps {
		if p == 0 || p > 100 || p <= prev {
			*errs = append(*errs, fmt.Sprintf("%s: canary steps %v must be rising percentages from 1 to 100, e.g. 10,50,100", field, uc.CanarySteps))
			break
		}
		prev = p
	}
}
