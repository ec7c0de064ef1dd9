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

// joinServer answers join requests on a manager. It runs before the joiner
// has a certificate, so it is plain server-side TLS; the joiner pins the CA
// by the fingerprint in its token, and the token's secret tells the role.
type joinServer struct {
	st  *store.Store
	ca  *pki.CA
	log *zap.Logger
	srv *http.Server
}

func (n *Node) serveJoin(ca *pki.CA, id *pki.Identity, log *zap.Logger) error {
	cert, err := tls.X509KeyPair(append(append([]byte{}, id.CertPEM...), ca.PEM...), id.KeyPEM)
	if err != nil {
		return err
	}
	addr := net.JoinHostPort(n.cfg.ListenHost, strconv.Itoa(n.File.JoinPort))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen for joins on %s: %w (pick another port with --join-port)", addr, err)
	}
	js := &joinServer{st: n.st, ca: ca, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc(joinPath, js.handle)
	js.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second,
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}}
	n.join = js
	go js.srv.ServeTLS(ln, "", "")
	return nil
}

func (js *joinServer) reply(w http.ResponseWriter, r *messages.JoinResponse) {
	r.Version = 1
	b, _ := proto.Marshal(r)
	w.Header().Set("Content-Type", "application/x-protobuf")
	if r.Error != nil {
		w.WriteHeader(http.StatusForbidden)
	}
	_, _ = w.Write(b)
}

func (js *joinServer) handle(w http.ResponseWriter, hr *http.Request) {
	fail := func(code messages.ErrorCode, format string, a ...any) {
		js.reply(w, &messages.JoinResponse{Error: &messages.Error{Code: code, Message: fmt.Sprintf(format, a...)}})
	}
	body, err := io.ReadAll(io.LimitReader(hr.Body, 64<<10))
	if err != nil || hr.Method != http.MethodPost {
		fail(messages.ErrorCode_ERROR_CODE_INVALID, "bad join request")
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
	switch {
	case pki.SecretMatches(secret, ci.WorkerToken):
		role, roleName = messages.NodeRole_NODE_ROLE_WORKER, pki.RoleWorker
	case pki.SecretMatches(secret, ci.ManagerToken):
		role, roleName = messages.NodeRole_NODE_ROLE_MANAGER, pki.RoleManager
	default:
		js.log.Warn("join refused: token secret does not match", zap.String("from", hr.RemoteAddr))
		fail(messages.ErrorCode_ERROR_CODE_PERMISSION_DENIED, "invalid or rotated join token: get a current one with `warren cluster join-token worker|manager` on a manager")
		return
	}
	ip := net.ParseIP(req.Advertise)
	if ip == nil {
		fail(messages.ErrorCode_ERROR_CODE_INVALID, "advertise address %q is not an IP", req.Advertise)
		return
	}
	nodeID := messages.NewID()
	certPEM, err := js.ca.SignCSR(req.CsrPem, nodeID, roleName, []net.IP{ip}, 5*365*24*time.Hour)
	if err != nil {
		fail(messages.ErrorCode_ERROR_CODE_INVALID, "%v", err)
		return
	}
	resp := &messages.JoinResponse{ClusterId: ci.ClusterId, NodeId: nodeID, Role: role, CertPem: certPEM, CaPem: js.ca.PEM}
	if role == messages.NodeRole_NODE_ROLE_MANAGER {
		if resp.CaKeyPem, err = js.ca.KeyPEM(); err != nil {
			fail(messages.ErrorCode_ERROR_CODE_INTERNAL, "%v", err)
			return
		}
	}
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

// requestJoin asks the managers at addrs (join endpoints) to admit this node.
func requestJoin(ctx context.Context, token string, addrs []string, hostname, advertise string) (*messages.JoinResponse, []byte, error) {
	fp, _, err := pki.ParseToken(token)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, csrPEM, err := pki.NewCSR(hostname)
	if err != nil {
		return nil, nil, err
	}
	body, _ := proto.Marshal(&messages.JoinRequest{Version: 1, Token: token, CsrPem: csrPEM, Hostname: hostname, Advertise: advertise})
	tr := &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Trust comes from the token: the manager must present a chain
		// whose CA has the fingerprint the token carries.
		InsecureSkipVerify: true, //nolint:gosec // pinned below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) < 2 {
				return errors.New("manager presented no CA certificate")
			}
			ca, err := x509.ParseCertificate(raw[len(raw)-1])
			if err != nil {
				return err
			}
			if pki.Fingerprint(ca) != fp {
				return errors.New("the manager's CA does not match the token's fingerprint: wrong cluster, or someone in between")
			}
			leaf, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			pool := x509.NewCertPool()
			pool.AddCert(ca)
			_, err = leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			return err
		},
	}}
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
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a, err))
			continue
		}
		if resp.Error != nil {
			return nil, nil, fmt.Errorf("join refused by %s: %s", a, resp.Error.Message)
		}
		return resp, keyPEM, nil
	}
	return nil, nil, fmt.Errorf("no manager answered the join request (%v): check the address and that the manager runs", errors.Join(errs...))
}

// joinCluster makes an empty data dir a member of the cluster the token
// names.
func (n *Node) joinCluster(ctx context.Context) (*NodeFile, error) {
	cfg := n.cfg
	adv := cfg.Advertise
	if adv == "" {
		adv = DefaultAdvertise()
	}
	resp, keyPEM, err := requestJoin(ctx, cfg.Join.Token, cfg.Join.Addrs, cfg.Hostname, adv)
	if err != nil {
		return nil, err
	}
	cd := certDir(cfg.DataDir)
	if err := os.MkdirAll(cd, 0o700); err != nil {
		return nil, err
	}
	if err := pki.WriteFile(cd+"/ca.pem", resp.CaPem); err != nil {
		return nil, err
	}
	if len(resp.CaKeyPem) > 0 {
		if err := pki.WriteFile(cd+"/ca-key.pem", resp.CaKeyPem); err != nil {
			return nil, err
		}
	}
	if err := (&pki.Identity{CertPEM: resp.CertPem, KeyPEM: keyPEM}).Save(cd, "node"); err != nil {
		return nil, err
	}
	role := pki.RoleWorker
	if resp.Role == messages.NodeRole_NODE_ROLE_MANAGER {
		role = pki.RoleManager
	}
	nf := &NodeFile{Format: 1, ClusterID: resp.ClusterId, NodeID: resp.NodeId, Role: role, Advertise: adv,
		Port: cfg.Port, RaftPort: cfg.RaftPort, JoinPort: cfg.JoinPort, Hostname: cfg.Hostname, Created: time.Now().UTC(),
		Managers: resp.Managers, JoinAddrs: append(resp.JoinAddrs, cfg.Join.Addrs...)}
	if err := writeNodeFile(cfg.DataDir, nf); err != nil {
		return nil, err
	}
	return nf, nil
}
