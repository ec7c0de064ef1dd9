package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/runtime"
)

// Health check defaults when the spec leaves them out.
const (
	defaultHealthInterval = 30 * time.Second
	defaultHealthTimeout  = 5 * time.Second
	defaultHealthRetries  = 3
	defaultHealthPort     = 80
)

func healthInterval(hc *messages.HealthCheck) time.Duration {
	if d := time.Duration(hc.GetIntervalMs()) * time.Millisecond; d > 0 {
		return d
	}
	return defaultHealthInterval
}

func healthTimeout(hc *messages.HealthCheck) time.Duration {
	if d := time.Duration(hc.GetTimeoutMs()) * time.Millisecond; d > 0 {
		return d
	}
	return defaultHealthTimeout
}

func healthRetries(hc *messages.HealthCheck) int {
	if r := hc.GetRetries(); r > 0 {
		return int(r)
	}
	return defaultHealthRetries
}

func healthPort(hc *messages.HealthCheck) string {
	if p := hc.GetPort(); p > 0 {
		return strconv.Itoa(int(p))
	}
	return strconv.Itoa(defaultHealthPort)
}

// probe runs one health check against a task (its IP on the node bridge, or
// inside the container for exec) and returns nil when it is healthy.
func probe(ctx context.Context, hc *messages.HealthCheck, rt runtime.Runtime, taskID, ip string) error {
	switch hc.GetKind() {
	case messages.HealthCheck_KIND_HTTP:
		path := hc.GetHttpPath()
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(ip, healthPort(hc))+path, nil)
		if err != nil {
			return err
		}
		for k, v := range hc.GetHttpHeaders() {
			req.Header.Set(k, v)
		}
		cl := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := cl.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if want := hc.GetHttpExpectedStatus(); want != 0 {
			if uint32(resp.StatusCode) != want {
				return fmt.Errorf("GET %s: status %d, want %d", path, resp.StatusCode, want)
			}
			return nil
		}
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("GET %s: status %d", path, resp.StatusCode)
		}
		return nil
	case messages.HealthCheck_KIND_TCP:
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ip, healthPort(hc)))
		if err != nil {
			return err
		}
		return c.Close()
	case messages.HealthCheck_KIND_EXEC:
		code, out, err := rt.Exec(ctx, taskID, hc.GetExecCommand())
		if err != nil {
			return err
		}
		if code != 0 {
			return fmt.Errorf("%s exited with %d: %s", strings.Join(hc.GetExecCommand(), " "), code, strings.TrimSpace(out))
		}
		return nil
	case messages.HealthCheck_KIND_GRPC:
		conn, err := grpc.DialContext(ctx, net.JoinHostPort(ip, healthPort(hc)), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer conn.Close()
		r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: hc.GetGrpcService()})
		if err != nil {
			return err
		}
		if r.Status != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("grpc health: %s", r.Status)
		}
		return nil
	}
	return errors.New("no health check")
}
