// Package loadgen is the e2e benchmarks' traffic tool. The test app runs it
// inside containers and the tests run it on hosts, so both sides of a
// comparison (through the mesh or not, through a VIP or not) run the same
// code.
package loadgen

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"time"
)

// Result is what one run measured.
type Result struct {
	Requests int     `json:"requests"`
	Failed   int     `json:"failed"`
	Bytes    int64   `json:"bytes"`
	Seconds  float64 `json:"seconds"`
}

// RPS is successful requests per second.
func (r Result) RPS() float64 { return float64(r.Requests) / r.Seconds }

// Mbps is megabits per second delivered.
func (r Result) Mbps() float64 { return float64(r.Bytes) * 8 / 1e6 / r.Seconds }

// Requests runs conc workers that GET url for d, each request on a new
// connection (so address translation is paid per request, its worst case).
// The client closes each connection itself with a reset (SO_LINGER 0):
// nobody keeps it in TIME_WAIT. Otherwise a thousand connections a second
// to one address exhaust the client's ports for that address within a
// minute, or collide with the server's TIME_WAIT (a one-second stall that
// only the path without NAT suffers, NAT remapping a clashing port), and
// the run measures that instead of the path.
func Requests(url string, d time.Duration, conc int) Result {
	var mu sync.Mutex
	var res Result
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for i := 0; i < conc; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := &net.Dialer{Timeout: 5 * time.Second}
			tr := &http.Transport{MaxIdleConnsPerHost: 1, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := d.DialContext(ctx, network, addr)
				if tc, ok := c.(*net.TCPConn); ok {
					_ = tc.SetLinger(0)
				}
				return c, err
			}}
			c := &http.Client{Timeout: 5 * time.Second, Transport: tr}
			ok, failed := 0, 0
			for time.Now().Before(end) {
				resp, err := c.Get(url)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = errors.New(resp.Status)
					}
				}
				tr.CloseIdleConnections() // the client closes first
				if err != nil {
					failed++
					continue
				}
				ok++
			}
			mu.Lock()
			res.Requests += ok
			res.Failed += failed
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	return res
}

// Sink accepts connections on l until it is closed, reads each to its end
// and answers the byte count (8 bytes, big endian).
func Sink(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			n, _ := io.Copy(io.Discard, c)
			var b [8]byte
			binary.BigEndian.PutUint64(b[:], uint64(n))
			_, _ = c.Write(b[:])
		}()
	}
}

// Blast streams zeros to a Sink at addr over one TCP connection for d and
// returns what the sink says it received.
func Blast(addr string, d time.Duration) (Result, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return Result{}, err
	}
	defer c.Close()
	buf := make([]byte, 128<<10)
	start := time.Now()
	end := start.Add(d)
	for time.Now().Before(end) {
		if _, err := c.Write(buf); err != nil {
			return Result{}, fmt.Errorf("blast %s: %w", addr, err)
		}
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return Result{}, err
	}
	var b [8]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return Result{}, fmt.Errorf("blast %s: read the sink's count: %w", addr, err)
	}
	return Result{Bytes: int64(binary.BigEndian.Uint64(b[:])), Seconds: time.Since(start).Seconds(), Requests: 1}, nil
}

// Idle is the result of HoldIdle.
type Idle struct {
	First, Second string // local address of the connection each request used
	Reused        bool   // the second request went over the first's connection
	Idle          float64
}

// HoldIdle GETs url, leaves the keep-alive connection idle for d, then GETs
// again and reports whether the same connection carried both: a stateful
// hop on the way (NAT, a tunnel) that forgot the idle flow breaks it.
func HoldIdle(url string, d time.Duration) (Idle, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: 1, IdleConnTimeout: 0}
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var res Idle
	get := func(local *string, reused *bool) error {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(i httptrace.GotConnInfo) {
				*local = i.Conn.LocalAddr().String()
				if reused != nil {
					*reused = i.Reused
				}
			},
		}))
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	if err := get(&res.First, nil); err != nil {
		return res, fmt.Errorf("first request: %w", err)
	}
	start := time.Now()
	time.Sleep(d)
	res.Idle = time.Since(start).Seconds()
	if err := get(&res.Second, &res.Reused); err != nil {
		return res, fmt.Errorf("request after %s idle: %w", d, err)
	}
	return res, nil
}
