package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/warrenorch/warren/actors/client"
	"github.com/warrenorch/warren/actors/host"
	"github.com/warrenorch/warren/messages"
)

func clusterCommand() *cli.Command {
	return &cli.Command{
		Name:  "cluster",
		Usage: "create, resume and describe the cluster",
		Subcommands: withUsage([]*cli.Command{
			{
				Name:  "init",
				Usage: "create a cluster with this machine as its first node, or resume this node; runs in the foreground (SIGTERM stops it cleanly)",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "data-dir", Value: "/var/lib/warren", Usage: "the node's state; the same command line resumes the node", EnvVars: []string{"WARREN_DATA_DIR"}},
					&cli.StringFlag{Name: "advertise", Usage: "IP other nodes and the CLI reach this node at", DefaultText: "the address of the default route"},
					&cli.StringFlag{Name: "wg-endpoint", Usage: "IP:PORT other nodes send this node's WireGuard traffic to, when it differs from the advertise address (behind NAT: the forwarded public address); default ADVERTISE:51820"},
					&cli.StringFlag{Name: "listen", Value: "0.0.0.0", Usage: "IP to listen on"},
					&cli.IntFlag{Name: "port", Value: host.DefaultPort, Usage: "actor remoting port"},
					&cli.IntFlag{Name: "raft-port", Value: host.DefaultRaftPort, Usage: "raft port"},
					&cli.StringFlag{Name: "containerd", Usage: "containerd socket to use", DefaultText: "an embedded containerd under the data dir"},
					&cli.StringFlag{Name: "hostname", Usage: "node name", DefaultText: "the machine's hostname"},
					&cli.StringFlag{Name: "metrics-addr", Value: "127.0.0.1:9090", Usage: "Prometheus metrics and pprof address, plain HTTP without authentication: widen it (e.g. :9090) only on a trusted network; empty disables"},
					&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
					logFormatFlag(),
					&cli.BoolFlag{Name: "enable-debug", Usage: "accept debug hooks such as 'warren debug crash' (tests only)", Hidden: true},
					&cli.IntFlag{Name: "join-port", Value: host.DefaultJoinPort, Usage: "port managers answer join requests on (HTTPS)"},
					&cli.BoolFlag{Name: "force-new-cluster", Usage: "recovery when a majority of managers is lost for good: restart this manager as the only voter, keeping the state"},
					&cli.DurationFlag{Name: "node-down-after", Value: 10 * time.Second, Usage: "mark a node down after this long without a heartbeat"},
					&cli.DurationFlag{Name: "max-disconnect", Value: time.Hour, Usage: "forget stopped tasks of a node down this long (their replacements run elsewhere from the moment it is down)"},
					eventsMaxAgeFlag(), eventsMaxCountFlag(), logMaxSizeFlag(), logMaxFilesFlag(),
				},
				Action: clusterInit,
			},
			{
				Name:      "join",
				Usage:     "join this machine to a cluster as a worker or manager (per the token), or resume it; runs in the foreground",
				ArgsUsage: "MANAGER[:PORT]...",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "token-file", Usage: "file holding the join token from '" + prog() + " cluster join-token worker|manager' (or set WARREN_JOIN_TOKEN); not needed to resume a joined node"},
					&cli.StringFlag{Name: "token", Usage: "the join token on the command line: visible to every local user in ps and /proc while the node starts; prefer --token-file or WARREN_JOIN_TOKEN"},
					&cli.StringFlag{Name: "data-dir", Value: "/var/lib/warren", Usage: "the node's state; the same command line resumes the node", EnvVars: []string{"WARREN_DATA_DIR"}},
					&cli.StringFlag{Name: "advertise", Usage: "IP other nodes reach this node at", DefaultText: "the address of the default route"},
					&cli.StringFlag{Name: "wg-endpoint", Usage: "IP:PORT other nodes send this node's WireGuard traffic to, when it differs from the advertise address (behind NAT: the forwarded public address); default ADVERTISE:51820"},
					&cli.StringFlag{Name: "listen", Value: "0.0.0.0", Usage: "IP to listen on"},
					&cli.IntFlag{Name: "port", Value: host.DefaultPort, Usage: "actor remoting port"},
					&cli.IntFlag{Name: "raft-port", Value: host.DefaultRaftPort, Usage: "raft port (managers)"},
					&cli.IntFlag{Name: "join-port", Value: host.DefaultJoinPort, Usage: "join port (managers)"},
					&cli.StringFlag{Name: "containerd", Usage: "containerd socket to use", DefaultText: "an embedded containerd under the data dir"},
					&cli.StringFlag{Name: "hostname", Usage: "node name", DefaultText: "the machine's hostname"},
					&cli.StringFlag{Name: "metrics-addr", Value: "127.0.0.1:9090", Usage: "Prometheus metrics and pprof address, plain HTTP without authentication: widen it (e.g. :9090) only on a trusted network; empty disables"},
					&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
					logFormatFlag(),
					&cli.BoolFlag{Name: "enable-debug", Hidden: true},
					&cli.DurationFlag{Name: "node-down-after", Value: 10 * time.Second, Usage: "mark a node down after this long without a heartbeat (managers)"},
					&cli.DurationFlag{Name: "max-disconnect", Value: time.Hour, Usage: "forget stopped tasks of a node down this long (managers)"},
					eventsMaxAgeFlag(), eventsMaxCountFlag(), logMaxSizeFlag(), logMaxFilesFlag(),
				},
				Action: clusterJoin,
			},
			{
				Name:      "join-token",
				Usage:     "print the command that joins a node as a worker or manager",
				ArgsUsage: "worker|manager",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "rotate", Usage: "replace the token first; the old one stops working"},
					&cli.DurationFlag{Name: "ttl", Usage: "the token stops working this long from now (e.g. 1h); an expired token is replaced when next asked for", DefaultText: "never expires"},
					&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only the token"},
					outputFlag(),
				},
				Action: clusterJoinToken,
			},
			{
				Name:   "info",
				Usage:  "show the cluster, its leader and counts",
				Flags:  []cli.Flag{outputFlag()},
				Action: withClient(clusterInfo),
			},
		}),
	}
}

func clusterInit(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: see `warren cluster init --help`", c.Args().First())
	}
	return runNode(c, nil)
}

func clusterJoin(c *cli.Context) error {
	if c.NArg() == 0 {
		return fmt.Errorf("no manager given: `warren cluster join --token-file FILE MANAGER[:PORT]` (as printed by `warren cluster join-token`)")
	}
	token, err := joinTokenOf(c)
	if err != nil {
		return err
	}
	return runNode(c, &host.JoinConfig{Token: token, Addrs: c.Args().Slice()})
}

// joinTokenOf finds the join token: in --token-file, on the command line
// (--token: warned about, and wiped from this process's arguments), or in
// WARREN_JOIN_TOKEN. A node that already joined resumes without one.
func joinTokenOf(c *cli.Context) (string, error) {
	file, argv, env := c.String("token-file"), c.String("token"), os.Getenv("WARREN_JOIN_TOKEN")
	if file != "" && argv != "" {
		return "", fmt.Errorf("both --token and --token-file given: give the join token one way (--token-file is the one other users cannot see)")
	}
	joined, _ := host.ReadNodeFile(c.String("data-dir"))
	var token string
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			if joined != nil { // the token is only checked against the cluster on resume
				notice(c, nil, "warning: cannot read the join token (%v); resuming the joined node without it", err)
				return "", nil
			}
			return "", fmt.Errorf("read the join token: %w", err)
		}
		if st, err := os.Stat(file); err == nil && st.Mode().Perm()&0o077 != 0 {
			notice(c, nil, "warning: %s is readable by other users (mode %v): anyone who reads it can join this machine's cluster; chmod 600 it", file, st.Mode().Perm())
		}
		token = strings.TrimSpace(string(b))
	case argv != "":
		// Copied before the arguments are wiped: the parsed flag shares
		// their memory.
		token = strings.Clone(argv)
		if found, wiped := hideArg(token); found && wiped {
			notice(c, nil, "warning: --token put the join token on the command line, where every local user could see it in ps and /proc while warren started (it is wiped from there now); use --token-file or WARREN_JOIN_TOKEN")
		} else if found {
			notice(c, nil, "warning: --token puts the join token on the command line, where every local user sees it in ps and /proc for as long as this node runs; use --token-file or WARREN_JOIN_TOKEN")
		}
	default:
		token = strings.TrimSpace(env)
	}
	if token == "" && joined == nil {
		return "", fmt.Errorf("no join token: give it with --token-file FILE or the WARREN_JOIN_TOKEN environment variable (get one with `warren cluster join-token worker|manager` on a manager)")
	}
	return token, nil
}

// runNode runs a node in the foreground until SIGTERM or SIGINT.
func runNode(c *cli.Context, join *host.JoinConfig) error {
	// A node daemon's heap is small and long-lived: collect at 50% growth
	// rather than 100% to keep its resident size down on small machines.
	debug.SetGCPercent(50)
	log, err := nodeLogger(c)
	if err != nil {
		return err
	}
	defer log.Sync() //nolint:errcheck
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	cfg := host.Config{
		DataDir: c.String("data-dir"), Advertise: c.String("advertise"), WGEndpoint: c.String("wg-endpoint"), ListenHost: c.String("listen"),
		Port: c.Int("port"), RaftPort: c.Int("raft-port"), JoinPort: c.Int("join-port"), ContainerdSocket: c.String("containerd"),
		ConfigDir: c.String("config-dir"), Hostname: c.String("hostname"), EnableDebug: c.Bool("enable-debug"),
		MetricsAddr: c.String("metrics-addr"), NodeDownAfter: c.Duration("node-down-after"), MaxDisconnect: c.Duration("max-disconnect"),
		ForceNewCluster: c.Bool("force-new-cluster"), Join: join, Version: version, Log: log,
		EventsMaxAge: c.Duration("events-max-age"), EventsMaxCount: c.Int("events-max-count"),
		TaskLogs: taskLogOptions(c),
	}
	n, err := host.InitOrResume(ctx, cfg)
	if err != nil {
		return nodeFailed(c, log, err)
	}
	for {
		verb := "resumed"
		if n.Created() {
			verb = "created"
		}
		creds := ""
		if n.File.Role == "manager" {
			creds = "; CLI credentials in " + c.String("config-dir")
		}
		notice(c, log, "%s %s node %s of cluster %s at %s%s", verb, n.File.Role, n.File.NodeID[:12], n.File.ClusterID[:12], n.Addr, creds)
		select {
		case <-ctx.Done():
			notice(c, log, "stopping (containers keep running and are adopted on the next start)")
			n.Stop()
			return nil
		case why := <-n.Left():
			notice(c, log, "this node was removed from the cluster and has left it (%s): its tasks are stopped and its network removed", why)
			n.Stop()
			return nil
		case <-n.Restart():
			notice(c, log, "role changed; restarting the node (containers keep running)")
			n.Stop()
			cfg.ForceNewCluster = false // a recovery happens once
			if err := host.DropRaft(cfg.DataDir); err != nil {
				return nodeFailed(c, log, err)
			}
			if n, err = host.InitOrResume(ctx, cfg); err != nil {
				return nodeFailed(c, log, err)
			}
		}
	}
}

func clusterInfo(c *cli.Context, cl *client.Client) error {
	r, err := cl.ClusterInfo()
	if err != nil {
		return err
	}
	return output(c, r, func() error { return renderClusterInfo(os.Stdout, r) })
}

// joinTokenRecord is `cluster join-token -o json`.
type joinTokenRecord struct {
	Role      string   `json:"role"`
	Token     string   `json:"token"`
	JoinAddrs []string `json:"join_addrs"`
	Expires   string   `json:"expires,omitempty"` // RFC 3339, UTC
}

func clusterJoinToken(c *cli.Context) error {
	if err := exactArgs(c, 1, "worker or manager"); err != nil {
		return err
	}
	var role messages.NodeRole
	switch c.Args().First() {
	case "worker":
		role = messages.NodeRole_NODE_ROLE_WORKER
	case "manager":
		role = messages.NodeRole_NODE_ROLE_MANAGER
	default:
		return fmt.Errorf("unknown role %q: use worker or manager", c.Args().First())
	}
	ttl := c.Duration("ttl")
	if c.IsSet("ttl") && ttl < time.Second {
		return fmt.Errorf("--ttl %v is too short: give at least 1s, or omit it for a token that does not expire", ttl)
	}
	if c.Bool("quiet") && c.String("output") == "json" {
		return fmt.Errorf("-q and -o json each choose the output: give one")
	}
	return withClient(func(c *cli.Context, cl *client.Client) error {
		r, err := cl.JoinToken(&messages.JoinTokenRequest{Role: role, Rotate: c.Bool("rotate"), TtlSeconds: int64((ttl + time.Second - 1) / time.Second)})
		if err != nil {
			return err
		}
		if c.Bool("quiet") {
			fmt.Println(r.Token)
			return nil
		}
		if c.String("output") == "json" {
			rec := joinTokenRecord{Role: c.Args().First(), Token: r.Token, JoinAddrs: r.JoinAddrs}
			if r.ExpiresUnixNano != 0 {
				rec.Expires = time.Unix(0, r.ExpiresUnixNano).UTC().Format(time.RFC3339)
			}
			return printLine(c, rec, "")
		}
		// The environment, not the command line: other local users see a
		// process's arguments, not its environment.
		fmt.Printf("To add a %s to this cluster, run on it:\n\n    WARREN_JOIN_TOKEN=%s %s cluster join %s\n\n", c.Args().First(), r.Token, prog(), strings.Join(r.JoinAddrs, " "))
		if r.ExpiresUnixNano != 0 {
			exp := time.Unix(0, r.ExpiresUnixNano)
			fmt.Printf("The token expires at %s (in %s); then get a new one with `%s cluster join-token %s`.\n", exp.UTC().Format(time.RFC3339), time.Until(exp).Round(time.Second), prog(), c.Args().First())
		}
		return nil
	})(c)
}
