package qemu

import (
	"fmt"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/guest"
)

// volumeDisk is one named volume's image, attached as a virtio-blk disk
// the guest finds by its serial: device names follow probe order, which
// the microvm machine does not promise.
type volumeDisk struct {
	Image  string `json:"image"`
	Serial string `json:"serial"`
}

// volumeDisks are the disks of vols and what the guest mounts of them.
func volumeDisks(vols []driver.VolumeMount) ([]volumeDisk, []guest.Volume) {
	var disks []volumeDisk
	var mounts []guest.Volume
	for i, v := range vols {
		serial := fmt.Sprintf("hcvol%d", i)
		disks = append(disks, volumeDisk{Image: v.Image, Serial: serial})
		mounts = append(mounts, guest.Volume{Serial: serial, Target: v.Target})
	}
	return disks, mounts
}

// volumeArgs are QEMU's arguments for the volume disks.
func volumeArgs(disks []volumeDisk) []string {
	var args []string
	for i, d := range disks {
		id := fmt.Sprintf("vol%d", i)
		args = append(args,
			"-drive", "id="+id+",file="+d.Image+",format=raw,if=none,cache=none,aio=threads",
			"-device", "virtio-blk-device,drive="+id+",serial="+d.Serial)
	}
	return args
}
