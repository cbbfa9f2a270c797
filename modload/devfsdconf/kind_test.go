package devfsdconf

import "testing"

// devfsd.conf names devfsd's events; the daemon's internal kinds are no
// event a rule can name.
func TestParseKindDevfsdEventsOnly(t *testing.T) {
	for _, s := range []string{"REGISTER", "unregister", "ASYNC_OPEN", "CLOSE", "LOOKUP", "CHANGE", "CREATE", "DELETE"} {
		if _, ok := ParseKind(s); !ok {
			t.Errorf("ParseKind(%q) refused", s)
		}
	}
	for _, s := range []string{"EXPIRE", "TOUCH", "INVALID", ""} {
		if k, ok := ParseKind(s); ok {
			t.Errorf("ParseKind(%q) = %v, want refused", s, k)
		}
	}
	if Deliverable(AsyncOpen) || Deliverable(Close) || !Deliverable(Lookup) {
		t.Error("ASYNC_OPEN and CLOSE are never delivered; LOOKUP is")
	}
}
