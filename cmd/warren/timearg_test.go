package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseTimeArg(t *testing.T) {
	now := renderNow
	cases := []struct {
		in      string
		want    time.Time
		wantErr string
	}{
		{"", time.Time{}, ""},
		{"10m", now.Add(-10 * time.Minute), ""},
		{"2h30m", now.Add(-150 * time.Minute), ""},
		{"2026-01-02T15:04:05Z", time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC), ""},
		{"2025-03-01T11:00:00.5Z", time.Date(2025, 3, 1, 11, 0, 0, 5e8, time.UTC), ""},
		{"2026-12-03T15:04:05.5+01:00", time.Date(2026, 12, 3, 14, 4, 5, 5e8, time.UTC), ""},
		{"2025-03-01", time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC), ""},
		{"1700000000", time.Unix(1700000000, 0), ""},
		{"-5m", time.Time{}, "--since -5m: give how long ago as a positive duration"},
		{"yesterday", time.Time{}, `--since "yesterday": give a duration back from now`},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseTimeArg("--since", tc.in, now)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !got.Equal(tc.want) {
				t.Fatalf("got %v %v, want %v", got, err, tc.want)
			}
		})
	}
}
