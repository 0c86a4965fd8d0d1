package qemu

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/hypercore-dev/hypercore/internal/guest"
)

// DetectAccel picks the accelerator once per node: "kvm" when /dev/kvm
// opens and a probe VM really boots this kernel and initramfs with it,
// else "tcg". The check boots because some machines expose a /dev/kvm
// (nested, paravirtual) that cannot run a stock kernel. The answer is kept
// in cacheFile, keyed by kernel and initramfs, so restarts do not boot
// again.
func DetectAccel(ctx context.Context, qemu string, k Kernel, initrd, cacheFile string, log *slog.Logger) string {
	key := k.Version + " " + filepath.Base(initrd)
	if b, err := os.ReadFile(cacheFile); err == nil {
		if acc, cached, ok := strings.Cut(strings.TrimSpace(string(b)), " "); ok && cached == key {
			log.Info("microVM accelerator (cached)", "accel", acc)
			return acc
		}
	}
	acc := "tcg"
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		log.Info("microVMs use TCG: /dev/kvm is not usable", "err", err)
	} else {
		f.Close()
		if out, ok := probeBoot(ctx, qemu, "kvm", k, initrd); ok {
			acc = "kvm"
		} else {
			log.Warn("microVMs use TCG: /dev/kvm exists but a probe VM did not boot with it", "console", out)
		}
	}
	_ = os.WriteFile(cacheFile, []byte(acc+" "+key+"\n"), 0o644)
	log.Info("microVM accelerator", "accel", acc)
	return acc
}

// probeBoot boots the agent in probe mode with accel, which prints
// guest.ProbeReady on the serial console and resets the VM, and reports
// whether it did, with the console output.
func probeBoot(ctx context.Context, qemu, accel string, k Kernel, initrd string) (string, bool) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	args := append(machineArgs(accel, k, initrd, guest.ProbeArg), "-m", "256", "-serial", "stdio")
	cmd := exec.CommandContext(ctx, qemu, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	_ = cmd.Run()
	return out.String(), strings.Contains(out.String(), guest.ProbeReady)
}
