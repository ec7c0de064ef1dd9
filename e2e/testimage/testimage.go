// Package testimage builds the OCI image that warren's tests run: e2e/testapp
// compiled statically and packed, with nothing else but /etc/passwd,
// /etc/group and /tmp, into an OCI image layout tarball that `warren image
// import` (and containerd's importer) accept. It owns building that tarball
// and nothing else; loading it into containerd is the runtime package's job.
//
// Output is deterministic: fixed timestamps, owners and file order, so the
// same source and version give the same digests, and re-importing an
// unchanged image is a no-op.
package testimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// epoch is the timestamp of every file and of the image config, so output
// depends only on the inputs.
var epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// AnnotationImageName is containerd's annotation for an image's full name in
// an OCI layout index.
const AnnotationImageName = "io.containerd.image.name"

const (
	passwd = "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
	group  = "root:x:0:\nnogroup:x:65534:\n"
)

// Build compiles e2e/testapp with version baked in as its default and writes
// an OCI layout tarball to out naming the image docker.io/library/<name>:<tag>
// (or <name>:<tag> when name already has a registry).
func Build(ctx context.Context, out, name, tag, version string) error {
	return BuildEnv(ctx, out, name, tag, version)
}

// BuildEnv is Build with extra KEY=VALUE variables in the image's config,
// e.g. HEALTHZ=fail for a version that never becomes healthy.
func BuildEnv(ctx context.Context, out, name, tag, version string, env ...string) error {
	if name == "" || tag == "" {
		return errors.New("build test image: name and tag are required")
	}
	bin, cleanup, err := compile(ctx, version)
	if err != nil {
		return err
	}
	defer cleanup()
	app, err := os.ReadFile(bin)
	if err != nil {
		return fmt.Errorf("build test image: %w", err)
	}
	archive, err := pack(app, FullName(name, tag), tag, version, runtime.GOARCH, env...)
	if err != nil {
		return fmt.Errorf("build test image: %w", err)
	}
	// Write beside the target and rename, so a reader never sees half a file.
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("build test image: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), ".testimage-*")
	if err != nil {
		return fmt.Errorf("build test image: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(archive); err != nil {
		tmp.Close()
		return fmt.Errorf("build test image: write %s: %w", out, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("build test image: write %s: %w", out, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("build test image: %w", err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return fmt.Errorf("build test image: %w", err)
	}
	return nil
}

// FullName is the normalized name Build gives an image: docker hub names get
// the docker.io/library/ prefix, as `docker pull` would resolve them.
func FullName(name, tag string) string {
	first, _, hasSlash := strings.Cut(name, "/")
	switch {
	case !hasSlash:
		name = "docker.io/library/" + name
	case !strings.ContainsAny(first, ".:") && first != "localhost":
		name = "docker.io/" + name
	}
	return name + ":" + tag
}

// compile builds the test app into a temporary directory and returns the
// binary's path and a function removing it.
func compile(ctx context.Context, version string) (string, func(), error) {
	root, err := moduleRoot(ctx)
	if err != nil {
		return "", nil, err
	}
	tmp, err := os.MkdirTemp("", "testapp-build")
	if err != nil {
		return "", nil, fmt.Errorf("build test app: %w", err)
	}
	cleanup := func() { os.RemoveAll(tmp) }
	bin := filepath.Join(tmp, "app")
	cmd := exec.CommandContext(ctx, goTool(), "build", "-trimpath",
		"-ldflags", "-s -w -X main.defaultVersion="+version,
		"-o", bin, "./e2e/testapp")
	cmd.Dir = root
	// Static, and for the architecture the local containerd runs.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if out, err := cmd.CombinedOutput(); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("build test app (go build ./e2e/testapp in %s): %w\n%s", root, err, out)
	}
	return bin, cleanup, nil
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if root := os.Getenv("GOROOT"); root != "" {
		return filepath.Join(root, "bin", "go")
	}
	return "go"
}

// moduleRoot finds the warren module: from this source file when the build
// kept paths, else from `go env GOMOD` in the working directory.
func moduleRoot(ctx context.Context) (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		for dir := filepath.Dir(file); ; dir = filepath.Dir(dir) {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				return dir, nil
			}
			if dir == filepath.Dir(dir) {
				break
			}
		}
	}
	out, err := exec.CommandContext(ctx, goTool(), "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return "", errors.New("build test app: cannot find the warren module (go.mod); run from inside the repository")
	}
	return filepath.Dir(gomod), nil
}

// blob is one content-addressed file of the layout.
type blob struct {
	desc ocispec.Descriptor
	data []byte
}

func newBlob(mediaType string, data []byte) blob {
	return blob{
		desc: ocispec.Descriptor{MediaType: mediaType, Digest: sha256Digest(data), Size: int64(len(data))},
		data: data,
	}
}

// sha256Digest computes the digest directly: go-digest's FromBytes panics
// unless some package imported crypto/sha256 for its side effect.
func sha256Digest(b []byte) digest.Digest {
	sum := sha256.Sum256(b)
	return digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(sum[:]))
}

// pack assembles the OCI layout tarball around the app binary.
func pack(app []byte, fullName, tag, version, arch string, env ...string) ([]byte, error) {
	layerTar, err := rootfsTar(app)
	if err != nil {
		return nil, err
	}
	diffID := sha256Digest(layerTar)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz) // zero header ModTime and no name: deterministic
	if _, err := zw.Write(layerTar); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	layer := newBlob(ocispec.MediaTypeImageLayerGzip, gz.Bytes())

	created := epoch
	config, err := json.Marshal(ocispec.Image{
		Created:  &created,
		Platform: ocispec.Platform{Architecture: arch, OS: "linux"},
		Config: ocispec.ImageConfig{
			Entrypoint:   []string{"/app"},
			Env:          append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "VERSION=" + version}, env...),
			ExposedPorts: map[string]struct{}{"80/tcp": {}},
			WorkingDir:   "/",
		},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{diffID}},
		History: []ocispec.History{{
			Created:   &created,
			CreatedBy: "warren e2e/testimage " + version,
		}},
	})
	if err != nil {
		return nil, err
	}
	cfg := newBlob(ocispec.MediaTypeImageConfig, config)

	manifestJSON, err := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    cfg.desc,
		Layers:    []ocispec.Descriptor{layer.desc},
	})
	if err != nil {
		return nil, err
	}
	manifest := newBlob(ocispec.MediaTypeImageManifest, manifestJSON)
	mdesc := manifest.desc
	mdesc.Platform = &ocispec.Platform{Architecture: arch, OS: "linux"}
	mdesc.Annotations = map[string]string{
		AnnotationImageName:       fullName,
		ocispec.AnnotationRefName: tag,
	}
	index, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{mdesc},
	})
	if err != nil {
		return nil, err
	}
	layout, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return nil, err
	}

	blobs := []blob{layer, cfg, manifest}
	sort.Slice(blobs, func(i, j int) bool { return blobs[i].desc.Digest < blobs[j].desc.Digest })
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	entries := []tarEntry{
		{name: ocispec.ImageLayoutFile, mode: 0o644, data: layout},
		{name: "index.json", mode: 0o644, data: index},
		{name: "blobs/", mode: 0o755, dir: true},
		{name: "blobs/sha256/", mode: 0o755, dir: true},
	}
	for _, b := range blobs {
		entries = append(entries, tarEntry{name: "blobs/sha256/" + b.desc.Digest.Encoded(), mode: 0o644, data: b.data})
	}
	if err := writeTar(tw, entries); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// rootfsTar is the single layer: the app and the few files a Go binary and
// runc expect (user lookup, a writable /tmp).
func rootfsTar(app []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := writeTar(tw, []tarEntry{
		{name: "app", mode: 0o755, data: app},
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/group", mode: 0o644, data: []byte(group)},
		{name: "etc/passwd", mode: 0o644, data: []byte(passwd)},
		{name: "tmp/", mode: 0o1777, dir: true},
	})
	return buf.Bytes(), err
}

type tarEntry struct {
	name string
	mode int64
	dir  bool
	data []byte
}

func writeTar(tw *tar.Writer, entries []tarEntry) error {
	for _, e := range entries {
		hdr := &tar.Header{
			Name:    e.name,
			Mode:    e.mode,
			ModTime: epoch,
			Uname:   "root",
			Gname:   "root",
			Format:  tar.FormatPAX,
		}
		if e.dir {
			hdr.Typeflag = tar.TypeDir
		} else {
			hdr.Typeflag = tar.TypeReg
			hdr.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("tar %s: %w", e.name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return fmt.Errorf("tar %s: %w", e.name, err)
		}
	}
	return tw.Close()
}
