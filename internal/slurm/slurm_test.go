package slurm

import "testing"

func TestFromEnv(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		want Capacity
		ok   bool
		bad  bool
	}{
		{name: "no job", env: map[string]string{"SLURM_CPUS_ON_NODE": "4"}},
		{name: "per node", ok: true, want: Capacity{Cores: 4, MemoryMiB: 8192},
			env: map[string]string{"SLURM_JOB_ID": "7", "SLURM_CPUS_ON_NODE": "4", "SLURM_MEM_PER_NODE": "8192"}},
		{name: "per cpu", ok: true, want: Capacity{Cores: 3, MemoryMiB: 3 * 2048},
			env: map[string]string{"SLURM_JOB_ID": "7", "SLURM_CPUS_ON_NODE": "3", "SLURM_MEM_PER_CPU": "2G"}},
		{name: "per node wins", ok: true, want: Capacity{Cores: 2, MemoryMiB: 1000},
			env: map[string]string{"SLURM_JOB_ID": "7", "SLURM_CPUS_ON_NODE": "2", "SLURM_MEM_PER_NODE": "1000", "SLURM_MEM_PER_CPU": "5000"}},
		{name: "cores only", ok: true, want: Capacity{Cores: 2},
			env: map[string]string{"SLURM_JOB_ID": "7", "SLURM_CPUS_ON_NODE": "2"}},
		{name: "bad cpus", ok: true, bad: true,
			env: map[string]string{"SLURM_JOB_ID": "7", "SLURM_CPUS_ON_NODE": "two"}},
		{name: "bad mem", ok: true, bad: true,
			env: map[string]string{"SLURM_JOB_ID": "7", "SLURM_CPUS_ON_NODE": "2", "SLURM_MEM_PER_NODE": "-5"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok, err := FromEnv(func(k string) string { return c.env[k] })
			if ok != c.ok || (err != nil) != c.bad {
				t.Fatalf("ok %v err %v; want ok %v, error %v", ok, err, c.ok, c.bad)
			}
			if !c.bad && got != c.want {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}
}
