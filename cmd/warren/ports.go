package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/warrenorch/warren/messages"
)

// portKeys are the keys of --publish's long syntax, as in Docker's
// `-p published=8080,target=80,protocol=udp,mode=ingress`, plus name.
var portKeys = []string{"published", "target", "protocol", "mode", "name"}

// isLongPort tells the long syntax from the short one. The short one may
// start with NAME= (a DNS SRV label), so the rule is: a comma anywhere, or
// a first key that is one of the long syntax's keys, makes it long. A port
// cannot be named "published", "target", "protocol", "mode" or "name" in
// the short syntax; the long one names it (name=target,target=80).
func isLongPort(s string) bool {
	if strings.Contains(s, ",") {
		return true
	}
	k, _, ok := strings.Cut(s, "=")
	if !ok {
		return false
	}
	for _, key := range portKeys {
		if k == key {
			return true
		}
	}
	return false
}

// parsePort reads one --publish: the short syntax
// [NAME=][PUBLISHED:]TARGET[/PROTO] or the long one
// published=P,target=T[,protocol=udp][,mode=ingress][,name=N].
func parsePort(s string) (*messages.PortConfig, error) {
	if isLongPort(s) {
		return parseLongPort(s)
	}
	p := &messages.PortConfig{Protocol: "tcp"}
	if name, rest, ok := strings.Cut(s, "="); ok {
		p.Name, s = name, rest // checked with the rest of the spec
	}
	if i := strings.Index(s, "/"); i >= 0 {
		p.Protocol, s = s[i+1:], s[:i]
	}
	pub, tgt, ok := strings.Cut(s, ":")
	if !ok {
		tgt, pub = pub, ""
	}
	t, err := strconv.ParseUint(tgt, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("invalid --publish %q: expected PUBLISHED:TARGET, e.g. 8080:80, or published=8080,target=80", s)
	}
	p.TargetPort = uint32(t)
	if pub != "" {
		v, err := strconv.ParseUint(pub, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("invalid --publish %q: expected PUBLISHED:TARGET, e.g. 8080:80, or published=8080,target=80", s)
		}
		p.PublishedPort = uint32(v)
	}
	return p, nil
}

func parseLongPort(s string) (*messages.PortConfig, error) {
	p := &messages.PortConfig{Protocol: "tcp"}
	seen := map[string]bool{}
	for _, field := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(field), "=")
		k = strings.ToLower(strings.TrimSpace(k))
		if !ok || v == "" {
			return nil, fmt.Errorf("invalid --publish %q: %q is not KEY=VALUE (keys: %s)", s, field, strings.Join(portKeys, ", "))
		}
		if seen[k] {
			return nil, fmt.Errorf("invalid --publish %q: %s given twice", s, k)
		}
		seen[k] = true
		switch k {
		case "published", "target":
			n, err := strconv.ParseUint(v, 10, 16)
			if err != nil || n == 0 {
				return nil, fmt.Errorf("invalid --publish %q: %s=%s is not a port number from 1 to 65535", s, k, v)
			}
			if k == "published" {
				p.PublishedPort = uint32(n)
			} else {
				p.TargetPort = uint32(n)
			}
		case "protocol":
			p.Protocol = strings.ToLower(v) // tcp or udp: checked with the spec
		case "mode":
			switch strings.ToLower(v) {
			case "ingress":
			case "host":
				// Refused rather than ignored: Warren publishes a port on
				// every node and balances it to the service's tasks.
				return nil, fmt.Errorf("invalid --publish %q: mode=host is not supported: Warren publishes every port on every node (mode=ingress); drop mode=host", s)
			default:
				return nil, fmt.Errorf("invalid --publish %q: mode=%s: use ingress", s, v)
			}
		case "name":
			p.Name = v
		default:
			return nil, fmt.Errorf("invalid --publish %q: unknown key %q: use %s", s, k, strings.Join(portKeys, ", "))
		}
	}
	if p.TargetPort == 0 {
		return nil, fmt.Errorf("invalid --publish %q: no target port: add target=PORT (the container's port)", s)
	}
	return p, nil
}
