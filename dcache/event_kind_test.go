package dcache

import "testing"

// Every kind reads back from its name, in any case; no other word does.
func TestParseKindRoundTrip(t *testing.T) {
	for k := KindRegister; k <= KindClose; k++ {
		for _, s := range []string{k.String(), lower(k.String())} {
			if got, ok := ParseKind(s); !ok || got != k {
				t.Errorf("ParseKind(%q) = %v, %v; want %v", s, got, ok, k)
			}
		}
	}
	for _, s := range []string{"", "INVALID", "REGISTERX", "open"} {
		if k, ok := ParseKind(s); ok {
			t.Errorf("ParseKind(%q) = %v, want refused", s, k)
		}
	}
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// Every origin reads back from its name; nothing else does.
func TestParseOriginRoundTrip(t *testing.T) {
	for o := OriginBuiltin; o <= OriginKernel; o++ {
		if got, ok := ParseOrigin(o.String()); !ok || got != o {
			t.Errorf("ParseOrigin(%q) = %v, %v; want %v", o.String(), got, ok, o)
		}
	}
	for _, s := range []string{"", "invalid", "Kernel", "user"} {
		if o, ok := ParseOrigin(s); ok {
			t.Errorf("ParseOrigin(%q) = %v, want refused", s, o)
		}
	}
}
