package runtime

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	goruntime "runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/containerd/containerd/cio"
)

// Task output is kept by a logger process that containerd's shim starts
// next to each task (containerd's "binary" log URI): the shim hands it the
// task's stdout on fd 3 and stderr on fd 4 and waits for fd 5 to close.
// The logger is warren's own binary in a hidden mode (LoggerArg), so output
// keeps being written while the warren process restarts or is upgraded.
//
// It writes Docker json-file lines ({"log":…,"stream":…,"time":…}) to
// <LogPath>.<gen>, gen counting from 1. A file is never renamed: when the
// current one would pass MaxSize the logger opens gen+1 and deletes the
// files older than the last MaxFiles. A reader's position is therefore a
// stable (gen, offset) pair, valid until its file is deleted.

// LoggerArg is argv[1] of warren when it runs as a task's logger.
const LoggerArg = "__warren-task-logger"

// Defaults of --log-max-size and --log-max-files: at most 50 MB per task.
const (
	DefaultLogMaxSize  = 10 << 20
	DefaultLogMaxFiles = 5
	// maxLogLine is where a longer line is split into partial lines, as
	// Docker does at 16 KiB.
	maxLogLine = 16 << 10
	// flushBytes bounds what a logger buffers before writing.
	flushBytes = 64 << 10
)

// LogOptions configure task logs on a node.
type LogOptions struct {
	// Binary is the logger the shim runs: the warren executable.
	Binary   string
	MaxSize  int64 // bytes per file before the logger opens the next
	MaxFiles int   // files kept per task, the current one included
}

func (o LogOptions) withDefaults() LogOptions {
	if o.MaxSize <= 0 {
		o.MaxSize = DefaultLogMaxSize
	}
	if o.MaxFiles <= 0 {
		o.MaxFiles = DefaultLogMaxFiles
	}
	return o
}

// SetLogging makes tasks started from now on write rotated JSON logs
// through opts.Binary. Without it, a task's raw output is appended to its
// LogPath by the shim (tests that read the raw output rely on that).
func (r *Containerd) SetLogging(opts LogOptions) {
	o := opts.withDefaults()
	r.logging = &o
}

// taskIO is where a started task's output goes.
func (r *Containerd) taskIO(path string) cio.Creator {
	if r.logging == nil || r.logging.Binary == "" {
		// The shim opens the file itself (append mode) and keeps it open, so
		// output survives warren restarts and needs no copying by us.
		return cio.LogFile(path)
	}
	// One argument only: the shim passes query keys and values in map
	// order, so several would arrive shuffled.
	cfg := url.Values{}
	cfg.Set("path", path)
	cfg.Set("max-size", strconv.FormatInt(r.logging.MaxSize, 10))
	cfg.Set("max-files", strconv.Itoa(r.logging.MaxFiles))
	return cio.BinaryIO(r.logging.Binary, map[string]string{LoggerArg: cfg.Encode()})
}

// RunLogger is the logger process's main: it returns the exit code. It
// never stops reading its pipes while they are open, whatever happens to
// the files: a logger that stopped would block the task on its next write.
func RunLogger(arg string) int {
	cfg, err := url.ParseQuery(arg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "warren logger: bad config %q: %v\n", arg, err)
		return 2
	}
	maxSize, _ := strconv.ParseInt(cfg.Get("max-size"), 10, 64)
	maxFiles, _ := strconv.Atoi(cfg.Get("max-files"))
	o := LogOptions{MaxSize: maxSize, MaxFiles: maxFiles}.withDefaults()
	// One logger runs per task: keep it small. Its working set is two
	// pipe buffers and one batch of lines per stream.
	goruntime.GOMAXPROCS(2)
	debug.SetGCPercent(25)
	debug.SetMemoryLimit(8 << 20)
	stdout, stderr, ready := os.NewFile(3, "stdout"), os.NewFile(4, "stderr"), os.NewFile(5, "ready")

	w, werr := openRotator(cfg.Get("path"), o.MaxSize, o.MaxFiles)
	if werr != nil {
		fmt.Fprintf(os.Stderr, "warren logger: %v; the task's output is dropped\n", werr)
	}
	// The shim closes the pipes, then sends SIGTERM: keep draining until
	// EOF, but not for ever.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		time.Sleep(10 * time.Second)
		os.Exit(0)
	}()
	ready.Close()

	var wg sync.WaitGroup
	for _, s := range []struct {
		f    *os.File
		name string
	}{{stdout, "stdout"}, {stderr, "stderr"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			copyLines(s.f, s.name, w, time.Now)
		}()
	}
	wg.Wait()
	if w != nil {
		w.Close()
	}
	return 0
}

// jsonLine is one line of a log file, in Docker json-file's shape.
type jsonLine struct {
	Log    string `json:"log"`
	Stream string `json:"stream"`
	Time   string `json:"time"`
}

// copyLines turns what r delivers into JSON lines for w (nil: dropped),
// splitting lines longer than maxLogLine. It writes whenever the pipe has
// nothing more buffered, so a quiet task's lines are on disk at once and a
// busy task's go out in large writes.
func copyLines(r io.Reader, stream string, w *rotator, now func() time.Time) {
	br := bufio.NewReaderSize(r, maxLogLine)
	out := make([]byte, 0, flushBytes+2*maxLogLine)
	flush := func() {
		if len(out) > 0 && w != nil {
			w.Write(out)
		}
		out = out[:0]
	}
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			out = appendLogLine(out, line, stream, now())
		}
		if err != nil && err != bufio.ErrBufferFull {
			flush()
			return
		}
		if len(out) >= flushBytes || br.Buffered() == 0 {
			flush()
		}
	}
}

// appendLogLine appends one json-file line, as encoding/json would write
// jsonLine, without allocating: a busy task's logger handles hundreds of
// thousands of lines a second.
func appendLogLine(b, line []byte, stream string, t time.Time) []byte {
	b = append(b, `{"log":"`...)
	b = appendJSONString(b, line)
	b = append(b, `","stream":"`...)
	b = append(b, stream...)
	b = append(b, `","time":"`...)
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, "\"}\n"...)
}

const hexDigits = "0123456789abcdef"

// appendJSONString escapes s for a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 replaced by U+FFFD.
func appendJSONString(b, s []byte) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return b
}

// rotator appends to <base>.<gen> and opens the next gen at maxSize.
type rotator struct {
	mu       sync.Mutex
	base     string
	maxSize  int64
	maxFiles int
	gen      uint64
	f        *os.File
	size     int64
	dropped  int64 // bytes lost to write errors (a full disk)
}

func openRotator(base string, maxSize int64, maxFiles int) (*rotator, error) {
	if base == "" || !filepath.IsAbs(base) {
		return nil, fmt.Errorf("log path %q must be absolute", base)
	}
	if err := os.MkdirAll(filepath.Dir(base), 0o700); err != nil {
		return nil, fmt.Errorf("create log directory: %w", err)
	}
	gens, err := LogGens(base)
	if err != nil {
		return nil, err
	}
	w := &rotator{base: base, maxSize: maxSize, maxFiles: maxFiles, gen: 1}
	if len(gens) > 0 {
		// A restarted task continues its last file.
		w.gen = gens[len(gens)-1]
	}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *rotator) open() error {
	f, err := os.OpenFile(LogFileName(w.base, w.gen), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open log file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("open log file: %w", err)
	}
	w.f, w.size = f, st.Size()
	return nil
}

// Write appends whole lines (b ends with a newline), opening the next
// file where the current one would pass maxSize.
func (w *rotator) Write(b []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(b) > 0 {
		n := fitLines(b, w.maxSize-w.size)
		if n == 0 {
			if w.size > 0 {
				w.rotate()
				continue
			}
			n = bytes.IndexByte(b, '\n') + 1 // a line over the cap alone
			if n == 0 {
				n = len(b)
			}
		}
		w.write(b[:n])
		b = b[n:]
	}
}

// fitLines is how many bytes of whole lines of b fit in room.
func fitLines(b []byte, room int64) int {
	if int64(len(b)) <= room {
		return len(b)
	}
	if room <= 0 {
		return 0
	}
	return bytes.LastIndexByte(b[:room], '\n') + 1
}

func (w *rotator) write(b []byte) {
	if w.f == nil {
		// A rotation failed: try again now, drop the lines if it fails.
		if err := w.open(); err != nil {
			w.dropped += int64(len(b))
			return
		}
	}
	n, err := w.f.Write(b)
	w.size += int64(n)
	if err != nil {
		w.dropped += int64(len(b) - n)
	}
}

func (w *rotator) rotate() {
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
	w.size = 0
	w.gen++
	if err := w.open(); err != nil {
		fmt.Fprintf(os.Stderr, "warren logger: %v\n", err)
	}
	if w.gen > uint64(w.maxFiles) {
		gens, _ := LogGens(w.base)
		for _, g := range gens {
			if g+uint64(w.maxFiles) <= w.gen {
				os.Remove(LogFileName(w.base, g))
			}
		}
	}
}

func (w *rotator) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
}

// LogFileName is the file of one generation of a task's log.
func LogFileName(base string, gen uint64) string {
	return base + "." + strconv.FormatUint(gen, 10)
}

// LogGens lists the generations of base's log that exist, oldest first.
func LogGens(base string) ([]uint64, error) {
	ents, err := os.ReadDir(filepath.Dir(base))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list logs: %w", err)
	}
	prefix := filepath.Base(base) + "."
	var gens []uint64
	for _, e := range ents {
		if rest, ok := strings.CutPrefix(e.Name(), prefix); ok {
			if g, err := strconv.ParseUint(rest, 10, 64); err == nil && g > 0 {
				gens = append(gens, g)
			}
		}
	}
	sort.Slice(gens, func(i, j int) bool { return gens[i] < gens[j] })
	return gens, nil
}
