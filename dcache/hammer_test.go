package dcache

import (
	"flag"
	"testing"
	"time"
)

var hammerFor = flag.Duration("hammer", 2*time.Second, "duration of each TestHammer* test")

func hammerDuration(t *testing.T) time.Duration {
	if testing.Short() {
		return *hammerFor / 10
	}
	return *hammerFor
}
