package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestKeptFileRoundTrip(t *testing.T) {
	kf, err := NewKeptFile()
	if err != nil {
		t.Fatal(err)
	}
	defer kf.Close()
	if _, _, err := ReadKeptFile(kf.f); !errors.Is(err, ErrNoKept) {
		t.Fatalf("empty file: %v, want ErrNoKept", err)
	}
	// Each write is seen by another descriptor of the same memfd, as a
	// successor sees it through the store's.
	other := dupFile(t, kf)
	for i := uint64(1); i <= 5; i++ {
		k := Kept{Generation: 7, Ceiling: i << 32, Mounts: []KeptMount{
			{FD: "devfsd-fuse-0", Specials: []string{"devfsd-fuse-0-1"}, Mountpoint: "/m", Dev: "0:99",
				Server: json.RawMessage(fmt.Sprintf(`{"init":"AQI%d"}`, i))},
			{FD: "devfsd-fuse-1", Mountpoint: "/v", Dev: "0:100", Server: json.RawMessage(`{}`), View: json.RawMessage(`{"allow":["a"]}`)},
		}}
		if err := kf.Write(k); err != nil {
			t.Fatal(err)
		}
		_, got, err := ReadKeptFile(other)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, k) {
			t.Fatalf("write %d: read %+v, want %+v", i, got, k)
		}
	}
}

// A write cut short (the writer killed inside it) leaves the previous
// record whole: it is what a successor reads.
func TestKeptFileTornWriteKeepsThePrevious(t *testing.T) {
	kf, err := NewKeptFile()
	if err != nil {
		t.Fatal(err)
	}
	defer kf.Close()
	if err := kf.Write(Kept{Generation: 1, Ceiling: 100}); err != nil {
		t.Fatal(err)
	}
	if err := kf.Write(Kept{Generation: 1, Ceiling: 200}); err != nil {
		t.Fatal(err)
	}
	// The next write goes to slot 1 (seq 3): tear it, as a kill inside
	// the write would, by writing its first bytes only.
	b, _ := json.Marshal(keptFrame{Seq: 3, Kept: Kept{Generation: 1, Ceiling: 300}})
	frame := appendFrame(nil, b)
	if _, err := kf.f.WriteAt(frame[:len(frame)/2], int64(3%2)*keptSlot); err != nil {
		t.Fatal(err)
	}
	_, got, err := ReadKeptFile(dupFile(t, kf))
	if err != nil {
		t.Fatal(err)
	}
	if got.Ceiling != 200 {
		t.Fatalf("after a torn write: ceiling %d, want the previous record's 200", got.Ceiling)
	}
	// And a reader that takes over writes after the latest whole one.
	kf2, _, err := ReadKeptFile(dupFile(t, kf))
	if err != nil {
		t.Fatal(err)
	}
	if err := kf2.Write(Kept{Generation: 1, Ceiling: 400}); err != nil {
		t.Fatal(err)
	}
	if _, got, _ := ReadKeptFile(dupFile(t, kf)); got.Ceiling != 400 {
		t.Fatalf("after the successor's write: ceiling %d, want 400", got.Ceiling)
	}
}

func TestKeptFileTooLarge(t *testing.T) {
	kf, err := NewKeptFile()
	if err != nil {
		t.Fatal(err)
	}
	defer kf.Close()
	if err := kf.Write(Kept{Ceiling: 1}); err != nil {
		t.Fatal(err)
	}
	big := Kept{Ceiling: 2, Mounts: []KeptMount{{Mountpoint: strings.Repeat("x", keptSlot)}}}
	if err := kf.Write(big); err == nil {
		t.Fatal("a record larger than a slot was written")
	}
	if _, got, _ := ReadKeptFile(dupFile(t, kf)); got.Ceiling != 1 {
		t.Fatalf("a refused write changed the record: ceiling %d", got.Ceiling)
	}
}

func dupFile(t *testing.T, kf *KeptFile) *os.File {
	t.Helper()
	f, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(kf.Fd()), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
