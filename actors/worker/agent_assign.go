package worker

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/actors/blocking"
	"github.com/warrenorch/warren/messages"
)

// Assignment sets: caching them, making the task actors match, and
// removing the containers no set names any more.

func (a *agent) assign(ctx actor.Context, m *messages.Assignments) {
	if m.NodeId != a.cfg.NodeID || m.Index < a.index || a.leaving != "" {
		return // for another node, or older than what we run
	}
	a.learnManagers(m.Managers)
	if m.Node != nil && m.Node.Spec.GetRole() != a.cfg.Role {
		a.changeRole(ctx, m.Node.Spec.GetRole())
	}
	// Cache (an fsync) only when what this node must run changed, not on
	// every push a status change elsewhere causes.
	if sig := assignmentSig(m); sig != a.cachedSig {
		data, err := proto.Marshal(m)
		if err == nil {
			err = a.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(cacheBucket).Put(keyAssign, data) })
		}
		if err != nil {
			a.cfg.Log.Warn("cache assignments", zap.Error(err))
		} else {
			a.cachedSig = sig
		}
	}
	if a.net == nil {
		if err := a.openNetwork(); err != nil {
			a.cfg.Log.Warn("assignments before the task network is up; waiting", zap.Error(err))
			return
		}
	}
	a.apply(ctx, m)
	a.programNetwork(ctx, m)
	if !a.gcDone {
		a.gcOrphans(ctx)
		a.gcDone = true
	}
}

// apply makes the task actors match an assignment set.
func (a *agent) apply(ctx actor.Context, m *messages.Assignments) {
	a.index = m.Index
	want := map[string]*messages.Task{}
	for _, t := range m.Tasks {
		want[t.Id] = t
	}
	for id, pid := range a.actors {
		if _, ok := want[id]; !ok {
			ctx.Send(pid, &removeTask{})
		}
	}
	for id, t := range want {
		if old, ok := a.tasks[id]; ok && t.Epoch < old.Epoch {
			// Fenced: never act on an older assignment. Keep the newer one
			// as the reference, or the same stale task pushed again would
			// pass the check next time.
			want[id] = old
			continue
		}
		if pid, ok := a.actors[id]; ok {
			ctx.Send(pid, t)
			continue
		}
		if t.DesiredState != messages.TaskState_TASK_STATE_RUNNING {
			// Not running here (any more): make sure nothing is left, once.
			if st := a.status[id]; st != nil && st.Status.GetState() == messages.TaskState_TASK_STATE_SHUTDOWN {
				continue
			}
		}
		pid, err := ctx.SpawnNamed(newTask(a.cfg.Task, t), "tasks/"+id)
		if err != nil {
			a.cfg.Log.Warn("spawn task actor", zap.String("task", id), zap.Error(err))
			continue
		}
		ctx.Watch(pid)
		a.actors[id] = pid
	}
	a.tasks = want
	for id := range a.status {
		if _, ok := want[id]; !ok {
			if _, running := a.actors[id]; !running {
				delete(a.status, id)
			}
		}
	}
}

// assignmentSig identifies what an assignment set asks of this node: its
// tasks' ids, epochs, desired states and spec versions.
func assignmentSig(m *messages.Assignments) string {
	var b strings.Builder
	for _, t := range m.Tasks {
		fmt.Fprintf(&b, "%s/%d/%d/%d;", t.Id, t.Epoch, t.DesiredState, t.SpecVersion)
	}
	return b.String()
}

// gcOrphans deletes containers of this node that no assignment names (left
// by a crash between a manager's removal and our cleanup), and the network
// sandboxes of tasks not here. It runs off the mailbox: each orphan may take
// its 5 s stop grace, and heartbeats and assignments must not wait for it.
// The set it keeps is this one: a task that a later set brings back while
// the sweep runs is recreated by its task actor.
func (a *agent) gcOrphans(ctx actor.Context) {
	keep := map[string]bool{}
	for id := range a.tasks {
		keep[id] = true
	}
	rt, nw, node, log := a.cfg.Runtime, a.net, a.cfg.NodeID, a.cfg.Log
	blocking.Do(ctx, gcTimeout+stepSlack, func() (struct{}, error) {
		c, cancel := context.WithTimeout(context.Background(), gcTimeout)
		defer cancel()
		list, err := rt.List(c)
		if err != nil {
			return struct{}{}, fmt.Errorf("list containers: %w", err)
		}
		for _, s := range list {
			if s.Labels["warren.node"] != node || keep[s.ID] {
				continue
			}
			log.Info("removing orphan container", zap.String("container", s.ID))
			_ = rt.Stop(c, s.ID, 5*time.Second)
			if err := rt.Delete(c, s.ID); err != nil {
				log.Warn("remove orphan", zap.String("container", s.ID), zap.Error(err))
			}
		}
		if gc, ok := nw.(interface {
			GC(context.Context, map[string]bool) error
		}); ok {
			if err := gc.GC(c, keep); err != nil {
				log.Warn("network gc", zap.Error(err))
			}
		}
		return struct{}{}, nil
	}, func(_ struct{}, err error) {
		if err != nil {
			a.cfg.Log.Warn("orphan sweep", zap.Error(err))
		}
	})
}

// gcTimeout bounds one orphan sweep.
const gcTimeout = time.Minute
