package gates

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// histogram records response times in log-linear buckets of microseconds:
// 1 µs wide below 128 µs, then 128 buckets per power of two, so a
// bucket's midpoint is within 1/256 (0.4 %) of any value in it (and
// within 0.5 µs below 128 µs, far below what a web page's response time
// can be told apart by). Memory is fixed
// (about 58 KiB) however long the test runs, and record is lock-free and
// allocation-free, so measuring does not disturb what is measured.
type histogram struct {
	counts [histBuckets]atomic.Int64
	n      atomic.Int64
	sum    atomic.Int64 // nanoseconds; overflows only after ~290 years of responses
	peak   atomic.Int64 // nanoseconds, exact
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits
	// histBuckets covers every non-negative int64 microsecond value.
	histBuckets = (63 - histSubBits + 1) * histSub
)

func newHistogram() *histogram { return new(histogram) }

func histIndex(us uint64) int {
	if us < histSub {
		return int(us)
	}
	shift := bits.Len64(us) - 1 - histSubBits
	return (shift+1)*histSub + int(us>>shift) - histSub
}

// histMid returns the midpoint of bucket i, in microseconds.
func histMid(i int) float64 {
	if i < histSub {
		return float64(i) + 0.5
	}
	shift := i/histSub - 1
	lower := uint64(i%histSub+histSub) << shift
	return float64(lower) + float64(uint64(1)<<shift)/2
}

func (h *histogram) record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[histIndex(uint64(d/time.Microsecond))].Add(1)
	h.n.Add(1)
	h.sum.Add(int64(d))
	h.observeMax(d)
}

// observeMax raises the peak without counting a response (a request that
// timed out took at least d, but has no response time).
func (h *histogram) observeMax(d time.Duration) {
	for {
		cur := h.peak.Load()
		if int64(d) <= cur || h.peak.CompareAndSwap(cur, int64(d)) {
			return
		}
	}
}

func (h *histogram) max() time.Duration { return time.Duration(h.peak.Load()) }

func (h *histogram) mean() time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	return time.Duration(h.sum.Load() / n)
}

// quantile returns the q-quantile (0 < q <= 1) of the recorded values: the
// smallest value with at least q of them at or below it (nearest rank),
// as its bucket's midpoint, never above the exact peak. It is meant for a
// finished test (concurrent records make it approximate, not wrong).
func (h *histogram) quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := max(int64(math.Ceil(q*float64(n))), 1)
	var seen int64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			d := time.Duration(histMid(i) * float64(time.Microsecond))
			return min(d, h.max())
		}
	}
	return h.max()
}
