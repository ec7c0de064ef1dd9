// Package client is Warren's public Go client: it connects a program to a
// cluster over one outbound connection to one manager's remoting port (the
// manager's gateway, mutual TLS with the admin certificate; nothing dials
// the client back, so it works behind NAT, through `ssh -L` and from a
// container) and offers typed calls for the API and the event stream. The
// CLI is built on it; so can any Go program (see examples/).
package client

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/warrenorch/warren/actors/remoting"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store/pki"
)

// Options says where the cluster and the credentials are.
type Options struct {
	ConfigDir string   // default $WARREN_CONFIG_DIR or $HOME/.warren
	Managers  []string // override the managers from the config (host:port)
	Timeout   time.Duration
	// Log receives each step of connecting and every request with its
	// duration, and protoactor's own log at debug level (the CLI's
	// --debug); nil logs nothing.
	Log *zap.Logger
}

// Client is a connection to a cluster.
type Client struct {
	// System runs the client's local actors (an events watcher); it has
	// no remote endpoint: the gateway carries everything.
	System   *actor.ActorSystem
	managers []string
	timeout  time.Duration
	tls      *tls.Config
	log      *zap.Logger

	mu  sync.Mutex // guards cur and gw, which a failover replaces
	cur int
	gw  *gatewayConn // to managers[cur]
}

// Error is an error the cluster returned.
type Error struct {
	Code    messages.ErrorCode
	Message string
}

func (e *Error) Error() string { return e.Message }

// DefaultConfigDir is $WARREN_CONFIG_DIR, else $HOME/.warren.
func DefaultConfigDir() string {
	if d := os.Getenv("WARREN_CONFIG_DIR"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".warren")
}

// Dial loads the credentials and connects to a manager.
func Dial(opts Options) (*Client, error) {
	if opts.ConfigDir == "" {
		opts.ConfigDir = DefaultConfigDir()
	}
	if opts.Timeout == 0 {
		opts.Timeout = 30 * time.Second // above the api's write and image-check bounds
	}
	cfg, err := LoadConfig(opts.ConfigDir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no cluster configured in %s: run `warren cluster init` on this machine, or copy the config dir from a manager (or set WARREN_CONFIG_DIR)", opts.ConfigDir)
		}
		return nil, err
	}
	entry := cfg.Clusters[cfg.Current]
	if entry == nil {
		return nil, fmt.Errorf("%s names no current cluster: run `warren cluster init` again", filepath.Join(opts.ConfigDir, ConfigFile))
	}
	managers := entry.Managers
	if len(opts.Managers) > 0 {
		managers = opts.Managers
	}
	if len(managers) == 0 {
		return nil, fmt.Errorf("no manager address known: pass --manager HOST:PORT")
	}
	caPEM, err := os.ReadFile(filepath.Join(entry.Dir, "ca.pem"))
	if err != nil {
		return nil, fmt.Errorf("read cluster CA: %w (re-run `warren cluster init` on the manager to rewrite the credentials)", err)
	}
	id, err := pki.LoadIdentity(entry.Dir, "admin")
	if err != nil {
		return nil, fmt.Errorf("admin credentials: %w", err)
	}
	tlsCfg, err := pki.TLSConfig(caPEM, id)
	if err != nil {
		return nil, err
	}
	return dialTLS(managers, tlsCfg, opts.Timeout, opts.Log)
}

// DialTLS connects with explicit credentials. It picks the first manager,
// in the given order, that completes the cluster's TLS handshake (see
// pickManager) and opens the gateway stream to it.
func DialTLS(managers []string, tlsCfg *tls.Config, timeout time.Duration) (*Client, error) {
	return dialTLS(managers, tlsCfg, timeout, nil)
}

func dialTLS(managers []string, tlsCfg *tls.Config, timeout time.Duration, log *zap.Logger) (*Client, error) {
	if log == nil {
		log = zap.NewNop()
	}
	c := &Client{managers: managers, timeout: timeout, log: log, tls: tlsCfg}
	p, err := pickManager(managers, -1, tlsCfg, log)
	if err != nil {
		return nil, fmt.Errorf("cannot reach any manager (%v): is warren running there? start it with `warren cluster init`, or pass a live one with --manager HOST:PORT", err)
	}
	c.System = actor.NewActorSystem(actor.WithLoggerFactory(loggerFactory(log)))
	if err := c.connect(p.index); err != nil {
		return nil, fmt.Errorf("%w: is warren running there? pass a live manager with --manager HOST:PORT", err)
	}
	return c, nil
}

// connect opens the gateway stream to managers[i] and makes it the one in
// use, closing the previous one.
func (c *Client) connect(i int) error {
	t0 := time.Now()
	gw, err := openGateway(c.managers[i], c.tls, probeTimeout+c.timeout/4, c.System, c.log)
	if err != nil {
		return err
	}
	c.log.Debug("gateway stream opened", zap.String("manager", c.managers[i]), zap.Duration("took", time.Since(t0)))
	c.mu.Lock()
	old := c.gw
	c.cur, c.gw = i, gw
	c.mu.Unlock()
	if old != nil {
		old.close()
	}
	return nil
}

// conn is the gateway stream in use and its manager's index.
func (c *Client) conn() (*gatewayConn, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gw, c.cur
}

// Close ends the client's connection; the manager drops its subscriptions.
func (c *Client) Close() {
	if gw, _ := c.conn(); gw != nil {
		gw.close()
	}
}

// Manager is the address of the manager in use.
func (c *Client) Manager() string {
	_, i := c.conn()
	return c.managers[i]
}

// Request sends msg to the api actor of the manager in use and waits.
func (c *Client) Request(msg any) (any, error) {
	return c.RequestTimeout(msg, c.timeout)
}

// RequestTimeout is Request with its own timeout, for calls that take long
// by nature (pulling and distributing images).
func (c *Client) RequestTimeout(msg any, timeout time.Duration) (any, error) {
	t0 := time.Now()
	defer func() {
		c.log.Debug("request", zap.String("type", fmt.Sprintf("%T", msg)), zap.String("manager", c.Manager()), zap.Duration("took", time.Since(t0)))
	}()
	gw, cur := c.conn()
	res, err := gw.request(remoting.ActorAPI, msg, timeout)
	// A dead letter was never delivered (no api there: a node that is no
	// longer a manager), nor was a request whose stream was gone before it
	// was written (the manager went down after it was picked), so another
	// manager cannot apply anything twice. A request written to a stream
	// that broke before the answer may have been applied: it is not sent
	// again. The next manager is picked by probing, as at Dial: a dead one
	// costs a probe, not a connect timeout.
	for tries := 1; (errors.Is(err, actor.ErrDeadLetter) || errors.Is(err, errNotSent)) && tries < len(c.managers); tries++ {
		c.log.Debug("request not delivered; trying another manager", zap.String("manager", c.managers[cur]), zap.Error(err))
		p, perr := pickManager(c.managers, cur, c.tls, c.log)
		if perr != nil {
			c.log.Debug("no other manager answers", zap.Error(perr))
			break
		}
		if err = c.connect(p.index); err != nil {
			err = fmt.Errorf("%w: %v", errNotSent, err)
			cur = p.index
			continue
		}
		gw, cur = c.conn()
		res, err = gw.request(remoting.ActorAPI, msg, timeout)
	}
	if err != nil {
		if errors.Is(err, actor.ErrTimeout) {
			return nil, fmt.Errorf("manager %s did not answer within %s: check `warren cluster info` and the manager's log", c.Manager(), timeout)
		}
		return nil, fmt.Errorf("request to %s: %w", c.Manager(), err)
	}
	if e := replyError(res); e != nil {
		return res, e
	}
	return res, nil
}

type errorer interface{ GetError() *messages.Error }

func replyError(res any) error {
	if r, ok := res.(errorer); ok {
		if e := r.GetError(); e != nil && e.Code != messages.ErrorCode_ERROR_CODE_NONE {
			return &Error{Code: e.Code, Message: e.Message}
		}
	}
	return nil
}

func typed[T any](res any, err error) (T, error) {
	var zero T
	if err != nil {
		return zero, err
	}
	v, ok := res.(T)
	if !ok {
		return zero, fmt.Errorf("unexpected reply %T", res)
	}
	return v, nil
}

// ClusterInfo describes the cluster.
func (c *Client) ClusterInfo() (*messages.ClusterInfoReply, error) {
	return typed[*messages.ClusterInfoReply](c.Request(&messages.ClusterInfoRequest{}))
}

// CreateService creates a service.
func (c *Client) CreateService(spec *messages.ServiceSpec) (*messages.Service, error) {
	r, err := typed[*messages.ServiceReply](c.RequestTimeout(&messages.CreateServiceRequest{Spec: spec}, max(c.timeout, 90*time.Second)))
	return r.GetService(), err
}

// UpdateService replaces a service's spec with spec, if the service is
// still at expectedVersion (its meta.version when it was read; a CONFLICT
// error means it changed since: read it again). A change of the task
// template starts a deployment (see Service.deployment); a replicas-only
// change scales. The reply is the service as committed. The timeout is
// the longer of the client's and 90 s, as for CreateService: the leader
// checks (and may pull) a new image before it commits.
func (c *Client) UpdateService(name string, spec *messages.ServiceSpec, expectedVersion uint64) (*messages.Service, error) {
	r, err := typed[*messages.ServiceReply](c.RequestTimeout(&messages.UpdateServiceRequest{Name: name, Spec: spec, ExpectedVersion: expectedVersion}, max(c.timeout, 90*time.Second)))
	return r.GetService(), err
}

// PromoteService moves a deployment forward: a canary's share of requests
// to weight percent (1-100), or with full all the way (a canary rolls the
// stable replicas to the new spec; a manual blue/green switches traffic).
func (c *Client) PromoteService(name string, weight uint32, full bool) (*messages.Service, error) {
	r, err := typed[*messages.ServiceReply](c.Request(&messages.PromoteServiceRequest{Name: name, Weight: weight, Full: full}))
	return r.GetService(), err
}

// RollbackService returns a service to its previous spec, whatever step
// its deployment is at.
func (c *Client) RollbackService(name string) (*messages.Service, error) {
	r, err := typed[*messages.ServiceReply](c.Request(&messages.RollbackServiceRequest{Name: name}))
	return r.GetService(), err
}

// PauseService holds a service's deployment where it is.
func (c *Client) PauseService(name string) (*messages.Service, error) {
	r, err := typed[*messages.ServiceReply](c.Request(&messages.PauseServiceRequest{Name: name}))
	return r.GetService(), err
}

// ResumeService continues a paused deployment from where it was held.
func (c *Client) ResumeService(name string) (*messages.Service, error) {
	r, err := typed[*messages.ServiceReply](c.Request(&messages.ResumeServiceRequest{Name: name}))
	return r.GetService(), err
}

// ScaleService sets a replicated service's replica count.
func (c *Client) ScaleService(name string, replicas uint64) (*messages.Service, error) {
	r, err := typed[*messages.ServiceReply](c.Request(&messages.ScaleServiceRequest{Name: name, Replicas: replicas}))
	return r.GetService(), err
}

// DeleteService deletes a service; its tasks stop and are cleaned up.
func (c *Client) DeleteService(name string) error {
	_, err := c.Request(&messages.DeleteServiceRequest{Name: name})
	return err
}

// InspectService returns a service by name or id.
func (c *Client) InspectService(name string) (*messages.Service, error) {
	r, err := typed[*messages.ServiceReply](c.Request(&messages.InspectServiceRequest{Name: name}))
	return r.GetService(), err
}

// ListServices lists services with running/desired counts.
func (c *Client) ListServices() ([]*messages.ServiceSummary, error) {
	r, err := typed[*messages.ListServicesReply](c.Request(&messages.ListServicesRequest{}))
	return r.GetServices(), err
}

// ListTasks lists tasks, filtered by service and node (names or ids).
func (c *Client) ListTasks(service, node string, all bool) ([]*messages.Task, error) {
	r, err := typed[*messages.ListTasksReply](c.Request(&messages.ListTasksRequest{Service: service, Node: node, All: all}))
	return r.GetTasks(), err
}

// ListNodes lists nodes.
func (c *Client) ListNodes() ([]*messages.Node, error) {
	r, err := typed[*messages.ListNodesReply](c.Request(&messages.ListNodesRequest{}))
	return r.GetNodes(), err
}

// InspectNode returns a node by id, id prefix or hostname.
func (c *Client) InspectNode(ref string) (*messages.NodeReply, error) {
	return typed[*messages.NodeReply](c.Request(&messages.InspectNodeRequest{Node: ref}))
}

// ListImages lists the images on the manager's node.
func (c *Client) ListImages() ([]string, error) {
	r, err := typed[*messages.ListImagesReply](c.Request(&messages.ListImagesRequest{}))
	return r.GetImages(), err
}

// ImportImage uploads an OCI layout or docker-save tarball in chunks and
// returns the image names imported.
func (c *Client) ImportImage(r io.Reader) ([]string, error) {
	const chunk = 1 << 20
	id := messages.NewID()
	buf := make([]byte, chunk)
	for seq := uint64(0); ; seq++ {
		n, err := io.ReadFull(r, buf)
		last := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
		if err != nil && !last {
			return nil, fmt.Errorf("read image: %w", err)
		}
		timeout := c.timeout
		if last { // imported here, then sent to every node
			timeout = 10 * time.Minute
		}
		res, rerr := typed[*messages.ImportImageReply](c.RequestTimeout(&messages.ImportImageChunk{UploadId: id, Seq: seq, Data: append([]byte(nil), buf[:n]...), Last: last}, timeout))
		if rerr != nil {
			return nil, rerr
		}
		if last {
			return res.Images, nil
		}
	}
}

// PullImage pulls an image from a registry onto the manager's node.
func (c *Client) PullImage(ref string, plainHTTP bool) (string, error) {
	r, err := typed[*messages.PullImageReply](c.RequestTimeout(&messages.PullImageRequest{Ref: ref, PlainHttp: plainHTTP}, 2*time.Minute))
	return r.GetImage(), err
}

// JoinToken returns the join token for a role, rotating it first if asked.
func (c *Client) JoinToken(req *messages.JoinTokenRequest) (*messages.JoinTokenReply, error) {
	return typed[*messages.JoinTokenReply](c.Request(req))
}

// UpdateNode changes a node's availability and labels.
func (c *Client) UpdateNode(req *messages.UpdateNodeRequest) (*messages.Node, error) {
	r, err := typed[*messages.NodeReply](c.Request(req))
	return r.GetNode(), err
}

// RemoveNode forgets a node that left.
func (c *Client) RemoveNode(node string, force bool) error {
	_, err := c.Request(&messages.RemoveNodeRequest{Node: node, Force: force})
	return err
}

// PromoteNode makes a worker a manager.
func (c *Client) PromoteNode(node string) error {
	_, err := c.Request(&messages.PromoteNodeRequest{Node: node})
	return err
}

// DemoteNode makes a manager a worker.
func (c *Client) DemoteNode(node string) error {
	_, err := c.Request(&messages.DemoteNodeRequest{Node: node})
	return err
}

// RememberManagers adds the cluster's current managers to the CLI config in
// configDir, so the next command fails over to them when this one is gone.
func (c *Client) RememberManagers(configDir string) error {
	r, err := c.ClusterInfo()
	if err != nil {
		return err
	}
	return AddManagers(configDir, r.Cluster.GetClusterId(), r.ManagerAddrs)
}

// DebugCrash makes a named actor panic (nodes started with --enable-debug).
func (c *Client) DebugCrash(actorName string) error {
	_, err := c.Request(&messages.DebugCrash{Actor: actorName})
	return err
}

// WaitService waits until the service has converged (see
// messages.WaitServiceRequest) or timeout passes; the error then says how
// far it got and why.
func (c *Client) WaitService(name string, timeout time.Duration) (*messages.WaitServiceReply, error) {
	return typed[*messages.WaitServiceReply](c.RequestTimeout(&messages.WaitServiceRequest{Name: name, TimeoutMs: uint64(timeout.Milliseconds())}, timeout+10*time.Second))
}
