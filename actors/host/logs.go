package host

import (
	"fmt"
	"os"

	"go.uber.org/zap"
)

// setTaskLogs makes the runtime keep task output as rotated JSON lines,
// written by this executable in its logger mode (runtime/logs.go; the
// CLI's main dispatches it before anything else).
func (n *Node) setTaskLogs() error {
	o := n.cfg.TaskLogs
	if o.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find this executable to run as the task logger: %w", err)
		}
		o.Binary = exe
	}
	if _, err := os.Stat(o.Binary); err != nil {
		return fmt.Errorf("task logger %s: %w", o.Binary, err)
	}
	n.rt.SetLogging(o)
	n.cfg.Log.Info("task logs are rotated JSON lines", zap.String("logger", o.Binary),
		zap.Int64("max_size", o.MaxSize), zap.Int("max_files", o.MaxFiles))
	return nil
}
