package kernel

import "testing"

func TestFromKernel(t *testing.T) {
	kernel := sender{portID: 0, creds: true, pid: 0, uid: 0, group: kernelGroup}
	if !kernel.fromKernel() {
		t.Fatal("the kernel's own message refused")
	}
	for name, s := range map[string]sender{
		"a user port":          {portID: 4242, creds: true, pid: 0, uid: 0, group: kernelGroup},
		"a process's pid":      {portID: 0, creds: true, pid: 77, uid: 0, group: kernelGroup},
		"a user's uid":         {portID: 0, creds: true, pid: 0, uid: 1000, group: kernelGroup},
		"no credentials":       {portID: 0, creds: false, group: kernelGroup},
		"unicast":              {portID: 0, creds: true, group: 0},
		"udev's group":         {portID: 0, creds: true, group: 2},
		"not a netlink source": {addrErr: true, creds: true, group: kernelGroup},
	} {
		if s.fromKernel() {
			t.Errorf("%s: taken for the kernel", name)
		}
	}
}
