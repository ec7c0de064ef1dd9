package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/warrenorch/warren/actors/client"
	"github.com/warrenorch/warren/actors/host"
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
					&cli.StringFlag{Name: "advertise", Usage: "IP other nodes and the CLI reach this node at (default: the address of the default route)"},
					&cli.StringFlag{Name: "listen", Value: "0.0.0.0", Usage: "IP to listen on"},
					&cli.IntFlag{Name: "port", Value: host.DefaultPort, Usage: "actor remoting port"},
					&cli.IntFlag{Name: "raft-port", Value: host.DefaultRaftPort, Usage: "raft port"},
					&cli.StringFlag{Name: "containerd", Usage: "containerd socket to use (default: run an embedded containerd under the data dir)"},
					&cli.StringFlag{Name: "hostname", Usage: "node name (default: the machine's hostname)"},
					&cli.StringFlag{Name: "metrics-addr", Value: ":9090", Usage: "Prometheus metrics and pprof address (empty disables)"},
					&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
					&cli.BoolFlag{Name: "enable-debug", Usage: "accept debug hooks such as `warren debug crash` (tests only)", Hidden: true},
				},
				Action: clusterInit,
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

func newLogger(level string) (*zap.Logger, error) {
	var l zapcore.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("invalid --log-level %q: use debug, info, warn or error", level)
	}
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(l)
	cfg.Sampling = nil
	return cfg.Build()
}

func clusterInit(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: see `warren cluster init --help`", c.Args().First())
	}
	log, err := newLogger(c.String("log-level"))
	if err != nil {
		return err
	}
	defer log.Sync() //nolint:errcheck
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	n, err := host.InitOrResume(ctx, host.Config{
		DataDir: c.String("data-dir"), Advertise: c.String("advertise"), ListenHost: c.String("listen"),
		Port: c.Int("port"), RaftPort: c.Int("raft-port"), ContainerdSocket: c.String("containerd"),
		ConfigDir: c.String("config-dir"), Hostname: c.String("hostname"), EnableDebug: c.Bool("enable-debug"),
		MetricsAddr: c.String("metrics-addr"), Version: version, Log: log,
	})
	if err != nil {
		return err
	}
	verb := "resumed"
	if n.Created() {
		verb = "created"
	}
	fmt.Fprintf(os.Stderr, "warren: %s node %s of cluster %s at %s; CLI credentials in %s\n", verb, n.File.NodeID[:12], n.File.ClusterID[:12], n.Addr, c.String("config-dir"))
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "warren: stopping (containers keep running and are adopted on the next start)")
	n.Stop()
	return nil
}

func clusterInfo(c *cli.Context, cl *client.Client) error {
	r, err := cl.ClusterInfo()
	if err != nil {
		return err
	}
	return output(c, r, func() error { return renderClusterInfo(os.Stdout, r) })
}
