package main

// The rollout flags of `service update`: strategy, batches, order, failure
// handling, blue/green and canary settings, kept in the spec's
// update_config for later updates.

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/warrenorch/warren/messages"
)

// updateConfigEdit turns the rollout flags into changes of the spec's
// update_config, which stays for later updates (as in Swarm).
func updateConfigEdit(c *cli.Context) (specEdit, error) {
	var sets []func(u *messages.UpdateConfig)
	if c.IsSet("strategy") {
		var st messages.DeployStrategy
		switch c.String("strategy") {
		case "rolling":
		case "blue-green", "bluegreen", "blue/green":
			st = messages.DeployStrategy_DEPLOY_STRATEGY_BLUE_GREEN
		case "canary":
			st = messages.DeployStrategy_DEPLOY_STRATEGY_CANARY
		default:
			return nil, fmt.Errorf("invalid --strategy %q: use rolling, blue-green or canary", c.String("strategy"))
		}
		sets = append(sets, func(u *messages.UpdateConfig) { u.Strategy = st })
	}
	if c.IsSet("update-parallelism") {
		n := c.Int("update-parallelism")
		if n < 0 || n > messages.MaxReplicas {
			return nil, fmt.Errorf("invalid --update-parallelism %d: give how many tasks are replaced at once, 1 to %d (0: all at once)", n, messages.MaxReplicas)
		}
		if n == 0 {
			// The spec's 0 means the default, one at a time (as Swarm's
			// CLI sends 1 unless told otherwise): all at once is a batch
			// as large as any service may be.
			n = messages.MaxReplicas
		}
		sets = append(sets, func(u *messages.UpdateConfig) { u.Parallelism = uint32(n) })
	}
	durFlag := func(name string, set func(u *messages.UpdateConfig, ms int64)) error {
		if !c.IsSet(name) {
			return nil
		}
		d := c.Duration(name)
		if d < 0 {
			return fmt.Errorf("invalid --%s %s: it cannot be negative", name, d)
		}
		sets = append(sets, func(u *messages.UpdateConfig) { set(u, d.Milliseconds()) })
		return nil
	}
	if err := durFlag("update-delay", func(u *messages.UpdateConfig, ms int64) { u.DelayMs = ms }); err != nil {
		return nil, err
	}
	if err := durFlag("update-monitor", func(u *messages.UpdateConfig, ms int64) { u.MonitorMs = ms }); err != nil {
		return nil, err
	}
	if err := durFlag("grace", func(u *messages.UpdateConfig, ms int64) { u.GraceMs = ms }); err != nil {
		return nil, err
	}
	if c.IsSet("update-order") {
		var o messages.UpdateOrder
		switch c.String("update-order") {
		case "stop-first":
		case "start-first":
			o = messages.UpdateOrder_UPDATE_ORDER_START_FIRST
		default:
			return nil, fmt.Errorf("invalid --update-order %q: use stop-first or start-first", c.String("update-order"))
		}
		sets = append(sets, func(u *messages.UpdateConfig) { u.Order = o })
	}
	if c.IsSet("update-failure-action") {
		var a messages.FailureAction
		switch c.String("update-failure-action") {
		case "rollback":
			a = messages.FailureAction_FAILURE_ACTION_ROLLBACK
		case "pause":
			a = messages.FailureAction_FAILURE_ACTION_PAUSE
		case "continue":
			a = messages.FailureAction_FAILURE_ACTION_CONTINUE
		default:
			return nil, fmt.Errorf("invalid --update-failure-action %q: use rollback, pause or continue", c.String("update-failure-action"))
		}
		sets = append(sets, func(u *messages.UpdateConfig) { u.FailureAction = a })
	}
	if c.IsSet("update-max-failure-ratio") {
		r := c.Float64("update-max-failure-ratio")
		if !(r >= 0 && r <= 1) {
			return nil, fmt.Errorf("invalid --update-max-failure-ratio %g: give a share from 0 to 1, e.g. 0.2 tolerates one failed task in five", r)
		}
		sets = append(sets, func(u *messages.UpdateConfig) { u.MaxFailureRatio = float32(r) })
	}
	if c.IsSet("switch-after") {
		var manual bool
		switch c.String("switch-after") {
		case "healthy":
		case "manual":
			manual = true
		default:
			return nil, fmt.Errorf("invalid --switch-after %q: use healthy (switch as soon as every green task is healthy) or manual (on `service promote`)", c.String("switch-after"))
		}
		sets = append(sets, func(u *messages.UpdateConfig) { u.SwitchManual = manual })
	}
	if c.IsSet("canary-replicas") {
		n := c.Int("canary-replicas")
		if n < 1 || n > messages.MaxReplicas {
			return nil, fmt.Errorf("invalid --canary-replicas %d: give how many canary tasks run beside the stable ones, 1 to %d", n, messages.MaxReplicas)
		}
		sets = append(sets, func(u *messages.UpdateConfig) { u.CanaryReplicas = uint32(n) })
	}
	if c.IsSet("weight") {
		w := c.Int("weight")
		if err := checkWeight("--weight", w); err != nil {
			return nil, err
		}
		sets = append(sets, func(u *messages.UpdateConfig) { u.CanaryWeight = uint32(w) })
	}
	if len(sets) == 0 {
		return nil, nil
	}
	return func(s *messages.ServiceSpec) error {
		if s.UpdateConfig == nil {
			s.UpdateConfig = &messages.UpdateConfig{} // failure action: rollback, the zero value
		}
		for _, set := range sets {
			set(s.UpdateConfig)
		}
		return checkStrategyFlags(c, s)
	}, nil
}

// checkStrategyFlags refuses a strategy's settings on a service whose
// strategy (after this update) is another one: they would be ignored.
func checkStrategyFlags(c *cli.Context, s *messages.ServiceSpec) error {
	st := s.GetUpdateConfig().GetStrategy()
	for _, f := range []string{"canary-replicas", "weight"} {
		if c.IsSet(f) && st != messages.DeployStrategy_DEPLOY_STRATEGY_CANARY {
			return fmt.Errorf("--%s applies to canary deployments and %s deploys %s: add --strategy canary", f, s.Name, strategyName(st))
		}
	}
	for _, f := range []string{"switch-after", "grace"} {
		if c.IsSet(f) && st != messages.DeployStrategy_DEPLOY_STRATEGY_BLUE_GREEN {
			return fmt.Errorf("--%s applies to blue-green deployments and %s deploys %s: add --strategy blue-green", f, s.Name, strategyName(st))
		}
	}
	return nil
}
