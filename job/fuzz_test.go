package job

import (
	"encoding/json"
	"testing"
	"time"
)

// FuzzJobJSON feeds the job API's decoder and validation arbitrary input:
// never a panic, and a job that validates has fire times that move forward.
func FuzzJobJSON(f *testing.F) {
	for _, s := range []string{
		`{"name":"a","app":"x","handler":"h","trigger":{"kind":"cron","cron":"*/5 * * * * *","time_zone":"Asia/Shanghai"},"enabled":true}`,
		`{"name":"a","app":"x","handler":"h","trigger":{"kind":"rate","every":"1ms"},"enabled":true,"start_at":"2030-01-01T00:00:00Z"}`,
		`{"name":"a","app":"x","handler":"h","trigger":{"kind":"once","at":"2020-01-01T00:00:00Z"},"enabled":true}`,
		`{"name":"f","app":"x","trigger":{"kind":"manual"},"flow":{"nodes":[{"name":"a","job":1},{"name":"b","job":2,"after":["a"]}]}}`,
		`{"name":"a","app":"x","handler":"glue:go","retries":3,"retry_backoff":"1s","timeout":"1m","route":"sharding_broadcast"}`,
		`{"name":"a","app":"x","handler":"h","trigger":{"kind":"cron","cron":"@every 1s"},"end_at":"2000-01-01T00:00:00Z","enabled":true}`,
	} {
		f.Add([]byte(s))
	}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, b []byte) {
		var j Job
		if json.Unmarshal(b, &j) != nil {
			return
		}
		if err := j.Normalize(); err != nil {
			return
		}
		t0 := j.FirstFire(now)
		for range 5 {
			if t0.IsZero() {
				return
			}
			t1 := j.NextFire(t0)
			if !t1.IsZero() && !t1.After(t0) {
				t.Fatalf("next fire %v is not after %v for %s", t1, t0, b)
			}
			t0 = t1
		}
	})
}
