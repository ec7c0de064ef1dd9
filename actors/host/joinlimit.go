package host

import (
	"sync"
	"time"
)

// joinLimiter is a token bucket per source IP for the join endpoint: a
// node joins once, so a few tries a minute is plenty, and a flood from
// one address (guessing secrets, burning CPU on TLS and signatures) is
// refused cheaply. golang.org/x/time/rate is not in the module graph and
// this is all of it Warren needs.
type joinLimiter struct {
	mu      sync.Mutex
	burst   float64       // requests an idle address may make at once
	every   time.Duration // one more request allowed per interval
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	tokens  float64
	last    time.Time
	refused bool // the previous request was refused (log once per burst)
}

// maxBuckets bounds the memory a flood of distinct addresses can take: a
// full table is swept of buckets that have refilled, and an address that
// still finds no room is refused.
const maxBuckets = 4096

func newJoinLimiter(burst int, every time.Duration) *joinLimiter {
	return &joinLimiter{burst: float64(burst), every: every, buckets: map[string]*bucket{}}
}

// allow takes a token for ip. first is true on the first refusal after an
// allowed request, so a flood is logged once, not per request.
func (l *joinLimiter) allow(ip string, now time.Time) (ok, first bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[ip]
	if b == nil {
		if len(l.buckets) >= maxBuckets {
			l.sweep(now)
		}
		if len(l.buckets) >= maxBuckets {
			return false, false
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[ip] = b
	}
	b.tokens += float64(now.Sub(b.last)) / float64(l.every)
	if b.tokens > l.burst {
		b.tokens = l.burst
	}
	b.last = now
	if b.tokens < 1 {
		first = !b.refused
		b.refused = true
		return false, first
	}
	b.tokens--
	b.refused = false
	if now.Sub(l.swept) > time.Minute {
		l.sweep(now)
	}
	return true, false
}

// sweep forgets addresses whose bucket is full again: they are as good as new.
func (l *joinLimiter) sweep(now time.Time) {
	l.swept = now
	full := time.Duration(l.burst * float64(l.every))
	for ip, b := range l.buckets {
		if now.Sub(b.last) >= full {
			delete(l.buckets, ip)
		}
	}
}
