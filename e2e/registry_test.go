package e2e

import (
	"archive/tar"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/warrenorch/warren/e2e/cluster"
)

// TestPullFromLocalRegistry pushes the demo image to a plain-HTTP registry
// on the hosts' switch and has a node pull it, then run it.
func TestPullFromLocalRegistry(t *testing.T) {
	h := cluster.New(t, cluster.Options{Hosts: 1, Bin: warrenBin})
	n := h.Hosts[0]
	ln, err := net.Listen("tcp", net.JoinHostPort(h.Gateway(), "0"))
	must(t, err)
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0))), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	ref := ln.Addr().String() + "/team/demo:v2"
	pushOCITar(t, demoV1, ref, filepath.Join(h.Dir, "layout"))

	must(t, n.StartAndWait(90*time.Second))
	// Without --plain-http the registry's missing TLS is an error that says so.
	if _, stderr, err := n.CLI("image", "pull", ref); err == nil {
		t.Fatal("pull over TLS from a plain-HTTP registry succeeded")
	} else if !strings.Contains(stderr, "pull") {
		t.Fatalf("unclear error: %s", stderr)
	}
	out := cli(t, n, "image", "pull", "--plain-http", ref)
	if !strings.Contains(out, ref) {
		t.Fatalf("pull printed %q", out)
	}
	cli(t, n, "service", "create", "pulled", "--image", ref, "--replicas", "2")
	for _, tk := range waitRunning(t, n, "pulled", 2) {
		body, err := n.HTTPGet("http://"+tk.Status.Ip+"/", 5*time.Second)
		must(t, err)
		if !strings.Contains(body, "task="+tk.Id) {
			t.Fatalf("pulled image answered %q", body)
		}
	}
}

// pushOCITar unpacks an OCI layout tarball and pushes its image to ref.
func pushOCITar(t *testing.T, tarball, ref, dir string) {
	t.Helper()
	f, err := os.Open(tarball)
	must(t, err)
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		must(t, err)
		p := filepath.Join(dir, filepath.Clean("/"+hdr.Name))
		if hdr.Typeflag == tar.TypeDir {
			must(t, os.MkdirAll(p, 0o755))
			continue
		}
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		out, err := os.Create(p)
		must(t, err)
		_, err = io.Copy(out, tr)
		out.Close()
		must(t, err)
	}
	idx, err := layout.ImageIndexFromPath(dir)
	must(t, err)
	im, err := idx.IndexManifest()
	must(t, err)
	img, err := idx.Image(im.Manifests[0].Digest)
	must(t, err)
	r, err := name.ParseReference(ref, name.Insecure)
	must(t, err)
	must(t, remote.Write(r, img))
}
