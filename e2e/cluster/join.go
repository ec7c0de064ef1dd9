package cluster

import (
	"context"
	"net"
	"net/http"
	"time"
)

// JoinArgs is a joining node's command line, the same on every start.
func (host *Host) JoinArgs(token string, managers ...string) []string {
	args := []string{host.h.Bin, "--config-dir", host.ConfigDir, "cluster", "join", "--token", token,
		"--data-dir", host.DataDir, "--advertise", host.IP, "--hostname", host.Name,
		"--metrics-addr", "", "--enable-debug", "--log-level", "debug"}
	return append(args, managers...)
}

// SetJoin makes the host's command line `warren cluster join` with token
// and the managers' join addresses, for this start and every restart.
func (host *Host) SetJoin(token string, managers ...string) {
	host.joinArgs = host.JoinArgs(token, managers...)
}

// JoinAddr is the host's join endpoint (when it is a manager).
func (host *Host) JoinAddr() string { return host.IP + ":4282" }

// HTTPPost posts an empty body to url from inside the host's network
// namespace (the test app's switches: /healthz/fail, /exit).
func (host *Host) HTTPPost(url string, timeout time.Duration) error {
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := host.InNetNS(func() error {
			var err error
			c, err = (&net.Dialer{Timeout: timeout}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}
	resp, err := (&http.Client{Transport: tr, Timeout: timeout}).Post(url, "text/plain", nil)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}
