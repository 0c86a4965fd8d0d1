package qemu

import (
	"fmt"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/guest"
)

// mainProcess is the workload's process as the container driver would run
// it: the image's entrypoint and cmd (or the spec's args), env, workdir
// and user, resolved against the image's own /etc/passwd and /etc/group.
func mainProcess(cfg driver.Config) (guest.Process, error) {
	args := driver.ProcessArgs(cfg)
	if len(args) == 0 {
		return guest.Process{}, fmt.Errorf("the image has no entrypoint or cmd; give the workload args")
	}
	user, err := driver.ResolveUser(cfg.Rootfs, cfg.ImageConfig.User)
	if err != nil {
		return guest.Process{}, err
	}
	env := driver.ProcessEnv(cfg, user.Home)
	wd := cfg.ImageConfig.WorkingDir
	if wd == "" {
		wd = "/"
	}
	return guest.Process{Args: args, Env: env, WorkDir: wd, UID: user.UID, GID: user.GID, Groups: user.Groups, Tty: cfg.Spec.Tty,
		StopSignal: int(driver.StopSignal(cfg.ImageConfig.StopSignal))}, nil
}
