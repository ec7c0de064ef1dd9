// Command testapp is the workload warren's tests deploy: a small static HTTP
// server that reports who it is (hostname, version, task, chosen env vars),
// can be made unhealthy or made to exit on request, and shuts down cleanly on
// SIGTERM. It prints its version, args and environment at start so that log
// tests can check what the runtime passed in.
//
// Endpoints:
//
//	GET  /               text lines (hostname=, version=, task=, NAME=value); ?format=json for JSON
//	GET  /healthz        200 "ok", or 503 after POST /healthz/fail
//	POST /healthz/fail   become unhealthy
//	POST /healthz/ok     become healthy again
//	POST /exit?code=N    reply, then exit with code N (crash tests)
//
// With HEALTHZ=fail in its environment (the demo:v2bad image sets it), it
// starts unhealthy and stays so until POST /healthz/ok: a version that
// never passes its health check, for deployment rollback tests.
//
// With -isolation it prints what confines it, and with -threads N it holds
// N OS threads, instead of serving (runtime isolation tests).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/warrenorch/warren/e2e/loadgen"
)

// defaultVersion is reported when $VERSION is unset; the image packer sets it
// with -ldflags "-X main.defaultVersion=...".
var defaultVersion = "v1"

func main() {
	listen := flag.String("listen", "", "address to listen on (default :$PORT, or :80)")
	ignoreTerm := flag.Bool("ignore-sigterm", false, "ignore SIGTERM, so that stop must escalate to SIGKILL (for runtime tests)")
	probeURL := flag.String("probe", "", "GET this URL and exit 0 on a 2xx answer, else 1 (an in-container health check tool; the image has no curl)")
	fetchURL := flag.String("fetch", "", "GET this URL -n times (new connection each) and print a JSON object: task id -> answers, plus \"failed\"")
	count := flag.Int("n", 1, "requests for -fetch")
	during := flag.Duration("for", 0, "with -fetch: keep fetching this long instead of -n times")
	trace := flag.Bool("trace", false, "with -fetch: print one JSON line per request (start unix ns, ms taken, version, task or error) instead of the counts")
	loadURL := flag.String("load", "", "GET this URL with -c workers for -for, a new connection each, and print the result as JSON")
	conc := flag.Int("c", 4, "workers for -load")
	sinkAddr := flag.String("sink", "", "accept TCP streams on this address for -for, answering each with its byte count")
	blastAddr := flag.String("blast", "", "stream zeros to a -sink at this address for -for and print the result as JSON")
	idleURL := flag.String("idle", "", "GET this URL, keep the connection idle for -for, GET again on it, and print the result as JSON (exit 1 unless the connection survived)")
	srvName := flag.String("srv", "", "look up SRV records of this name and print TARGET PORT, one per line")
	resolve := flag.String("resolve", "", "resolve this name with the container's resolver and print the addresses, one per line")
	isolation := flag.Bool("isolation", false, "print the confinement the process runs under as JSON (seccomp mode, effective capabilities, whether keyctl is allowed) and exit")
	threads := flag.Int("threads", 0, "hold this many OS threads at once, print how many and exit 0; the Go runtime exits 2 when the kernel refuses a thread (pids limit tests)")
	flag.Parse()
	allocFromEnv() // alloc.go: ALLOC_MB=50 holds 50 MB (per-task memory metric tests)
	linesFromEnv() // lines.go: LINES_RATE=100 prints numbered lines (log tests)
	if *isolation {
		json.NewEncoder(os.Stdout).Encode(probeIsolation())
		os.Exit(0)
	}
	if *threads > 0 {
		holdThreads(*threads)
		os.Exit(0)
	}
	if *probeURL != "" {
		os.Exit(probe(*probeURL))
	}
	if *fetchURL != "" {
		if *trace {
			os.Exit(fetchTrace(*fetchURL, *count, *during))
		}
		os.Exit(fetch(*fetchURL, *count, *during))
	}
	if *resolve != "" {
		addrs, err := net.DefaultResolver.LookupHost(context.Background(), *resolve)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for _, a := range addrs {
			fmt.Println(a)
		}
		os.Exit(0)
	}

	if *loadURL != "" {
		json.NewEncoder(os.Stdout).Encode(loadgen.Requests(*loadURL, *during, *conc))
		os.Exit(0)
	}
	if *sinkAddr != "" {
		l, err := net.Listen("tcp", *sinkAddr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		time.AfterFunc(*during, func() { l.Close() })
		loadgen.Sink(l)
		os.Exit(0)
	}
	if *blastAddr != "" {
		r, err := loadgen.Blast(*blastAddr, *during)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		json.NewEncoder(os.Stdout).Encode(r)
		os.Exit(0)
	}
	if *idleURL != "" {
		r, err := loadgen.HoldIdle(*idleURL, *during)
		json.NewEncoder(os.Stdout).Encode(r)
		if err != nil || !r.Reused || r.First != r.Second {
			fmt.Fprintln(os.Stderr, "idle connection did not survive:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if *srvName != "" {
		_, recs, err := net.DefaultResolver.LookupSRV(context.Background(), "", "", *srvName)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for _, r := range recs {
			fmt.Println(r.Target, r.Port)
		}
		os.Exit(0)
	}

	addr := *listen
	if addr == "" {
		addr = ":80"
		if p := os.Getenv("PORT"); p != "" {
			addr = ":" + p
		}
	}
	version := os.Getenv("VERSION")
	if version == "" {
		version = defaultVersion
	}

	hostname, _ := os.Hostname()
	fmt.Printf("testapp starting version=%s listen=%s hostname=%s pid=%d args=%q\n", version, addr, hostname, os.Getpid(), os.Args[1:])
	env := os.Environ()
	sort.Strings(env)
	for _, kv := range env {
		fmt.Printf("env %s\n", kv)
	}

	a := &app{version: version}
	if os.Getenv("HEALTHZ") == "fail" {
		a.unhealthy.Store(true)
		fmt.Println("HEALTHZ=fail: health starts failing")
	}
	srv := &http.Server{Addr: addr, Handler: a.routes(), ReadHeaderTimeout: 10 * time.Second}

	sigs := make(chan os.Signal, 1)
	if *ignoreTerm {
		// As PID 1 in a container a signal without a handler is dropped by
		// the kernel anyway; ignoring it explicitly makes that obvious.
		signal.Ignore(syscall.SIGTERM)
		signal.Notify(sigs, syscall.SIGINT)
		fmt.Println("ignoring SIGTERM")
	} else {
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	}
	go func() {
		sig := <-sigs
		fmt.Printf("testapp received %s, shutting down\n", sig)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "shutdown: %v\n", err)
		}
	}()

	fmt.Printf("listening on %s\n", addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(os.Stderr, "testapp: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("testapp stopped")
}

type app struct {
	version   string
	unhealthy atomic.Bool
}

func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.index)
	mux.HandleFunc("GET /healthz", a.healthz)
	mux.HandleFunc("POST /healthz/fail", func(w http.ResponseWriter, _ *http.Request) {
		a.unhealthy.Store(true)
		fmt.Println("health switched to failing")
		fmt.Fprintln(w, "unhealthy")
	})
	mux.HandleFunc("POST /healthz/ok", func(w http.ResponseWriter, _ *http.Request) {
		a.unhealthy.Store(false)
		fmt.Println("health switched to ok")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("POST /exit", a.exit)
	return mux
}

// echoedEnv returns the names of the env vars that / reports: those listed
// in $ECHO_ENV, then GREETING, without duplicates.
func echoedEnv() []string {
	var names []string
	seen := map[string]bool{}
	for _, n := range append(strings.Split(os.Getenv("ECHO_ENV"), ","), "GREETING") {
		n = strings.TrimSpace(n)
		if n == "" || seen[n] {
			continue
		}
		seen[n] = true
		names = append(names, n)
	}
	return names
}

func (a *app) index(w http.ResponseWriter, r *http.Request) {
	hostname, _ := os.Hostname()
	task := os.Getenv("WARREN_TASK_ID")
	names := echoedEnv()
	if r.URL.Query().Get("format") == "json" {
		env := make(map[string]string, len(names))
		for _, n := range names {
			env[n] = os.Getenv(n)
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(struct {
			Hostname string            `json:"hostname"`
			Version  string            `json:"version"`
			Task     string            `json:"task"`
			Env      map[string]string `json:"env"`
		}{hostname, a.version, task, env})
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "hostname=%s\nversion=%s\ntask=%s\n", hostname, a.version, task)
	for _, n := range names {
		fmt.Fprintf(w, "%s=%s\n", n, os.Getenv(n))
	}
}

func (a *app) healthz(w http.ResponseWriter, _ *http.Request) {
	if a.unhealthy.Load() {
		http.Error(w, "unhealthy", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

func (a *app) exit(w http.ResponseWriter, r *http.Request) {
	code, err := strconv.Atoi(r.URL.Query().Get("code"))
	if err != nil || code < 0 || code > 255 {
		http.Error(w, "code must be an integer 0-255", http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "exiting with code %d\n", code)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	fmt.Printf("exiting with code %d on request\n", code)
	// Exit after the handler returns so the client gets its reply; a crash
	// test wants to see the response and then the process gone.
	go func() {
		time.Sleep(100 * time.Millisecond)
		os.Exit(code)
	}()
}

// probe is the image's own curl -f for exec health checks.
func probe(url string) int {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		fmt.Fprintln(os.Stderr, resp.Status)
		return 1
	}
	return 0
}

// fetch is the image's own load tool for e2e tests: which task answered.
// With during > 0 it runs that long instead of n times.
func fetch(url string, n int, during time.Duration) int {
	seen := map[string]int{}
	end := time.Now().Add(during)
	for i := 0; (during > 0 && time.Now().Before(end)) || (during <= 0 && i < n); i++ {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get(url)
		if err != nil {
			seen["failed"]++
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		task := "unknown"
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "task="); ok {
				task = v
			}
		}
		if resp.StatusCode != http.StatusOK {
			task = "failed"
		}
		seen[task]++
	}
	out, _ := json.Marshal(seen)
	fmt.Println(string(out))
	return 0
}

// fetchTrace is fetch for tests that need to know when requests failed or
// which version answered them: one line per 100 ms in which requests
// started, "UNIXMS VERSION=N ... failed=N" (unix ms of the bucket's start),
// then "err TEXT" with the first error, if any. Compact, as an exec's
// output is capped at a few kB.
func fetchTrace(url string, n int, during time.Duration) int {
	const bucket = 100 * time.Millisecond
	var cur int64 = -1
	counts := map[string]int{}
	flush := func() {
		if cur < 0 {
			return
		}
		keys := make([]string, 0, len(counts))
		for k := range counts {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		line := strconv.FormatInt(cur, 10)
		for _, k := range keys {
			line += fmt.Sprintf(" %s=%d", k, counts[k])
		}
		fmt.Println(line)
		clear(counts)
	}
	firstErr := ""
	end := time.Now().Add(during)
	for i := 0; (during > 0 && time.Now().Before(end)) || (during <= 0 && i < n); i++ {
		c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		start := time.Now()
		if b := start.Truncate(bucket).UnixMilli(); b != cur {
			flush()
			cur = b
		}
		version := ""
		resp, err := c.Get(url)
		if err == nil {
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case rerr != nil:
				err = rerr
			case resp.StatusCode != http.StatusOK:
				err = errors.New(resp.Status)
			}
			for _, l := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(l, "version="); ok {
					version = v
				}
			}
		}
		if err == nil && version == "" {
			err = errors.New("no version in the answer")
		}
		if err != nil {
			counts["failed"]++
			if firstErr == "" {
				firstErr = err.Error()
			}
		} else {
			counts[version]++
		}
		time.Sleep(10 * time.Millisecond)
	}
	flush()
	if firstErr != "" {
		fmt.Println("err " + firstErr)
	}
	return 0
}
