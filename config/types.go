package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// The value types shared by every file and request: each has one parser
// (Parse...), a String that the parser reads back, flag.Value's Set, and
// yaml.v3's UnmarshalYAML, so that a flag, a YAML key and a JSON string
// mean the same thing.

// Mode is a file mode's permission bits, written in octal ("0600"): the
// permission, setuid, setgid and sticky bits, within 07777.
type Mode uint32

// ParseMode parses an octal mode: 1 to 5 octal digits, at most 07777.
// It is the one mode parser of the tree: the daemon's configuration,
// view files, the control socket, the exec loader's register lines and
// devfsd.conf's octal PERMISSIONS all read a mode through it.
func ParseMode(s string) (Mode, error) {
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid mode %q (want octal, such as 0600)", s)
	}
	if v > 07777 {
		return 0, fmt.Errorf("%o is outside 07777 (permission, setuid, setgid and sticky bits only)", v)
	}
	if len(s) > 5 {
		return 0, fmt.Errorf("invalid mode %q (want at most 5 octal digits, such as 0600)", s)
	}
	return Mode(v), nil
}

func (m Mode) String() string { return fmt.Sprintf("%04o", uint32(m)) }

// Set implements flag.Value.
func (m *Mode) Set(s string) error {
	v, err := ParseMode(s)
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// UnmarshalYAML implements yaml.Unmarshaler: a scalar, quoted or not
// (0600 and "0600" are the same mode; YAML's own octal reading is not
// used).
func (m *Mode) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want an octal mode, not %s", describe(n))
	}
	return m.Set(n.Value)
}

// Size is a size in bytes that reads "16777216", "16MiB", "512KiB".
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}

// ParseSize parses a number of bytes with an optional unit suffix (B,
// KiB, MiB, GiB).
func ParseSize(s string) (Size, error) {
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("invalid size %q (want bytes, or a number with KiB, MiB or GiB)", s)
	}
	return Size(n * mult), nil
}

func (b Size) String() string {
	for _, u := range sizeUnits {
		if b != 0 && int64(b)%u.mult == 0 && u.mult > 1 {
			return fmt.Sprintf("%d%s", int64(b)/u.mult, u.suffix)
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// Set implements flag.Value.
func (b *Size) Set(s string) error {
	v, err := ParseSize(s)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (b *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a size, not %s", describe(n))
	}
	return b.Set(n.Value)
}

// Duration is a time.Duration written with its unit ("500ms", "1s",
// "2m"). A *time.Duration converts to a *Duration, so a time.Duration
// field takes a flag or a YAML value through it.
type Duration time.Duration

// ParseDuration parses a duration as time.ParseDuration does.
func ParseDuration(s string) (Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (want a number with a unit: 500ms, 1s, 2m)", s)
	}
	return Duration(d), nil
}

func (d Duration) String() string { return time.Duration(d).String() }

// Set implements flag.Value.
func (d *Duration) Set(s string) error {
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// UnmarshalYAML implements yaml.Unmarshaler. A bare number ("5") is
// refused rather than read as nanoseconds: in a file a duration says its
// unit.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		return fmt.Errorf("invalid duration %q (want a number with a unit: 500ms, 1s, 2m)", n.Value)
	}
	return d.Set(n.Value)
}

// ID is a user or group id: 0 to 4294967294 (4294967295 is the kernel's
// "no id").
type ID uint32

// MaxID is the largest ID.
const MaxID = 1<<32 - 2

// ParseID parses a decimal uid or gid.
func ParseID(s string) (ID, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid id %q (want a number; names are not looked up)", s)
	}
	return IDOf(v)
}

// IDOf checks that v is an ID.
func IDOf(v int64) (ID, error) {
	if v < 0 || v > MaxID {
		return 0, fmt.Errorf("%d is out of range [0, %d]", v, MaxID)
	}
	return ID(v), nil
}

func (i ID) String() string { return strconv.FormatUint(uint64(i), 10) }

// Set implements flag.Value.
func (i *ID) Set(s string) error {
	v, err := ParseID(s)
	if err != nil {
		return err
	}
	*i = v
	return nil
}

// UnmarshalYAML implements yaml.Unmarshaler: an integer.
func (i *ID) UnmarshalYAML(n *yaml.Node) error {
	var v int64
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&v) != nil {
		return fmt.Errorf("want an integer, not %s", describe(n))
	}
	id, err := IDOf(v)
	if err != nil {
		return err
	}
	*i = id
	return nil
}
