package main

import (
	"fmt"
	"strings"

	"github.com/google/shlex"
	"github.com/urfave/cli/v2"

	"github.com/warrenorch/warren/messages"
)

// healthFlags are the health check's flags, shared by create and update.
// Their values stay unset unless given (update changes only the flags
// given); DefaultText shows what the node uses then.
func healthFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "health-cmd", Usage: "health check: a shell command, run with /bin/sh -c in the container as Docker's (e.g. 'curl -f http://localhost/ || exit 1'), " +
			"or 'http GET /path', 'tcp', 'grpc [SERVICE]', 'exec CMD ARG...' (a first word of http, tcp, grpc, exec or cmd picks these; CMD-SHELL forces a shell command); none: no check"},
		&cli.UintFlag{Name: "health-port", Usage: "port the http, tcp and grpc checks use", DefaultText: "the first --publish target, else 80"},
		&cli.DurationFlag{Name: "health-interval", Usage: "time between checks", DefaultText: "30s"},
		&cli.DurationFlag{Name: "health-timeout", Usage: "time a check may take", DefaultText: "5s"},
		&cli.UintFlag{Name: "health-retries", Usage: "failures in a row that make a task unhealthy", DefaultText: "3"},
		&cli.DurationFlag{Name: "health-start-period", Usage: "failures in this time after start do not count", DefaultText: "none"},
	}
}

// setHealthFlags copies the --health-* flags other than --health-cmd into
// hc; the port defaults to the first port's target. On update only the
// flags given change the check.
func setHealthFlags(c *cli.Context, hc *messages.HealthCheck, ports []*messages.PortConfig) {
	if c.IsSet("health-port") || c.IsSet("health-cmd") {
		hc.Port = uint32(c.Uint("health-port"))
		if hc.Port == 0 && len(ports) > 0 {
			hc.Port = ports[0].TargetPort
		}
	}
	if c.IsSet("health-interval") || c.IsSet("health-cmd") {
		hc.IntervalMs = c.Duration("health-interval").Milliseconds()
	}
	if c.IsSet("health-timeout") || c.IsSet("health-cmd") {
		hc.TimeoutMs = c.Duration("health-timeout").Milliseconds()
	}
	if c.IsSet("health-retries") || c.IsSet("health-cmd") {
		hc.Retries = uint32(c.Uint("health-retries"))
	}
	if c.IsSet("health-start-period") || c.IsSet("health-cmd") {
		hc.StartPeriodMs = c.Duration("health-start-period").Milliseconds()
	}
}

// shellPrefix is Docker's HEALTHCHECK keyword for a shell command; given
// first, it makes any command a shell one (a program called http, say).
const shellPrefix = "CMD-SHELL"

// parseHealthCmd reads --health-cmd. The rule between the two syntaxes:
// a first word of http, tcp, grpc, exec or cmd (any case) is Warren's
// mini-language, read strictly ('http GET /healthz' or 'http /healthz',
// 'tcp', 'grpc [SERVICE]', 'exec CMD ARG...' split with shell quoting);
// CMD-SHELL then anything, or anything else, is a shell command that the
// container runs with /bin/sh -c, as Docker's --health-cmd does.
func parseHealthCmd(v string) (*messages.HealthCheck, error) {
	v = strings.TrimSpace(v)
	first, rest, _ := strings.Cut(v, " ")
	if first == shellPrefix {
		if strings.TrimSpace(rest) == "" {
			return nil, fmt.Errorf("invalid --health-cmd %q: give the command after CMD-SHELL", v)
		}
		return shellCheck(strings.TrimSpace(rest)), nil
	}
	if v == "" {
		return nil, fmt.Errorf("invalid --health-cmd: empty; give a shell command such as 'curl -f http://localhost/ || exit 1', or 'http GET /path', 'tcp', 'exec CMD ARG...' or 'grpc [SERVICE]'")
	}
	switch strings.ToLower(first) {
	case "http", "tcp", "grpc", "exec", "cmd":
	default:
		return shellCheck(v), nil
	}
	f, err := shlex.Split(v)
	if err != nil {
		return nil, fmt.Errorf("invalid --health-cmd %q: %v (check the quotes)", v, err)
	}
	bad := fmt.Errorf("invalid --health-cmd %q: use 'http GET /path', 'tcp', 'exec CMD ARG...' or 'grpc [SERVICE]', or start a shell command with CMD-SHELL", v)
	hc := &messages.HealthCheck{}
	switch strings.ToLower(f[0]) {
	case "http":
		hc.Kind, hc.HttpPath = messages.HealthCheck_KIND_HTTP, "/"
		rest := f[1:]
		if len(rest) > 0 && strings.EqualFold(rest[0], "GET") {
			rest = rest[1:]
		}
		if len(rest) > 1 {
			return nil, bad
		}
		if len(rest) == 1 {
			if !strings.HasPrefix(rest[0], "/") {
				return nil, bad
			}
			hc.HttpPath = rest[0]
		}
	case "tcp":
		if len(f) != 1 {
			return nil, bad
		}
		hc.Kind = messages.HealthCheck_KIND_TCP
	case "exec", "cmd":
		if len(f) < 2 {
			return nil, bad
		}
		hc.Kind, hc.ExecCommand = messages.HealthCheck_KIND_EXEC, f[1:]
	case "grpc":
		if len(f) > 2 {
			return nil, bad
		}
		hc.Kind = messages.HealthCheck_KIND_GRPC
		if len(f) == 2 {
			hc.GrpcService = f[1]
		}
	}
	return hc, nil
}

// shellCheck runs cmd through the container's /bin/sh, as Docker's
// CMD-SHELL: pipes, || and variables work; the image needs a shell.
func shellCheck(cmd string) *messages.HealthCheck {
	return &messages.HealthCheck{Kind: messages.HealthCheck_KIND_EXEC, ExecCommand: []string{"/bin/sh", "-c", cmd}}
}

// healthText is a check as --health-cmd would give it.
func healthText(hc *messages.HealthCheck) string {
	switch hc.GetKind() {
	case messages.HealthCheck_KIND_HTTP:
		return fmt.Sprintf("http GET %s on port %d", hc.GetHttpPath(), hc.GetPort())
	case messages.HealthCheck_KIND_TCP:
		return fmt.Sprintf("tcp on port %d", hc.GetPort())
	case messages.HealthCheck_KIND_GRPC:
		return strings.TrimSpace(fmt.Sprintf("grpc %s on port %d", hc.GetGrpcService(), hc.GetPort()))
	case messages.HealthCheck_KIND_EXEC:
		c := hc.GetExecCommand()
		if len(c) == 3 && c[0] == "/bin/sh" && c[1] == "-c" {
			return shellPrefix + " " + c[2]
		}
		return "exec " + shellJoin(c)
	}
	return "none"
}

// shellJoin quotes words that need it, so the text pastes back into a shell.
func shellJoin(words []string) string {
	out := make([]string, len(words))
	for i, w := range words {
		if w == "" || strings.ContainsAny(w, " \t\n'\"\\$`|&;<>()*?[]#~") {
			out[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
		} else {
			out[i] = w
		}
	}
	return strings.Join(out, " ")
}
