package host

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/store"
	"github.com/warrenorch/warren/store/pki"
)

// DefaultJoinPort is where managers answer join requests (HTTPS).
const DefaultJoinPort = 4282

const joinPath = "/v1/join"

// Join endpoint limits. A join is one small request from a node that joins
// once: anything larger, slower or more frequent is not a joining node.
const (
	joinBodyLimit = 64 << 10 // a token and two certificate requests: ~2 KB
	joinBurst     = 10       // requests an address may make at once
	joinEvery     = 6 * time.Second
)

// joinTimeouts bound each phase of a join connection: the TLS handshake
// (the shortest of them), the request headers, the whole request, the
// answer, and a kept-alive connection between requests. A client that
// connects and says nothing, trickles its body or never reads the answer
// is dropped instead of holding a goroutine. A variable so tests can
// shorten it.
var joinTimeouts = struct{ header, read, write, idle time.Duration }{
	header: 5 * time.Second, read: 10 * time.Second, write: 10 * time.Second, idle: 30 * time.Second,
}

// joinServer answers join requests on a manager. It runs before the joiner
// has a certificate, so it is plain server-side TLS; the joiner pins the CA
// by the fingerprint in its token and checks the certificate is a
// manager's, and the token's secret tells the role.
type joinServer struct {
	st    *store.Store
	ca    *pki.CA // this manager's signer
	log   *zap.Logger
	srv   *http.Server
	limit *joinLimiter
}

func (n *Node) serveJoin(ca *pki.CA, id *pki.Identity, log *zap.Logger) error {
	addr := net.JoinHostPort(n.cfg.ListenHost, strconv.Itoa(n.File.JoinPort))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen for joins on %s: %w (pick another port with --join-port)", addr, err)
	}
	js, err := startJoinServer(ln, n.st, ca, id, log)
	if err != nil {
		ln.Close()
		return err
	}
	n.join = js
	return nil
}

// startJoinServer serves joins on ln with the manager's identity id (its
// certificate and chain) until js.srv is closed.
func startJoinServer(ln net.Listener, st *store.Store, ca *pki.CA, id *pki.Identity, log *zap.Logger) (*joinServer, error) {
	// The chain ends with the root: the joiner finds there the CA whose
	// fingerprint its token carries.
	cert, err := tls.X509KeyPair(append(append([]byte{}, id.CertPEM...), ca.PEM...), id.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("join endpoint certificate: %w", err)
	}
	// Failed handshakes from scanners are noise, not errors.
	errLog, err := zap.NewStdLogAt(log.Named("http"), zap.DebugLevel)
	if err != nil {
		return nil, err
	}
	js := &joinServer{st: st, ca: ca, log: log, limit: newJoinLimiter(joinBurst, joinEvery)}
	mux := http.NewServeMux()
	mux.HandleFunc(joinPath, js.handle)
	js.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: joinTimeouts.header,
		ReadTimeout:       joinTimeouts.read,
		WriteTimeout:      joinTimeouts.write,
		IdleTimeout:       joinTimeouts.idle,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          errLog,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}},
	}
	go js.srv.ServeTLS(ln, "", "") //nolint:errcheck // ends with Close
	return js, nil
}

// reply writes r with the HTTP status its error calls for.
func (js *joinServer) reply(w http.ResponseWriter, r *messages.JoinResponse) {
	r.Version = 1
	b, _ := proto.Marshal(r)
	w.Header().Set("Content-Type", "application/x-protobuf")
	if r.Error != nil {
		switch r.Error.Code {
		case messages.ErrorCode_ERROR_CODE_INVALID:
			w.WriteHeader(http.StatusBadRequest)
		case messages.ErrorCode_ERROR_CODE_UNAVAILABLE:
			w.WriteHeader(http.StatusServiceUnavailable)
		case messages.ErrorCode_ERROR_CODE_INTERNAL:
			w.WriteHeader(http.StatusInternalServerError)
		default:
			w.WriteHeader(http.StatusForbidden)
		}
	}
	_, _ = w.Write(b)
}

func (js *joinServer) handle(w http.ResponseWriter, hr *http.Request) {
	fail := func(code messages.ErrorCode, format string, a ...any) {
		js.reply(w, &messages.JoinResponse{Error: &messages.Error{Code: code, Message: fmt.Sprintf(format, a...)}})
	}
	src, _, _ := net.SplitHostPort(hr.RemoteAddr)
	if ok, first := js.limit.allow(src, time.Now()); !ok {
		if first {
			js.log.Warn("join requests refused: too many from one address", zap.String("from", src),
				zap.Int("burst", joinBurst), zap.Duration("one_more_every", joinEvery))
		}
		w.Header().Set("Retry-After", strconv.Itoa(int(joinEvery/time.Second)))
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusTooManyRequests)
		b, _ := proto.Marshal(&messages.JoinResponse{Version: 1, Error: &messages.Error{Code: messages.ErrorCode_ERROR_CODE_UNAVAILABLE,
			Message: fmt.Sprintf("too many join requests from %s: wait a minute and retry", src)}})
		_, _ = w.Write(b)
		return
	}
	if hr.Method != http.MethodPost {
		fail(messages.ErrorCode_ERROR_CODE_INVALID, "bad join request: POST a JoinRequest")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, hr.Body, joinBodyLimit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			js.log.Warn("join request refused: body too large", zap.String("from", src), zap.Int64("limit", tooBig.Limit))
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		}
		fail(messages.ErrorCode_ERROR_CODE_INVALID, "bad join request: %v", err)
		return
	}
	req := &messages.JoinRequest{}
	if err := proto.Unmarshal(body, req); err != nil || req.Version != 1 {
		fail(messages.ErrorCode_ERROR_CODE_INVALID, "unsupported join request (version %d): use a warren binary of the cluster's version", req.GetVersion())
		return
	}
	fp, secret, err := pki.ParseToken(req.Token)
	if err != nil {
		fail(messages.ErrorCode_ERROR_CODE_INVALID, "%v", err)
		return
	}
	if fp != js.ca.Fingerprint() {
		fail(messages.ErrorCode_ERROR_CODE_PERMISSION_DENIED, "the token is for another cluster (CA fingerprint differs): get a token from this cluster with `warren cluster join-token worker`")
		return
	}
	ci := js.st.State.Cluster()
	var role messages.NodeRole
	var roleName string
	var expires int64
	switch {
	case pki.SecretMatches(secret, ci.WorkerToken):
		role, roleName, expires = messages.NodeRole_NODE_ROLE_WORKER, pki.RoleWorker, ci.WorkerTokenExpiresUnixNano
	case pki.SecretMatches(secret, ci.ManagerToken):
		role, roleName, expires = messages.NodeRole_NODE_ROLE_MANAGER, pki.RoleManager, ci.ManagerTokenExpiresUnixNano
	default:
		js.log.Warn("join refused: token secret does not match", zap.String("from", src))
		fail(messages.ErrorCode_ERROR_CODE_PERMISSION_DENIED, "invalid or rotated join token: get a current one with `warren cluster join-token worker|manager` on a manager")
		return
	}
	if expires != 0 && time.Now().UnixNano() >= expires {
		at := time.Unix(0, expires).UTC().Format(time.RFC3339)
		js.log.Warn("join refused: token expired", zap.String("from", src), zap.String("role", roleName), zap.String("expired", at))
		fail(messages.ErrorCode_ERROR_CODE_PERMISSION_DENIED, "the %s join token expired at %s: ask an admin for a new one with `warren cluster join-token %s` on a manager", roleName, at, roleName)
		return
	}
	ip := net.ParseIP(req.Advertise)
	if ip == nil {
		fail(messages.ErrorCode_ERROR_CODE_INVALID, "advertise address %q is not an IP", req.Advertise)
		return
	}
	nodeID := messages.NewID()
	certPEM, signerPEM, err := js.ca.SignNode(nodeID, roleName, []net.IP{ip}, req.CsrPem, req.SignerCsrPem)
	if errors.Is(err, pki.ErrPathExhausted) {
		// The joiner tries the next manager.
		fail(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "%v", err)
		return
	}
	if err != nil {
		fail(messages.ErrorCode_ERROR_CODE_INVALID, "%v", err)
		return
	}
	// Certificates only: the keys were made on the joining node and stay there.
	resp := &messages.JoinResponse{ClusterId: ci.ClusterId, NodeId: nodeID, Role: role, CertPem: certPEM, CaPem: js.ca.PEM, SignerCertPem: signerPEM}
	resp.Managers, resp.JoinAddrs = managerAddrs(js.st.State)
	js.log.Info("node joined", zap.String("node", nodeID), zap.String("role", roleName), zap.String("hostname", req.Hostname), zap.String("addr", req.Advertise))
	js.reply(w, resp)
}

// managerAddrs lists the actor and join addresses of every manager.
func managerAddrs(st *store.State) (actorAddrs, joinAddrs []string) {
	for _, n := range st.Nodes() {
		if n.Spec.GetRole() == messages.NodeRole_NODE_ROLE_MANAGER {
			if a := n.Description.GetAddr(); a != "" {
				actorAddrs = append(actorAddrs, a)
			}
			if a := n.Description.GetJoinAddr(); a != "" {
				joinAddrs = append(joinAddrs, a)
			}
		}
	}
	return actorAddrs, joinAddrs
}

// joined is what a successful join brings back: the manager's answer and
// the keys this node made for it.
type joined struct {
	resp      *messages.JoinResponse
	keyPEM    []byte // the node certificate's key
	signerKey []byte // the intermediate CA's key, used when the role is manager
}

// requestJoin asks the managers at addrs (join endpoints) to admit this
// node. The role is the token's: the node sends a request for its own
// intermediate CA too, which a manager signs only for a manager token.
func requestJoin(ctx context.Context, token string, addrs []string, hostname, advertise string) (*joined, error) {
	fp, _, err := pki.ParseToken(token)
	if err != nil {
		return nil, err
	}
	keyPEM, csrPEM, err := pki.NewCSR(hostname)
	if err != nil {
		return nil, err
	}
	signerKey, signerCSR, err := pki.NewCSR("warren-manager-ca-" + hostname)
	if err != nil {
		return nil, err
	}
	body, _ := proto.Marshal(&messages.JoinRequest{Version: 1, Token: token, CsrPem: csrPEM, SignerCsrPem: signerCSR, Hostname: hostname, Advertise: advertise})
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{
			MinVersion: tls.VersionTLS13,
			// Trust comes from the token: pinned in verifyJoinServer.
			InsecureSkipVerify:    true, //nolint:gosec // pinned below
			VerifyPeerCertificate: verifyJoinServer(fp),
		},
		TLSHandshakeTimeout: 10 * time.Second,
	}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 15 * time.Second}
	var errs []error
	for _, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			a = net.JoinHostPort(a, strconv.Itoa(DefaultJoinPort))
		}
		hreq, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+a+joinPath, bytes.NewReader(body))
		hr, err := cl.Do(hreq)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a, err))
			continue
		}
		b, err := io.ReadAll(io.LimitReader(hr.Body, 1<<20))
		hr.Body.Close()
		resp := &messages.JoinResponse{}
		if err == nil {
			err = proto.Unmarshal(b, resp)
		}
		if err == nil && resp.Error == nil && hr.StatusCode != http.StatusOK {
			err = fmt.Errorf("HTTP %s", hr.Status)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a, err))
			continue
		}
		if resp.Error != nil {
			// Busy or unable to sign for this role: another manager may.
			if resp.Error.Code == messages.ErrorCode_ERROR_CODE_UNAVAILABLE {
				errs = append(errs, fmt.Errorf("%s: %s", a, resp.Error.Message))
				continue
			}
			return nil, fmt.Errorf("join refused by %s: %s", a, resp.Error.Message)
		}
		return &joined{resp: resp, keyPEM: keyPEM, signerKey: signerKey}, nil
	}
	return nil, fmt.Errorf("no manager admitted this node (%v): check the addresses and that the managers run", errors.Join(errs...))
}

// verifyJoinServer checks the join server's chain: it must end in the CA
// whose fingerprint the token carries, and its leaf must be a manager's. A
// worker holds a certificate of the same CA; without the role check it
// could pose as a manager and collect join tokens.
func verifyJoinServer(fingerprint string) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) < 2 {
			return errors.New("the join server presented no CA certificate")
		}
		ca, err := x509.ParseCertificate(raw[len(raw)-1])
		if err != nil {
			return err
		}
		if pki.Fingerprint(ca) != fingerprint {
			return errors.New("the join server's CA does not match the token's fingerprint: wrong cluster, or someone in between")
		}
		var certs []*x509.Certificate
		for _, r := range raw[:len(raw)-1] {
			c, err := x509.ParseCertificate(r)
			if err != nil {
				return err
			}
			certs = append(certs, c)
		}
		leaf, err := pki.VerifyChain(ca, certs, x509.ExtKeyUsageServerAuth)
		if err != nil {
			return fmt.Errorf("the join server's certificate is not from the token's cluster: %w", err)
		}
		p, err := pki.PeerOf(leaf)
		if err != nil {
			return err
		}
		if p.Role != pki.RoleManager {
			return fmt.Errorf("the join server presented a %s certificate (%s), not a manager's: only managers admit nodes; check the address", p.Role, p.Name)
		}
		return nil
	}
}

// joinCluster makes an empty data dir a member of the cluster the token
// names.
func (n *Node) joinCluster(ctx context.Context) (*NodeFile, error) {
	cfg := n.cfg
	adv := cfg.Advertise
	if adv == "" {
		adv = DefaultAdvertise()
	}
	j, err := requestJoin(ctx, cfg.Join.Token, cfg.Join.Addrs, cfg.Hostname, adv)
	if err != nil {
		return nil, err
	}
	resp := j.resp
	fp, _, _ := pki.ParseToken(cfg.Join.Token)
	if root, err := pki.ParseCert(resp.CaPem); err != nil || pki.Fingerprint(root) != fp {
		return nil, errors.New("the manager answered with a CA certificate that is not the token's: wrong cluster, or someone in between")
	}
	cd := certDir(cfg.DataDir)
	if err := os.MkdirAll(cd, 0o700); err != nil {
		return nil, err
	}
	if err := pki.WriteFile(filepath.Join(cd, pki.RootCertFile), resp.CaPem); err != nil {
		return nil, err
	}
	if err := (&pki.Identity{CertPEM: resp.CertPem, KeyPEM: j.keyPEM}).SaveNew(cd, "node"); err != nil {
		return nil, err
	}
	role := pki.RoleWorker
	if resp.Role == messages.NodeRole_NODE_ROLE_MANAGER {
		role = pki.RoleManager
		s, err := pki.SignerFromPEM(resp.CaPem, resp.SignerCertPem, j.signerKey)
		if err != nil {
			return nil, fmt.Errorf("the manager's answer holds no usable signing CA for this manager: %w", err)
		}
		if err := s.SaveSigner(cd); err != nil {
			return nil, err
		}
	}
	nf := &NodeFile{Format: 1, ClusterID: resp.ClusterId, NodeID: resp.NodeId, Role: role, Advertise: adv,
		Port: cfg.Port, RaftPort: cfg.RaftPort, JoinPort: cfg.JoinPort, Hostname: cfg.Hostname, Created: time.Now().UTC(),
		Managers: resp.Managers, JoinAddrs: append(resp.JoinAddrs, cfg.Join.Addrs...)}
	if err := writeNodeFile(cfg.DataDir, nf); err != nil {
		return nil, err
	}
	return nf, nil
}
