package messages

import (
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Every field of a ServiceSpec is either built (some component acts on it)
// or refused: a setting that is accepted and then ignored looks like it
// protects something (a rollback on failure, a mounted secret) and does
// not. specFieldStatus names each field by its proto path; a test walks the
// descriptor and fails when a field is missing here, so a new field cannot
// land undecided.
//
// When the issue that builds a field lands, its entry moves from refused
// to built in the same change.
var specFieldStatus = map[string]fieldStatus{
	"name": built("the service's name and DNS label"), "image": built("runtime"),
	"command": built("runtime"), "args": built("runtime"), "env": built("runtime"),
	"labels": built("metadata, shown by service inspect"), "mode": built("scheduler"),
	"replicas": built("scheduler"), "workdir": built("runtime"), "user": built("runtime"),
	"hostname": built("runtime"), "stop_grace_period_ms": built("task actor"),
	"cap_add": built("runtime"), "cap_drop": built("runtime"), "pids_limit": built("runtime"),
	"seccomp": built("runtime"), "constraints": built("scheduler"),

	"resources.limits.nano_cpus": built("runtime cgroup"), "resources.limits.memory_bytes": built("runtime cgroup"),
	"resources.reservations.nano_cpus": built("scheduler"), "resources.reservations.memory_bytes": built("scheduler"),

	"restart_policy.condition": built("task actor"), "restart_policy.delay_ms": built("task actor"),
	"restart_policy.max_delay_ms": built("task actor"), "restart_policy.max_attempts": built("task actor"),
	"restart_policy.window_ms": built("task actor"),

	"health_check.kind": built("task health"), "health_check.http_path": built("task health"),
	"health_check.http_headers": built("task health"), "health_check.http_expected_status": built("task health"),
	"health_check.port": built("task health"), "health_check.exec_command": built("task health"),
	"health_check.grpc_service": built("task health"), "health_check.interval_ms": built("task health"),
	"health_check.timeout_ms": built("task health"), "health_check.retries": built("task health"),
	"health_check.start_period_ms": built("task health"),

	"ports.name": built("DNS SRV records"), "ports.protocol": built("VIP rules"),
	"ports.target_port": built("VIP rules"), "ports.published_port": built("published ports"),

	// The deployment actor (actors/manager/deployment*.go) rolls by these.
	"update_config.order":             built("replacement order, rolling updates"),
	"update_config.strategy":          built("deployment actor"),
	"update_config.parallelism":       built("deployment actor: rolling batches"),
	"update_config.delay_ms":          built("deployment actor: rolling batches"),
	"update_config.failure_action":    built("deployment actor"),
	"update_config.monitor_ms":        built("deployment actor"),
	"update_config.max_failure_ratio": built("deployment actor"),
	"update_config.canary_replicas":   built("deployment actor: canary"),
	"update_config.canary_weight":     built("deployment actor: canary traffic share"),
	"update_config.switch_manual":     built("deployment actor: blue/green"),
	"update_config.grace_ms":          built("deployment actor: blue/green"),
	"update_config.canary_steps":      refused("canary steps", "them", "step a canary with `warren service promote --weight N`"),
	"rollback_config":                 refused("rollback config", "it", "a rollback returns every updated task at once, in the update order"),
	"secrets":                         refused("secrets", "them", ""),
	"volumes":                         refused("volumes", "them", ""),
}

type fieldStatus struct {
	built bool
	why   string // built: what acts on it; refused: the error
}

func built(by string) fieldStatus { return fieldStatus{built: true, why: by} }

func refused(what, pronoun, because string) fieldStatus {
	msg := what + " are not supported yet"
	if pronoun == "it" {
		msg = what + " is not supported yet"
	}
	if because != "" {
		msg += " (" + because + ")"
	}
	return fieldStatus{why: msg + ": remove " + pronoun + " from the spec"}
}

// refuseUnbuilt names every refused field the spec sets.
func refuseUnbuilt(s *ServiceSpec) []string {
	var errs []string
	m := s.ProtoReflect()
	// Sorted so that errors come out in the same order every time.
	for _, path := range slices.Sorted(maps.Keys(specFieldStatus)) {
		st := specFieldStatus[path]
		if !st.built && fieldSet(m, strings.Split(path, ".")) {
			errs = append(errs, st.why)
		}
	}
	return errs
}

// fieldSet reports whether the field at path is set to anything but its
// zero value (an empty message counts as unset).
func fieldSet(m protoreflect.Message, path []string) bool {
	fd := m.Descriptor().Fields().ByName(protoreflect.Name(path[0]))
	if fd == nil || !m.Has(fd) {
		return false
	}
	v := m.Get(fd)
	if len(path) == 1 {
		if fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap() {
			return proto.Size(v.Message().Interface()) > 0
		}
		return true
	}
	if fd.IsList() {
		for i := 0; i < v.List().Len(); i++ {
			if fieldSet(v.List().Get(i).Message(), path[1:]) {
				return true
			}
		}
		return false
	}
	return fieldSet(v.Message(), path[1:])
}
