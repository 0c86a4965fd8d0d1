package main

import (
	"github.com/spf13/pflag"

	v1 "github.com/hypercore-dev/hypercore/api/hypercore/v1"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// imageOptions are spawn's flags that change the image's own config or
// keep the workload running: --restart, -v, --entrypoint, --workdir and
// --user.
type imageOptions struct {
	restart    string
	volumes    []string
	entrypoint string
	workdir    string
	user       string
}

func (o *imageOptions) flags(f *pflag.FlagSet) {
	f.StringVar(&o.restart, "restart", "", "restart policy: no (default), always, on-failure or on-failure:MAX (backoff doubles from 1 s to 1 min)")
	f.StringArrayVarP(&o.volumes, "volume", "v", nil, "mount a volume made by 'hypercore volume create', NAME:/path, repeatable")
	f.StringVar(&o.entrypoint, "entrypoint", "", "replace the image's ENTRYPOINT with this program (arguments after -- still replace its CMD)")
	f.StringVar(&o.workdir, "workdir", "", "replace the image's WORKDIR (an absolute path)")
	f.StringVarP(&o.user, "user", "u", "", "replace the image's USER: a name, uid, or uid:gid")
}

// apply puts the options into ps.
func (o *imageOptions) apply(ps *v1.WorkloadSpec) error {
	ps.Restart, ps.Workdir, ps.User = o.restart, o.workdir, o.user
	if o.entrypoint != "" {
		ps.Entrypoint = []string{o.entrypoint}
	}
	for _, v := range o.volumes {
		name, target, err := spec.ParseVolumeFlag(v)
		if err != nil {
			return err
		}
		if ps.Volumes == nil {
			ps.Volumes = map[string]string{}
		}
		ps.Volumes[name] = target
	}
	return nil
}
