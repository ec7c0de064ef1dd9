package client

import (
	"context"
	"crypto/tls"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/actors/events"
	"github.com/warrenorch/warren/actors/remoting"
	"github.com/warrenorch/warren/messages"
)

// scaleAPI stands where a manager's api is: it counts the scales it
// applies (the state a refused request must not change) and answers
// ClusterInfoRequest with the count and who asked. onScale, if set, runs
// after a scale is counted, before the answer.
type scaleAPI struct {
	scales  *atomic.Int64
	onScale func()
}

func (a *scaleAPI) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *messages.ScaleServiceRequest:
		a.scales.Add(1)
		if a.onScale != nil {
			a.onScale()
			return
		}
		ctx.Respond(&messages.ServiceReply{Service: &messages.Service{}})
	case *messages.ClusterInfoRequest:
		id := remoting.Identity(ctx)
		ctx.Respond(&messages.ClusterInfoReply{NodeId: id.Name, Version: id.Role})
	}
}

// manager is a manager's remoting endpoint with a real TLS certificate and,
// unless api is nil, a scaleAPI at the api's name and a real events hub.
type manager struct {
	sys    *actor.ActorSystem
	r      *remote.Remote
	addr   string
	scales atomic.Int64
}

func startManager(t *testing.T, conf *tls.Config, withAPI bool, onScale func()) *manager {
	t.Helper()
	m := &manager{sys: actor.NewActorSystem(actor.WithLoggerFactory(loggerFactory(zap.NewNop())))}
	var err error
	m.r, m.addr, err = remoting.Start(m.sys, remoting.Config{Host: "127.0.0.1", Port: 0, TLS: conf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.r.Shutdown(false); m.sys.Shutdown() })
	if !withAPI {
		return m
	}
	if _, err := m.sys.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return &scaleAPI{scales: &m.scales, onScale: onScale} }), remoting.ActorAPI); err != nil {
		t.Fatal(err)
	}
	if _, err := m.sys.Root.SpawnNamed(events.NewHub("m1", filepath.Join(t.TempDir(), "events.db"), zap.NewNop(), events.Retention{}), remoting.ActorEvents); err != nil {
		t.Fatal(err)
	}
	return m
}

// gatewayActors lists the manager's gateway sessions and relays alive.
func (m *manager) gatewayActors() []string {
	var ids []string
	for _, b := range m.sys.ProcessRegistry.LocalPIDs.LocalPIDs {
		for _, id := range b.Keys() {
			if strings.HasPrefix(id, remoting.GatewayPrefix) {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestClientThroughGateway: the client runs no endpoint; requests, their
// answers and a followed event stream all travel on the one connection it
// opens, under its certificate's identity.
func TestClientThroughGateway(t *testing.T) {
	cr := newCreds(t)
	m := startManager(t, cr.manager, true, nil)

	t.Run("admin requests are answered", func(t *testing.T) {
		c, err := DialTLS([]string{m.addr}, cr.admin, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		info, err := c.ClusterInfo()
		if err != nil {
			t.Fatal(err)
		}
		if info.NodeId != "admin" || info.Version != "admin" {
			t.Fatalf("the api saw %s/%s, want admin/admin", info.NodeId, info.Version)
		}
		before := m.scales.Load()
		if _, err := c.ScaleService("web", 3); err != nil {
			t.Fatal(err)
		}
		if got := m.scales.Load(); got != before+1 {
			t.Fatalf("scales: %d, want %d", got, before+1)
		}
	})

	t.Run("a worker certificate is refused and changes nothing", func(t *testing.T) {
		c, err := DialTLS([]string{m.addr}, cr.worker, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		before := m.scales.Load()
		_, err = c.ScaleService("web", 9)
		if err == nil || !strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), "ScaleServiceRequest") {
			t.Fatalf("worker's scale: %v, want a refusal naming the request", err)
		}
		if got := m.scales.Load(); got != before {
			t.Fatalf("scales went from %d to %d after the refused request", before, got)
		}
	})

	t.Run("events follow through a relay that ends with the client", func(t *testing.T) {
		c, err := DialTLS([]string{m.addr}, cr.admin, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		got := make(chan *messages.Event, 16)
		done := make(chan error, 1)
		go func() {
			done <- c.Events(ctx, EventOptions{Types: []string{"test."}}, func(ev *messages.Event) error {
				got <- ev
				return nil
			})
		}()
		// Published until one arrives: the subscription is made meanwhile.
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		deadline := time.After(10 * time.Second)
	wait:
		for {
			select {
			case ev := <-got:
				if ev.Type != "test.ping" || ev.Seq == 0 {
					t.Fatalf("event %v", ev)
				}
				break wait
			case <-tick.C:
				m.sys.EventStream.Publish(&messages.Event{Type: "test.ping", Subject: "web"})
			case err := <-done:
				t.Fatalf("Events returned: %v", err)
			case <-deadline:
				t.Fatal("no event within 10s")
			}
		}
		if len(m.gatewayActors()) == 0 {
			t.Fatal("no gateway session on the manager while following")
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		c.Close()
		eventually(t, "the session and its relay stop with the stream", func() bool { return len(m.gatewayActors()) == 0 })
	})

	t.Run("the stream ends when the manager goes away", func(t *testing.T) {
		m2 := startManager(t, cr.manager, true, nil)
		c, err := DialTLS([]string{m2.addr}, cr.admin, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		done := make(chan error, 1)
		go func() {
			done <- c.Events(context.Background(), EventOptions{}, func(*messages.Event) error { return nil })
		}()
		eventually(t, "subscribed", func() bool {
			for _, id := range m2.gatewayActors() {
				if strings.Contains(id, "relay-") {
					return true
				}
			}
			return false
		})
		m2.r.Shutdown(false)
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "ended") {
				t.Fatalf("Events after the manager went away: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Events still waiting 10s after the manager went away")
		}
	})
}

// TestGatewayFailover: a request no manager received (no api there: a
// dead letter) is sent to the next manager; one that reached a manager
// whose connection broke before the answer may have been applied and is
// not sent again.
func TestGatewayFailover(t *testing.T) {
	cr := newCreds(t)
	t.Run("a dead letter goes to the next manager", func(t *testing.T) {
		former := startManager(t, cr.manager, false, nil) // no api: no longer a manager
		live := startManager(t, cr.manager, true, nil)
		c, err := DialTLS([]string{former.addr, live.addr}, cr.admin, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.ScaleService("web", 1); err != nil {
			t.Fatal(err)
		}
		if c.Manager() != live.addr || live.scales.Load() != 1 {
			t.Fatalf("answered through %s with %d scales there, want %s with 1", c.Manager(), live.scales.Load(), live.addr)
		}
	})

	t.Run("a request maybe applied is not resent", func(t *testing.T) {
		var first *manager
		first = startManager(t, cr.manager, true, func() { go first.r.Shutdown(false) })
		other := startManager(t, cr.manager, true, nil)
		c, err := DialTLS([]string{first.addr, other.addr}, cr.admin, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, err = c.ScaleService("web", 1)
		if err == nil || !strings.Contains(err.Error(), "may have been applied") {
			t.Fatalf("scale whose manager went away before answering: %v", err)
		}
		if errors.Is(err, actor.ErrDeadLetter) {
			t.Fatal("reported as never delivered")
		}
		if first.scales.Load() != 1 || other.scales.Load() != 0 {
			t.Fatalf("scales: %d on the first manager, %d on the other; want 1 and 0", first.scales.Load(), other.scales.Load())
		}
	})
}
