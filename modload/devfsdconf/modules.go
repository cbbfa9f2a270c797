package devfsdconf

import (
	"path"
	"strings"
)

// Aliases are the "alias" lines of a modprobe configuration such as
// devfsd's /etc/modules.devfs:
//
//	alias /dev/dsp      sound-slot-0
//	alias sound-slot-0  sound
//	alias /dev/tts*     serial
//
// The name may be a shell pattern (path.Match). Every other line
// (options, probeall, install, comments) is ignored.
type Aliases struct {
	rules []alias
}

type alias struct{ pattern, module string }

// ParseAliases reads the alias lines of data.
func ParseAliases(data []byte) *Aliases {
	a := &Aliases{}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "alias" {
			a.rules = append(a.rules, alias{f[1], f[2]})
		}
	}
	return a
}

// Resolve follows the aliases from name ("/dev/dsp") and returns the
// names met on the way, in order, name first: the caller takes the first
// it knows as a module. Chains end at a name no alias matches, "off" or
// "null", a loop, or 16 steps.
func (a *Aliases) Resolve(name string) []string {
	out := []string{name}
	if a == nil {
		return out
	}
	seen := map[string]bool{name: true}
	for step := 0; step < 16; step++ {
		next := ""
		for _, r := range a.rules {
			if ok, err := path.Match(r.pattern, name); err == nil && ok {
				next = r.module
				break
			}
		}
		if next == "" || next == "off" || next == "null" || seen[next] {
			break
		}
		seen[next] = true
		out = append(out, next)
		name = next
	}
	return out
}
