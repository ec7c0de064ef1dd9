// Command create-service shows how a Go program deploys to a Warren cluster:
// it builds a ServiceSpec (the same message `warren service create` sends),
// creates the service with the public client, then polls the service's
// tasks until every replica runs — or the timeout passes, in which case it
// says what the tasks are waiting for (e.g. the scheduler's "no suitable
// node (...)") — and prints them.
//
//	go run ./examples/create-service --name hello --image demo:v1 --replicas 3
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/warrenorch/warren/actors/client"
	"github.com/warrenorch/warren/messages"
)

func main() {
	configDir := flag.String("config-dir", client.DefaultConfigDir(), "where the cluster address and credentials are (as for the warren CLI)")
	name := flag.String("name", "hello", "service name")
	image := flag.String("image", "demo:v1", "image to run (import it first with `warren image import`)")
	replicas := flag.Uint64("replicas", 2, "number of tasks")
	timeout := flag.Duration("timeout", 2*time.Minute, "how long to wait for every replica to run")
	flag.Parse()

	spec := &messages.ServiceSpec{Name: *name, Image: *image, Replicas: *replicas}
	if err := run(*configDir, spec, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}

func run(configDir string, spec *messages.ServiceSpec, timeout time.Duration) error {
	// Validating locally gives the same message the manager would, without
	// a round trip.
	if err := messages.ValidateServiceSpec(spec); err != nil {
		return err
	}
	cl, err := client.Dial(client.Options{ConfigDir: configDir})
	if err != nil {
		return err
	}
	defer cl.Close()

	svc, err := cl.CreateService(spec)
	if err != nil {
		var ce *client.Error
		if errors.As(err, &ce) && ce.Code == messages.ErrorCode_ERROR_CODE_ALREADY_EXISTS {
			return fmt.Errorf("%w (remove it with `warren service rm %s`, or pick another --name)", err, spec.Name)
		}
		return fmt.Errorf("create service %s: %w", spec.Name, err)
	}
	fmt.Printf("created service %s (%s), waiting for %d replicas\n", spec.Name, svc.Id, spec.Replicas)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tasks, err := waitRunning(ctx, cl, spec.Name, int(spec.Replicas))
	if err != nil {
		printTasks(cl, tasks) // what there is explains what is missing
		return err
	}
	return printTasks(cl, tasks)
}

// waitRunning polls the service's tasks until want of them run. The manager
// places and starts tasks asynchronously (service actor, scheduler, worker
// agents), so a fresh service is first pending, then assigned, preparing,
// starting, running. Polling keeps the example short; a program that must
// react at once would follow cl.Events for task.* instead.
func waitRunning(ctx context.Context, cl *client.Client, service string, want int) ([]*messages.Task, error) {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	var tasks []*messages.Task
	for {
		var err error
		tasks, err = cl.ListTasks(service, "", false)
		if err != nil {
			return nil, err
		}
		if n := runningCount(tasks); n >= want {
			return tasks, nil
		}
		select {
		case <-ctx.Done():
			return tasks, fmt.Errorf("%d of %d replicas running when the wait ended (%v): the tasks below say why; "+
				"follow with `warren service ps %s`", runningCount(tasks), want, ctx.Err(), service)
		case <-tick.C:
		}
	}
}

func runningCount(tasks []*messages.Task) int {
	n := 0
	for _, t := range tasks {
		if t.DesiredState == messages.TaskState_TASK_STATE_RUNNING && t.GetStatus().GetState() == messages.TaskState_TASK_STATE_RUNNING {
			n++
		}
	}
	return n
}

func printTasks(cl *client.Client, tasks []*messages.Task) error {
	hosts := map[string]string{}
	if nodes, err := cl.ListNodes(); err == nil {
		for _, n := range nodes {
			hosts[n.Id] = n.GetDescription().GetHostname()
		}
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "TASK\tSLOT\tNODE\tSTATE\tIP\tMESSAGE")
	for _, t := range tasks {
		st := t.GetStatus()
		msg := st.GetErr()
		if msg == "" {
			msg = st.GetMessage()
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", t.Id, t.Slot, or(hosts[t.NodeId], "-"), stateName(st.GetState()), or(st.GetIp(), "-"), msg)
	}
	return tw.Flush()
}

// stateName is the short form the CLI shows: TASK_STATE_RUNNING -> running.
func stateName(s messages.TaskState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "TASK_STATE_"))
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
