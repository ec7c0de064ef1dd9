package manager

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warrenorch/warren/actors/blocking"
	"github.com/warrenorch/warren/actors/events"
	"github.com/warrenorch/warren/messages"
	"github.com/warrenorch/warren/runtime"
)

// imagesTable is what manager/api/images takes, and from whom.
var imagesTable = table{
	typeName(&messages.ImportImageChunk{}):  adminRoles,
	typeName(&messages.PullImageRequest{}):  adminRoles,
	typeName(&messages.ListImagesRequest{}): adminRoles,
}

// imagesAPI (manager/api/images) puts images into this node's container
// runtime: uploaded (and passed on to every other ready node) or pulled.
// Images are per node, so nothing here goes to the leader.
type imagesAPI struct {
	cfg     APIConfig
	uploads map[string]*os.File // upload id -> its temp file, until the last chunk
}

func newImagesAPI(cfg APIConfig) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &imagesAPI{cfg: cfg, uploads: map[string]*os.File{}}
	}, events.WithLifecycle)
}

func (a *imagesAPI) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Stopping:
		for id := range a.uploads {
			a.dropUpload(id)
		}
	case *messages.ImportImageChunk:
		a.importChunk(ctx, m)
	case *messages.PullImageRequest:
		a.pull(ctx, m)
	case *messages.ListImagesRequest:
		imgs, err := a.cfg.Images.ListImages(context.Background())
		if err != nil {
			ctx.Respond(&messages.ListImagesReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "list images: %v", err)})
			return
		}
		ctx.Respond(&messages.ListImagesReply{Images: imgs})
	}
}

// pull fetches an image off the mailbox and answers when it is done.
func (a *imagesAPI) pull(ctx actor.Context, m *messages.PullImageRequest) {
	ref, err := runtime.NormalizeImageRef(m.Ref)
	if err != nil {
		ctx.Respond(&messages.PullImageReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INVALID, "%v", err)})
		return
	}
	images, plain := a.cfg.Images, m.PlainHttp
	blocking.Do(ctx, imageTimeout+5*time.Second, func() (struct{}, error) {
		c, cancel := context.WithTimeout(context.Background(), imageTimeout)
		defer cancel()
		return struct{}{}, images.PullImage(c, ref, runtime.PullOptions{PlainHTTP: plain})
	}, func(_ struct{}, err error) {
		if err != nil {
			ctx.Respond(&messages.PullImageReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "pull %s: %v", ref, err)})
			return
		}
		ctx.Respond(&messages.PullImageReply{Image: ref})
	})
}

// importChunk appends an upload chunk to a temp file; the last chunk imports
// it into this node's containerd and then into every other ready node's
// (air-gapped clusters have no registry to pull from).
func (a *imagesAPI) importChunk(ctx actor.Context, m *messages.ImportImageChunk) {
	f, ok := a.uploads[m.UploadId]
	if !ok {
		if m.Seq != 0 {
			ctx.Respond(&messages.ImportImageReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INVALID, "upload %s: chunk %d without a start: run the import again", m.UploadId, m.Seq)})
			return
		}
		var err error
		if f, err = newUpload(a.cfg.UploadDir); err != nil {
			ctx.Respond(&messages.ImportImageReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INTERNAL, "store upload: %v", err)})
			return
		}
		a.uploads[m.UploadId] = f
	}
	if _, err := f.Write(m.Data); err != nil {
		a.dropUpload(m.UploadId)
		ctx.Respond(&messages.ImportImageReply{Error: errReply(messages.ErrorCode_ERROR_CODE_INTERNAL, "store upload: %v (is the data dir's disk full?)", err)})
		return
	}
	if !m.Last {
		ctx.Respond(&messages.ImportImageReply{})
		return
	}
	delete(a.uploads, m.UploadId) // the goroutine below owns the file now
	var peers []string
	for _, n := range a.cfg.Store.State.Nodes() {
		if n.Id != a.cfg.NodeID && n.GetStatus().GetState() == messages.NodeState_NODE_STATE_READY && n.Description.GetAddr() != "" {
			peers = append(peers, n.Description.GetAddr())
		}
	}
	root, images := ctx.ActorSystem().Root, a.cfg.Images
	blocking.Do(ctx, 10*time.Minute, func() (*messages.ImportImageReply, error) {
		defer func() { f.Close(); os.Remove(f.Name()) }()
		reply := &messages.ImportImageReply{}
		c, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			reply.Error = errReply(messages.ErrorCode_ERROR_CODE_INTERNAL, "read upload: %v", err)
		} else if reply.Images, err = images.ImportImage(c, f); err != nil {
			reply.Error = errReply(messages.ErrorCode_ERROR_CODE_INVALID, "import image: %v (expected an OCI layout or docker save tarball)", err)
		} else if errs := sendImage(root, f, peers); len(errs) > 0 {
			reply.Error = errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "imported here but on %d of %d other nodes it failed: %s; import again once they are up", len(errs), len(peers), strings.Join(errs, "; "))
		}
		return reply, nil
	}, func(reply *messages.ImportImageReply, err error) {
		if err != nil {
			reply = &messages.ImportImageReply{Error: errReply(messages.ErrorCode_ERROR_CODE_UNAVAILABLE, "import: %v", err)}
		}
		ctx.Respond(reply)
	})
}

func newUpload(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return os.CreateTemp(dir, "import-*.tar")
}

// sendImage streams the tarball in f to the agent of every peer node, one
// acknowledged chunk at a time, and returns the failures.
func sendImage(root *actor.RootContext, f *os.File, peers []string) []string {
	var errs []string
	buf := make([]byte, 1<<20)
	for _, addr := range peers {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return append(errs, err.Error())
		}
		id := messages.NewID()
		for seq := uint64(0); ; seq++ {
			n, err := io.ReadFull(f, buf)
			last := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
			if err != nil && !last {
				errs = append(errs, fmt.Sprintf("%s: %v", addr, err))
				break
			}
			res, err := root.RequestFuture(actor.NewPID(addr, NameAgent), &messages.ImportImageChunk{UploadId: id, Seq: seq, Data: append([]byte(nil), buf[:n]...), Last: last}, 2*time.Minute).Result()
			r, _ := res.(*messages.ImportImageReply)
			if err != nil || r == nil || r.Error != nil {
				errs = append(errs, fmt.Sprintf("%s: %v %s", addr, err, r.GetError().GetMessage()))
				break
			}
			if last {
				break
			}
		}
	}
	return errs
}

func (a *imagesAPI) dropUpload(id string) {
	if f, ok := a.uploads[id]; ok {
		f.Close()
		os.Remove(f.Name())
		delete(a.uploads, id)
	}
}
