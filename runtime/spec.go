package runtime

import (
	"context"
	"errors"
	"fmt"
	"path"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/oci"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// cfsPeriod is the CFS scheduling period in microseconds that CPUMillis is
// expressed against (the kernel default, as docker uses).
const cfsPeriod = 100_000

// specOpts translates a validated ContainerSpec into containerd spec options,
// applied in order on top of containerd's default Linux spec. Order matters:
// image config first, then each override.
func (r *Containerd) specOpts(ctx context.Context, spec ContainerSpec, img containerd.Image) ([]oci.SpecOpts, error) {
	ic, err := img.Spec(ctx)
	if err != nil {
		return nil, fmt.Errorf("read config of image %s: %w", spec.Image, err)
	}
	opts := []oci.SpecOpts{
		oci.WithImageConfig(img),
		withArgs(ic.Config.Entrypoint, ic.Config.Cmd, spec.Command, spec.Args),
	}
	if len(spec.Env) > 0 {
		opts = append(opts, oci.WithEnv(spec.Env))
	}
	if spec.WorkDir != "" {
		opts = append(opts, oci.WithProcessCwd(spec.WorkDir))
	}
	if spec.User != "" {
		opts = append(opts, oci.WithUser(spec.User), withSupplementaryGroups())
	}
	hostname := spec.Hostname
	if hostname == "" {
		hostname = spec.ID
		if len(hostname) > 63 {
			hostname = hostname[:63]
		}
	}
	opts = append(opts, oci.WithHostname(hostname))
	if spec.MemoryLimitBytes > 0 {
		opts = append(opts, oci.WithMemoryLimit(uint64(spec.MemoryLimitBytes)))
	}
	if spec.CPUMillis > 0 {
		opts = append(opts, oci.WithCPUCFS(spec.CPUMillis*cfsPeriod/1000, cfsPeriod))
	}
	if spec.NetNSPath != "" {
		opts = append(opts, oci.WithLinuxNamespace(specs.LinuxNamespace{
			Type: specs.NetworkNamespace,
			Path: spec.NetNSPath,
		}))
	}
	appArmor, _ := hostAppArmor()
	opts = append(opts, isolationOpts(spec.Isolation, appArmor)...)
	opts = append(opts, oci.WithCgroup(r.cgroupPath(spec)))
	if mounts := ociMounts(spec); len(mounts) > 0 {
		opts = append(opts, oci.WithMounts(mounts))
	}
	return opts, nil
}

// cgroupPath is the container's cgroupfs path relative to each hierarchy root.
func (r *Containerd) cgroupPath(spec ContainerSpec) string {
	parent := spec.CgroupParent
	if parent == "" {
		parent = "/" + r.namespace
	}
	return path.Join(parent, spec.ID)
}

// withArgs applies docker's rules for overriding ENTRYPOINT and CMD: a new
// command drops the image's CMD too; new args keep the image's entrypoint.
func withArgs(entrypoint, cmd, command, args []string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		var argv []string
		switch {
		case len(command) > 0:
			argv = append(append(argv, command...), args...)
		case len(args) > 0:
			argv = append(append(argv, entrypoint...), args...)
		default:
			argv = append(append(argv, entrypoint...), cmd...)
		}
		if len(argv) == 0 {
			return errors.New("nothing to run: the image has neither ENTRYPOINT nor CMD; set a command")
		}
		s.Process.Args = argv
		return nil
	}
}

// withSupplementaryGroups adds the groups the (already resolved) user belongs
// to in the image's /etc/group, as WithImageConfig does for the image user.
func withSupplementaryGroups() oci.SpecOpts {
	return func(ctx context.Context, client oci.Client, c *containers.Container, s *oci.Spec) error {
		return oci.WithAdditionalGIDs(fmt.Sprint(s.Process.User.UID))(ctx, client, c, s)
	}
}

func ociMounts(spec ContainerSpec) []specs.Mount {
	var out []specs.Mount
	for _, m := range spec.Mounts {
		mode := "rw"
		if m.ReadOnly {
			mode = "ro"
		}
		switch m.Type {
		case "tmpfs":
			out = append(out, specs.Mount{
				Destination: m.Target,
				Type:        "tmpfs",
				Source:      "tmpfs",
				Options:     []string{"nosuid", "nodev", "mode=1777", mode},
			})
		default:
			out = append(out, specs.Mount{
				Destination: m.Target,
				Type:        "bind",
				Source:      m.Source,
				Options:     []string{"rbind", "rprivate", mode},
			})
		}
	}
	if spec.ResolvConfPath != "" {
		out = append(out, specs.Mount{
			Destination: "/etc/resolv.conf",
			Type:        "bind",
			Source:      spec.ResolvConfPath,
			Options:     []string{"rbind", "rprivate", "ro"},
		})
	}
	return out
}
