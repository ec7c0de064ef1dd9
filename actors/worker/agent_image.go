package worker

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warrenorch/warren/actors/blocking"
	"github.com/warrenorch/warren/messages"
)

// importChunk receives an image a manager distributes to every node.
func (a *agent) importChunk(ctx actor.Context, m *messages.ImportImageChunk) {
	fail := func(format string, args ...any) {
		if f := a.uploads[m.UploadId]; f != nil {
			f.Close()
			os.Remove(f.Name())
			delete(a.uploads, m.UploadId)
		}
		ctx.Respond(&messages.ImportImageReply{Error: &messages.Error{Code: messages.ErrorCode_ERROR_CODE_INTERNAL, Message: fmt.Sprintf(format, args...)}})
	}
	f := a.uploads[m.UploadId]
	if f == nil {
		if err := os.MkdirAll(a.cfg.UploadDir, 0o700); err != nil {
			fail("upload dir: %v", err)
			return
		}
		var err error
		if f, err = os.CreateTemp(a.cfg.UploadDir, "import-*.tar"); err != nil {
			fail("upload: %v", err)
			return
		}
		a.uploads[m.UploadId] = f
	}
	if _, err := f.Write(m.Data); err != nil {
		fail("upload: %v", err)
		return
	}
	if !m.Last {
		ctx.Respond(&messages.ImportImageReply{})
		return
	}
	// The import may take minutes: it runs off the mailbox, so heartbeats
	// and assignments go on meanwhile. The goroutine owns the file now.
	delete(a.uploads, m.UploadId)
	rt := a.cfg.Runtime
	blocking.Do(ctx, importTimeout+time.Minute, func() ([]string, error) {
		defer func() { f.Close(); os.Remove(f.Name()) }()
		if _, err := f.Seek(0, 0); err != nil {
			return nil, fmt.Errorf("read upload: %w", err)
		}
		c, cancel := context.WithTimeout(context.Background(), importTimeout)
		defer cancel()
		imgs, err := rt.ImportImage(c, f)
		if err != nil {
			return nil, fmt.Errorf("import image: %w", err)
		}
		return imgs, nil
	}, func(imgs []string, err error) {
		if err != nil {
			ctx.Respond(&messages.ImportImageReply{Error: &messages.Error{Code: messages.ErrorCode_ERROR_CODE_INTERNAL, Message: err.Error()}})
			return
		}
		ctx.Respond(&messages.ImportImageReply{Images: imgs})
	})
}

// importTimeout bounds one image import into this node's containerd.
const importTimeout = 5 * time.Minute
