package main

import (
	"fmt"
	"strconv"
	"time"
)

// parseTimeArg reads a time bound such as --since and --until, one rule
// for every command that takes one (logs, events, audit), as Docker reads
// them: a duration back from now (10m, 1h30m), an RFC 3339 time with or
// without fractions or zone (2026-12-03T15:04:05Z), a date, or Unix
// seconds. "" is no bound. flag names the flag in the error.
func parseTimeArg(flag, s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("%s %s: give how long ago as a positive duration (10m, 2h), without a sign", flag, s)
		}
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(n, 0), nil
	}
	return time.Time{}, fmt.Errorf("%s %q: give a duration back from now (10m, 1h30m) or a time (2026-12-03T15:04:05Z)", flag, s)
}
