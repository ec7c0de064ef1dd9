package fakeruntime

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/warrenorch/warren/runtime"
)

// The fake reads only the names out of an image archive: index.json of an
// OCI layout (io.containerd.image.name, else org.opencontainers.image.ref.name
// when it is a full reference — a bare tag names nothing, as in containerd)
// and manifest.json of a `docker save` tarball (RepoTags). Blobs are read
// and dropped, at Config.ImportPerMB.
const (
	annotationImageName = "io.containerd.image.name"
	annotationRefName   = "org.opencontainers.image.ref.name"
)

// readImageNames reads the whole archive at perMB per MiB and returns the
// normalized names it holds, sorted.
func readImageNames(ctx context.Context, rd io.Reader, perMB time.Duration) ([]string, error) {
	tr := tar.NewReader(&paced{ctx: ctx, r: rd, perMB: perMB})
	seen := map[string]bool{}
	add := func(ref string) {
		if !strings.ContainsAny(ref, "/:@") {
			return
		}
		if n, err := runtime.NormalizeImageRef(ref); err == nil {
			seen[n] = true
		}
	}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("import image archive: %w (is it an OCI layout or `docker save` tarball?)", err)
		}
		switch strings.TrimPrefix(hdr.Name, "./") {
		case "index.json":
			var idx struct {
				Manifests []struct {
					Annotations map[string]string `json:"annotations"`
				} `json:"manifests"`
			}
			if err := json.NewDecoder(tr).Decode(&idx); err != nil {
				return nil, fmt.Errorf("import image archive: index.json: %w", err)
			}
			for _, m := range idx.Manifests {
				if n := m.Annotations[annotationImageName]; n != "" {
					add(n)
				} else {
					add(m.Annotations[annotationRefName])
				}
			}
		case "manifest.json":
			var ms []struct{ RepoTags []string }
			if err := json.NewDecoder(tr).Decode(&ms); err != nil {
				return nil, fmt.Errorf("import image archive: manifest.json: %w", err)
			}
			for _, m := range ms {
				for _, t := range m.RepoTags {
					add(t)
				}
			}
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return nil, fmt.Errorf("import image archive: %w", err)
		}
	}
	if len(seen) == 0 {
		return nil, fmt.Errorf("import image archive: it names no image; tag it before saving (docker save repo:tag, or set the io.containerd.image.name annotation): %w", runtime.ErrInvalidArgument)
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// paced reads r no faster than perMB per MiB, and stops when ctx ends.
type paced struct {
	ctx   context.Context
	r     io.Reader
	perMB time.Duration
	read  int64 // bytes read so far
	start time.Time
}

func (p *paced) Read(b []byte) (int, error) {
	if err := p.ctx.Err(); err != nil {
		return 0, err
	}
	if p.start.IsZero() {
		p.start = time.Now()
	}
	n, err := p.r.Read(b)
	p.read += int64(n)
	if p.perMB > 0 {
		due := p.start.Add(time.Duration(float64(p.perMB) * float64(p.read) / (1 << 20)))
		if d := time.Until(due); d > 0 {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
			case <-p.ctx.Done():
				return n, p.ctx.Err()
			}
		}
	}
	return n, err
}

// ImageTar returns an OCI-layout tarball that names images (docker
// references, any form) in its index.json, with one filler blob of
// padding bytes so that a test can import a large image. It holds no
// usable layers: it is for this fake only; real containerd refuses it.
func ImageTar(padding int, images ...string) ([]byte, error) {
	type desc struct {
		MediaType   string            `json:"mediaType"`
		Digest      string            `json:"digest"`
		Size        int64             `json:"size"`
		Annotations map[string]string `json:"annotations,omitempty"`
	}
	idx := struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
		Manifests     []desc `json:"manifests"`
	}{SchemaVersion: 2, MediaType: "application/vnd.oci.image.index.v1+json"}
	for i, img := range images {
		idx.Manifests = append(idx.Manifests, desc{
			MediaType: "application/vnd.oci.image.manifest.v1+json",
			Digest:    fmt.Sprintf("sha256:%064x", i), Size: 1,
			Annotations: map[string]string{annotationImageName: img},
		})
	}
	index, err := json.Marshal(idx)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	files := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", index},
		{"blobs/sha256/" + strings.Repeat("f", 64), make([]byte, padding)},
	}
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
