package main

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/messages"
)

func TestInterspersed(t *testing.T) {
	cases := []struct {
		name string
		in   string // split on spaces; "_" stands for one space inside an argument
		want string
	}{
		{"flags after the name move before it",
			"warren service create web --image demo:v1 --replicas 3 --env A=b",
			"warren service create --image demo:v1 --replicas 3 --env A=b -- web"},
		{"flags already first are kept, positionals go after --",
			"warren service create --image demo:v1 web",
			"warren service create --image demo:v1 -- web"},
		{"short aliases take their value",
			"warren service create web -e A=b -p 8080:80",
			"warren service create -e A=b -p 8080:80 -- web"},
		{"--flag=value is one argument",
			"warren service create web --image=demo:v1 arg",
			"warren service create --image=demo:v1 -- web arg"},
		{"a value that looks like a flag stays a value",
			"warren service create web --replicas -1 --image demo:v1",
			"warren service create --replicas -1 --image demo:v1 -- web"},
		{"bool flags do not swallow the next argument",
			"warren service ps -a web",
			"warren service ps -a -- web"},
		{"bool flag after the positional",
			"warren service ps web --all -o json",
			"warren service ps --all -o json -- web"},
		{"everything after -- is positional, flags included",
			"warren service create web --image demo:v1 -- sh -c echo_hi",
			"warren service create --image demo:v1 -- web sh -c echo_hi"},
		{"Docker's order: after --name and the image, the rest is the command, flags included",
			"warren service create --name web -p 8080:80 demo:v1 sh -c echo_hi",
			"warren service create --name web -p 8080:80 -- demo:v1 sh -c echo_hi"},
		{"Docker's order with --name=",
			"warren service create --name=web demo:v1 nginx -g daemon_off;",
			"warren service create --name=web -- demo:v1 nginx -g daemon_off;"},
		{"--name after the service name keeps Warren's order",
			"warren service create web --name x --image demo:v1 -e A=b",
			"warren service create --name x --image demo:v1 -e A=b -- web"},
		{"a lone - is positional",
			"warren service create web - --image demo:v1",
			"warren service create --image demo:v1 -- web -"},
		{"global flags before the command are kept, with their values",
			"warren --config-dir /tmp/w --timeout 5s service scale web=3 api=1",
			"warren --config-dir /tmp/w --timeout 5s service scale -- web=3 api=1"},
		{"command aliases are followed",
			"warren service ls -o json",
			"warren service ls -o json"},
		{"leaf with no positionals gets no --",
			"warren events --follow --type actor.",
			"warren events --follow --type actor."},
		{"unknown command is left alone",
			"warren frobnicate web --image demo:v1",
			"warren frobnicate web --image demo:v1"},
		{"unknown subcommand is left alone",
			"warren service frobnicate web --image demo:v1",
			"warren service frobnicate web --image demo:v1"},
		{"group command without a leaf is left alone",
			"warren service",
			"warren service"},
		{"unknown flag is moved but takes no value",
			"warren service create web --bogus x",
			"warren service create --bogus -- web x"},
		{"missing flag value at the end",
			"warren service create web --image",
			"warren service create --image -- web"},
		{"program name only",
			"warren",
			"warren"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			split := func(s string) []string {
				f := strings.Fields(s)
				for i := range f {
					f[i] = strings.ReplaceAll(f[i], "_", " ")
				}
				return f
			}
			got := interspersed(newApp(), split(tc.in))
			if want := split(tc.want); !slices.Equal(got, want) {
				t.Errorf("interspersed(%q)\n got  %q\n want %q", tc.in, got, want)
			}
		})
	}
}

func TestParseBytes(t *testing.T) {
	cases := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "", want: 0},
		{in: "0", want: 0},
		{in: "100", want: 100},
		{in: "512k", want: 512 << 10},
		{in: "64M", want: 64 << 20},
		{in: "64m", want: 64 << 20},
		{in: "64MB", want: 64 << 20},
		{in: "64MiB", want: 64 << 20},
		{in: "1G", want: 1 << 30},
		{in: "1gib", want: 1 << 30},
		{in: "1.5G", want: 3 << 29},
		{in: "2kb", want: 2 << 10},
		{in: "-1", wantErr: true},
		{in: "-64M", wantErr: true},
		{in: "abc", wantErr: true},
		{in: "64Q", wantErr: true},
		{in: "M", wantErr: true},
		{in: "64 M", wantErr: true},
		{in: "inf", wantErr: true},
		{in: "nan", wantErr: true},
		{in: "1e30G", wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseBytes(tc.in)
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "e.g. 64M or 1G") {
					t.Fatalf("parseBytes(%q) = %d, %v; want an error with an example", tc.in, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parseBytes(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestParseReplicas(t *testing.T) {
	cases := []struct {
		in      string
		want    uint64
		wantErr string
	}{
		{in: "0", want: 0},
		{in: "3", want: 3},
		{in: " 3 ", want: 3},
		{in: "10000", want: 10000},
		{in: "-1", wantErr: "invalid replica count -1: it cannot be negative"},
		{in: "10001", wantErr: "replica count 10001 is more than the limit of 10000: give a smaller number"},
		{in: "99999999999999999999", wantErr: "give a whole number from 0 to 10000"},
		{in: "three", wantErr: `invalid replica count "three": give a whole number from 0 to 10000`},
		{in: "1.5", wantErr: "give a whole number"},
		{in: "", wantErr: "give a whole number"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseReplicas(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseReplicas(%q) = %d, %v; want error containing %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parseReplicas(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestParsePort(t *testing.T) {
	cases := []struct {
		in      string
		want    *messages.PortConfig
		wantErr string
	}{
		{in: "8080:80", want: &messages.PortConfig{Protocol: "tcp", PublishedPort: 8080, TargetPort: 80}},
		{in: "80", want: &messages.PortConfig{Protocol: "tcp", TargetPort: 80}},
		{in: "5353:53/udp", want: &messages.PortConfig{Protocol: "udp", PublishedPort: 5353, TargetPort: 53}},
		{in: "8443:443/tcp", want: &messages.PortConfig{Protocol: "tcp", PublishedPort: 8443, TargetPort: 443}},
		{in: "65535:65535", want: &messages.PortConfig{Protocol: "tcp", PublishedPort: 65535, TargetPort: 65535}},
		{in: "http:80", wantErr: "expected PUBLISHED:TARGET, e.g. 8080:80"},
		{in: "8080:http", wantErr: "expected PUBLISHED:TARGET, e.g. 8080:80"},
		{in: "70000:80", wantErr: "expected PUBLISHED:TARGET"},
		{in: "8080:80:90", wantErr: "expected PUBLISHED:TARGET"},
		{in: "", wantErr: "expected PUBLISHED:TARGET"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parsePort(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parsePort(%q) = %v, %v; want error containing %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || !proto.Equal(got, tc.want) {
				t.Fatalf("parsePort(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}
}
