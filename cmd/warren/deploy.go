package main

// The deployment commands: promote, rollback, pause, resume, deployment,
// and the follower that `service update` and `--wait` share. Progress is
// read by polling the service and its tasks (the state a deployment commits
// is on the service, so any manager answers it).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/warrenorch/warren/actors/client"
	"github.com/warrenorch/warren/messages"
)

// pollEvery is how often a follower reads the service and its tasks when
// nothing wakes it sooner: the service's events (wakeOnEvents) do.
const pollEvery = 2 * time.Second

func deploymentCommands() []*cli.Command {
	followFlags := func() []cli.Flag {
		return []cli.Flag{
			&cli.BoolFlag{Name: "wait", Usage: "follow the deployment until it ends, waits for a promote, or is paused; exit non-zero if it did not get where asked"},
			&cli.DurationFlag{Name: "wait-timeout", Value: 10 * time.Minute, Usage: "how long --wait follows (the deployment goes on after)"},
			outputFlag(),
		}
	}
	return []*cli.Command{
		updateCommand(),
		{
			Name:      "promote",
			Usage:     "move a deployment forward: a canary's share of requests (--weight), or all the way (a canary rolls the rest, a manual blue/green switches)",
			ArgsUsage: "NAME",
			Flags: append([]cli.Flag{
				&cli.IntFlag{Name: "weight", Usage: "canary: percent of requests to the new version, 1-100", DefaultText: "promote fully"},
			}, followFlags()...),
			Action: deploymentControl("promote"),
		},
		{Name: "rollback", Usage: "return to the previous spec, at any step of a deployment (or after it finished)", ArgsUsage: "NAME", Flags: followFlags(), Action: deploymentControl("rollback")},
		{Name: "pause", Usage: "hold a deployment where it is", ArgsUsage: "NAME", Flags: []cli.Flag{outputFlag()}, Action: deploymentControl("pause")},
		{Name: "resume", Usage: "continue a paused deployment from where it was held", ArgsUsage: "NAME", Flags: followFlags(), Action: deploymentControl("resume")},
		{
			Name:      "deployment",
			Usage:     "show a service's deployment: strategy, state, step, tasks per version and side, traffic",
			ArgsUsage: "NAME",
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep showing changes until the deployment ends or is paused"},
				outputFlag(),
			},
			Action: withClient(serviceDeployment),
		},
	}
}

// checkWeight refuses a weight outside 1-100 before anything is sent.
func checkWeight(flag string, w int) error {
	if w < 1 || w > 100 {
		return fmt.Errorf("invalid %s %d: give a percentage of requests from 1 to 100 (100, or `warren service promote NAME` without it, promotes fully)", flag, w)
	}
	return nil
}

func checkOutput(c *cli.Context) error {
	switch c.String("output") {
	case "", "table", "json":
		return nil
	}
	return errOutput
}

// deploymentControl is promote, rollback, pause or resume: one request,
// then one line with the state it left (or, with --wait, the deployment
// followed to its end).
func deploymentControl(op string) cli.ActionFunc {
	return func(c *cli.Context) error {
		if err := exactArgs(c, 1, "one service name"); err != nil {
			return err
		}
		if err := checkOutput(c); err != nil {
			return err
		}
		var weight uint32
		full := true
		if op == "promote" && c.IsSet("weight") {
			if err := checkWeight("--weight", c.Int("weight")); err != nil {
				return err
			}
			weight, full = uint32(c.Int("weight")), false
		}
		return withClient(func(c *cli.Context, cl *client.Client) error {
			name := c.Args().First()
			var svc *messages.Service
			var err error
			switch op {
			case "promote":
				svc, err = cl.PromoteService(name, weight, full)
			case "rollback":
				svc, err = cl.RollbackService(name)
			case "pause":
				svc, err = cl.PauseService(name)
			case "resume":
				svc, err = cl.ResumeService(name)
			}
			if err != nil {
				return fmt.Errorf("%s %s: %w", op, name, err)
			}
			if c.Bool("wait") {
				f := newFollower(c, name, svc.GetDeployment().GetId(), op == "rollback")
				f.since = svc.GetMeta().GetVersion()
				st, err := f.run(c.Context, cl)
				if err == nil && op != "rollback" {
					if hint := nextSteps(st); hint != "" {
						fmt.Fprintln(os.Stderr, hint)
					}
				}
				return err
			}
			return output(c, svc, func() error {
				fmt.Println(newDeployStatus(svc, nil, time.Now()).headline())
				return nil
			})
		})(c)
	}
}

func serviceDeployment(c *cli.Context, cl *client.Client) error {
	if err := exactArgs(c, 1, "one service name"); err != nil {
		return err
	}
	if err := checkOutput(c); err != nil {
		return err
	}
	name := c.Args().First()
	if c.Bool("follow") {
		f := newFollower(c, name, "", false)
		f.out, f.live = os.Stdout, isTerminal(os.Stdout)
		f.watchOnly = true
		_, err := f.run(c.Context, cl)
		return err
	}
	st, err := observe(cl, name)
	if err != nil {
		return err
	}
	if c.String("output") == "json" {
		return writeRecord(os.Stdout, st)
	}
	return renderDeployment(os.Stdout, st)
}

// observe reads the service and the tasks meant to run, at one moment.
func observe(cl *client.Client, name string) (deployStatus, error) {
	svc, err := cl.InspectService(name)
	if err != nil {
		return deployStatus{}, err
	}
	tasks, err := cl.ListTasks(svc.Id, "", false)
	if err != nil {
		return deployStatus{}, err
	}
	return newDeployStatus(svc, tasks, time.Now()), nil
}

func writeRecord(w io.Writer, st deployStatus) error {
	r, err := st.record()
	if err != nil {
		return err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

// follower polls a deployment and shows each change: a live view redrawn
// in place on a terminal, a plain line per change in a pipe, a JSON record
// per change with -o json. It stops on a finished state, on paused, on a
// step that waits for `promote` (unless watchOnly), or at its timeout.
type follower struct {
	name      string
	id        string // the deployment followed; "" takes the current one
	since     uint64 // the service version the command committed: a replica behind it is stale
	rollback  bool   // rolled-back is what was asked for
	watchOnly bool   // `deployment --follow`: show, do not judge; go past waiting steps
	timeout   time.Duration
	json      bool
	live      bool
	out       io.Writer // the view; JSON records always go to stdout
	drawn     int       // lines of the live view on screen
	last      string
}

func newFollower(c *cli.Context, name, id string, rollback bool) *follower {
	return &follower{
		name: name, id: id, rollback: rollback,
		timeout: c.Duration("wait-timeout"),
		json:    c.String("output") == "json",
		// Progress is not the command's result: stderr, as for --wait.
		out: os.Stderr, live: isTerminal(os.Stderr),
	}
}

// errStopped: the follower was interrupted; the deployment goes on.
var errStopped = errors.New("stopped following")

func (f *follower) run(ctx context.Context, cl *client.Client) (deployStatus, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var deadline <-chan time.Time
	if f.timeout > 0 {
		t := time.NewTimer(f.timeout)
		defer t.Stop()
		deadline = t.C
	}
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	wake, unsubscribe := f.wakeOnEvents(ctx, cl)
	defer unsubscribe()
	for {
		st, err := observe(cl, f.name)
		if err != nil {
			return st, err
		}
		// The manager answering may be a follower still applying the
		// command's own commit: its older replica is not an answer yet.
		if stale := st.svc.GetMeta().GetVersion() < f.since; stale {
			select {
			case <-ctx.Done():
				return st, errStopped
			case <-tick.C:
				continue
			case <-wake:
				continue
			}
		}
		if f.id == "" {
			f.id = st.d.GetId()
		}
		if err := f.show(st); err != nil {
			return st, err
		}
		if done, err := f.verdict(st); done {
			return st, err
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("%w; the deployment goes on (%s): `warren service deployment %s --follow` to watch it again", errStopped, deploymentStateName(st.d.GetState()), f.name)
		case <-deadline:
			return st, fmt.Errorf("the deployment of %s is still %s after %s; it goes on: `warren service deployment %s --follow` to keep watching, `warren service rollback %s` to abort",
				f.name, deploymentStateName(st.d.GetState()), f.timeout, f.name, f.name)
		case <-tick.C:
		case <-wake:
		}
	}
}

// wakeOnEvents follows the service's events on the manager: each one (a
// commit about the service, its deployment or a task) wakes the follower
// to read the state at once instead of at its next poll. Best effort: a
// stream that fails leaves the poll.
func (f *follower) wakeOnEvents(ctx context.Context, cl *client.Client) (<-chan struct{}, func()) {
	ctx, cancel := context.WithCancel(ctx)
	wake, done := make(chan struct{}, 1), make(chan struct{})
	go func() {
		defer close(done)
		_ = cl.Events(ctx, client.EventOptions{Services: []string{f.name}}, func(*messages.Event) error {
			select {
			case wake <- struct{}{}:
				// At most ten reads a second however busy the service;
				// the events wait meanwhile, so the last one still wakes.
				select {
				case <-time.After(100 * time.Millisecond):
				case <-ctx.Done():
				}
			default: // a wake is pending already
			}
			return nil
		})
	}()
	return wake, func() {
		cancel()
		// A manager slow to answer the subscription must not hold the
		// command's exit for long.
		select {
		case <-done:
		case <-time.After(time.Second):
		}
	}
}

// show draws one observation, only when something changed.
func (f *follower) show(st deployStatus) error {
	if f.json {
		if l := st.line(); l != f.last {
			f.last = l
			return writeRecord(os.Stdout, st)
		}
		return nil
	}
	if !f.live {
		if l := st.line(); l != f.last {
			f.last = l
			_, err := fmt.Fprintln(f.out, l)
			return err
		}
		return nil
	}
	// Redraw in place: up to the first line of the last drawing, then
	// each line cleared and rewritten (elapsed time and ETA change every
	// poll, so a terminal redraws every time).
	var b strings.Builder
	if f.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", f.drawn)
	}
	lines := st.progressLines()
	for _, l := range lines {
		b.WriteString("\r\x1b[2K" + l + "\n")
	}
	for i := len(lines); i < f.drawn; i++ { // a side left: blank its line
		b.WriteString("\r\x1b[2K\n")
	}
	f.drawn = max(f.drawn, len(lines))
	_, err := io.WriteString(f.out, b.String())
	return err
}

// verdict says whether following ends with this observation, and with
// what error: nil when the deployment got where it was asked to go.
func (f *follower) verdict(st deployStatus) (bool, error) {
	d := st.d
	if d == nil {
		if f.watchOnly {
			return true, nil
		}
		return true, fmt.Errorf("%s has no deployment to follow", f.name)
	}
	if f.id != "" && d.Id != f.id {
		if f.watchOnly {
			return true, nil
		}
		return true, fmt.Errorf("the deployment of %s was replaced by another (%s v%d → v%d, %s): `warren service deployment %s` shows it",
			f.name, strategyName(d.Strategy), d.FromVersion, d.ToVersion, deploymentStateName(d.State), f.name)
	}
	why := ""
	if d.Message != "" {
		why = ": " + d.Message
	}
	switch d.State {
	case messages.DeploymentState_DEPLOYMENT_STATE_DONE:
		return true, nil
	case messages.DeploymentState_DEPLOYMENT_STATE_ROLLED_BACK:
		if f.rollback || f.watchOnly {
			return true, nil
		}
		return true, fmt.Errorf("the deployment of %s rolled back to v%d%s", f.name, d.FromVersion, why)
	case messages.DeploymentState_DEPLOYMENT_STATE_FAILED:
		if f.watchOnly {
			return true, nil
		}
		return true, fmt.Errorf("the deployment of %s failed%s: `warren service deployment %s` shows its tasks", f.name, why, f.name)
	case messages.DeploymentState_DEPLOYMENT_STATE_PAUSED:
		if f.watchOnly {
			return true, nil
		}
		return true, fmt.Errorf("the deployment of %s is paused at %s%s: `warren service resume %s` continues it, `warren service rollback %s` returns to v%d",
			f.name, deploymentStateName(d.PausedFrom), why, f.name, f.name, d.FromVersion)
	case messages.DeploymentState_DEPLOYMENT_STATE_WEIGHTED, messages.DeploymentState_DEPLOYMENT_STATE_AWAITING_PROMOTION:
		// The deployment did its part and waits for a person: a
		// canary's share, or a manual blue/green switch (a rollback of a
		// finished deployment rolls the way the service does, canary
		// included).
		return !f.watchOnly, nil
	}
	return false, nil
}

// nextSteps is the hint printed when a follower stops at a step that
// waits for a person.
func nextSteps(st deployStatus) string {
	d, name := st.d, st.svc.GetSpec().GetName()
	switch d.GetState() {
	case messages.DeploymentState_DEPLOYMENT_STATE_WEIGHTED:
		return fmt.Sprintf("canary v%d gets %d%% of requests: `"+prog()+" service promote %s --weight N` to change it, `"+prog()+" service promote %s` to roll it out everywhere, `"+prog()+" service rollback %s` to abort",
			d.ToVersion, d.Weight, name, name, name)
	case messages.DeploymentState_DEPLOYMENT_STATE_AWAITING_PROMOTION:
		return fmt.Sprintf("green v%d is healthy beside blue v%d, which still serves: `"+prog()+" service promote %s` switches traffic, `"+prog()+" service rollback %s` removes green",
			d.ToVersion, d.FromVersion, name, name)
	}
	return ""
}
