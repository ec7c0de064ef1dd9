package worker

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/runtime"
)

// Per-task metrics, read on each scrape: the node's containers from the
// runtime, then each running one's cgroup and netns counters from the
// kernel. Nothing runs between scrapes (no goroutine per task).
var (
	taskLabels    = []string{"service", "task", "node"}
	descTaskCPU   = prometheus.NewDesc("warren_task_cpu_seconds_total", "CPU time (user+system) the task's container has used since it was created.", taskLabels, nil)
	descTaskMem   = prometheus.NewDesc("warren_task_memory_bytes", "Memory charged to the task's container cgroup now, page cache included.", taskLabels, nil)
	descTaskRx    = prometheus.NewDesc("warren_task_network_receive_bytes_total", "Bytes the task's network namespace received, loopback excluded.", taskLabels, nil)
	descTaskTx    = prometheus.NewDesc("warren_task_network_transmit_bytes_total", "Bytes the task's network namespace sent, loopback excluded.", taskLabels, nil)
	descTaskStart = prometheus.NewDesc("warren_task_restarts_total", "Times this node restarted the task's container under its restart policy (counted since this node process started).", taskLabels, nil)
	descTaskUp    = prometheus.NewDesc("warren_task_running", "1 if the task's container process runs on this node, else 0.", taskLabels, nil)
)

// taskRestarts is the latest restart count each task actor reported,
// by task id: the task actor writes it (noteRestarts), the collector reads
// it and forgets the tasks whose containers are gone. Process-wide, as task
// ids are unique across nodes.
var taskRestarts sync.Map

func noteRestarts(task string, n uint32) {
	if n > 0 {
		taskRestarts.Store(task, n)
	}
}

// Containers is what the collector needs of the runtime.
type Containers interface {
	List(ctx context.Context) ([]runtime.Status, error)
}

type taskCollector struct {
	rt   Containers
	node string
	log  *zap.Logger
	// stats reads one container's counters (runtime.StatsOf; a test's fake).
	stats func(pid uint32) (runtime.TaskStats, error)
}

// NewTaskCollector returns the per-task collector of node's containers.
func NewTaskCollector(rt Containers, node string, log *zap.Logger) prometheus.Collector {
	return &taskCollector{rt: rt, node: node, log: log, stats: runtime.StatsOf}
}

func (c *taskCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTaskCPU, descTaskMem, descTaskRx, descTaskTx, descTaskStart, descTaskUp} {
		ch <- d
	}
}

func (c *taskCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	list, err := c.rt.List(ctx)
	if err != nil {
		c.log.Warn("task metrics: list containers", zap.Error(err))
		return
	}
	live := map[string]bool{}
	for _, s := range list {
		task, svc := s.Labels["warren.task"], s.Labels["warren.service"]
		if task == "" || s.Labels["warren.node"] != c.node {
			continue // not a task of this node (another tool's container)
		}
		live[task] = true
		labels := []string{svc, task, c.node}
		metric := func(d *prometheus.Desc, t prometheus.ValueType, v float64) {
			ch <- prometheus.MustNewConstMetric(d, t, v, labels...)
		}
		var restarts uint32
		if v, ok := taskRestarts.Load(task); ok {
			restarts = v.(uint32)
		}
		metric(descTaskStart, prometheus.CounterValue, float64(restarts))
		if !s.Running {
			metric(descTaskUp, prometheus.GaugeValue, 0)
			continue
		}
		metric(descTaskUp, prometheus.GaugeValue, 1)
		st, err := c.stats(s.Pid)
		if err != nil {
			// The process may have exited since the list; what was read is
			// still exported, what was not is left out rather than shown as 0.
			c.log.Debug("task metrics: read stats", zap.String("task", task), zap.Error(err))
		}
		if st.CPUSeconds > 0 {
			metric(descTaskCPU, prometheus.CounterValue, st.CPUSeconds)
		}
		if st.MemoryBytes > 0 {
			metric(descTaskMem, prometheus.GaugeValue, float64(st.MemoryBytes))
		}
		if st.HasNetwork {
			metric(descTaskRx, prometheus.CounterValue, float64(st.RxBytes))
			metric(descTaskTx, prometheus.CounterValue, float64(st.TxBytes))
		}
	}
	taskRestarts.Range(func(k, _ any) bool {
		if !live[k.(string)] {
			taskRestarts.Delete(k)
		}
		return true
	})
}
