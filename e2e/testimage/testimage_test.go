package testimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestFullName(t *testing.T) {
	tests := []struct{ name, tag, want string }{
		{"demo", "v1", "docker.io/library/demo:v1"},
		{"acme/demo", "v2", "docker.io/acme/demo:v2"},
		{"localhost:5000/demo", "v1", "localhost:5000/demo:v1"},
		{"localhost/demo", "v1", "localhost/demo:v1"},
		{"ghcr.io/acme/demo", "latest", "ghcr.io/acme/demo:latest"},
	}
	for _, tt := range tests {
		if got := FullName(tt.name, tt.tag); got != tt.want {
			t.Errorf("FullName(%q, %q) = %q, want %q", tt.name, tt.tag, got, tt.want)
		}
	}
}

// readTar returns the regular files of a tarball by name, and the headers.
func readTar(t *testing.T, r io.Reader) (map[string][]byte, map[string]*tar.Header) {
	t.Helper()
	files := map[string][]byte{}
	hdrs := map[string]*tar.Header{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files, hdrs
		}
		if err != nil {
			t.Fatalf("read tar: %v", err)
		}
		hdrs[h.Name] = h
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatalf("read %s: %v", h.Name, err)
			}
			files[h.Name] = b
		}
	}
}

// blobFor checks that desc's blob is in the layout and matches its digest and
// size, and returns it.
func blobFor(t *testing.T, files map[string][]byte, desc ocispec.Descriptor) []byte {
	t.Helper()
	b, ok := files["blobs/sha256/"+desc.Digest.Encoded()]
	if !ok {
		t.Fatalf("blob %s (%s) missing from layout", desc.Digest, desc.MediaType)
	}
	if got := sha256Digest(b); got != desc.Digest {
		t.Fatalf("blob %s has digest %s", desc.Digest, got)
	}
	if int64(len(b)) != desc.Size {
		t.Fatalf("blob %s is %d bytes, descriptor says %d", desc.Digest, len(b), desc.Size)
	}
	return b
}

func TestBuildLayout(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles the test app; skipped with -short")
	}
	ctx := context.Background()
	dir := t.TempDir()
	out := filepath.Join(dir, "demo.tar")
	if err := Build(ctx, out, "demo", "v7", "v7"); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files, _ := readTar(t, f)

	var layout ocispec.ImageLayout
	if err := json.Unmarshal(files[ocispec.ImageLayoutFile], &layout); err != nil || layout.Version != ocispec.ImageLayoutVersion {
		t.Fatalf("oci-layout = %q (%v), want version %s", files[ocispec.ImageLayoutFile], err, ocispec.ImageLayoutVersion)
	}
	var index ocispec.Index
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatalf("index.json: %v", err)
	}
	if len(index.Manifests) != 1 {
		t.Fatalf("index has %d manifests, want 1", len(index.Manifests))
	}
	mdesc := index.Manifests[0]
	if got := mdesc.Annotations[AnnotationImageName]; got != "docker.io/library/demo:v7" {
		t.Errorf("image name annotation = %q", got)
	}
	if got := mdesc.Annotations[ocispec.AnnotationRefName]; got != "v7" {
		t.Errorf("ref name annotation = %q", got)
	}
	if mdesc.MediaType != ocispec.MediaTypeImageManifest {
		t.Errorf("manifest media type = %q", mdesc.MediaType)
	}

	var manifest ocispec.Manifest
	if err := json.Unmarshal(blobFor(t, files, mdesc), &manifest); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	var config ocispec.Image
	if err := json.Unmarshal(blobFor(t, files, manifest.Config), &config); err != nil {
		t.Fatalf("config: %v", err)
	}
	if config.Architecture != runtime.GOARCH || config.OS != "linux" {
		t.Errorf("platform = %s/%s", config.OS, config.Architecture)
	}
	if !slices.Equal(config.Config.Entrypoint, []string{"/app"}) {
		t.Errorf("entrypoint = %q", config.Config.Entrypoint)
	}
	if !slices.Contains(config.Config.Env, "VERSION=v7") {
		t.Errorf("env = %q, want VERSION=v7", config.Config.Env)
	}
	if _, ok := config.Config.ExposedPorts["80/tcp"]; !ok {
		t.Errorf("exposed ports = %v, want 80/tcp", config.Config.ExposedPorts)
	}
	if len(manifest.Layers) != 1 || len(config.RootFS.DiffIDs) != 1 {
		t.Fatalf("%d layers, %d diff IDs; want 1 each", len(manifest.Layers), len(config.RootFS.DiffIDs))
	}
	zr, err := gzip.NewReader(bytes.NewReader(blobFor(t, files, manifest.Layers[0])))
	if err != nil {
		t.Fatalf("layer is not gzip: %v", err)
	}
	layer, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if got := sha256Digest(layer); got != config.RootFS.DiffIDs[0] {
		t.Errorf("layer diff ID %s, config says %s", got, config.RootFS.DiffIDs[0])
	}

	lfiles, lhdrs := readTar(t, bytes.NewReader(layer))
	for _, want := range []struct {
		name string
		mode int64
		typ  byte
	}{
		{"app", 0o755, tar.TypeReg},
		{"etc/passwd", 0o644, tar.TypeReg},
		{"etc/group", 0o644, tar.TypeReg},
		{"tmp/", 0o1777, tar.TypeDir},
	} {
		h, ok := lhdrs[want.name]
		if !ok {
			t.Errorf("layer lacks %s", want.name)
			continue
		}
		if h.Mode != want.mode || h.Typeflag != want.typ {
			t.Errorf("%s: mode %o type %c, want %o %c", want.name, h.Mode, h.Typeflag, want.mode, want.typ)
		}
	}
	// A static ELF: no interpreter needed in an image without libc.
	if app := lfiles["app"]; !bytes.HasPrefix(app, []byte("\x7fELF")) || bytes.Contains(app, []byte("/lib64/ld-linux")) {
		t.Errorf("app is not a static ELF binary")
	}
}

func TestBuildDeterministic(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles the test app; skipped with -short")
	}
	ctx := context.Background()
	dir := t.TempDir()
	var sums []digest.Digest
	for _, name := range []string{"a.tar", "b.tar"} {
		out := filepath.Join(dir, name)
		if err := Build(ctx, out, "demo", "v1", "v1"); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		sums = append(sums, sha256Digest(b))
	}
	if sums[0] != sums[1] {
		t.Errorf("two builds of the same inputs differ: %s vs %s", sums[0], sums[1])
	}
}
